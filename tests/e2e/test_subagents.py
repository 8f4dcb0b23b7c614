"""Sub-agents (DESIGN §4): `delegate_to_agent__X({message})` runs a child task whose answer is the result.

boss -> worker -> tools__echo ..... a chain of depth 2 in one `serve --once` run; the child task
                                    `delegate-<toolcall>` exists only on the status branch
a <-> b ............................ a cycle: both agents in Error naming it, their task never runs
boss removed mid-delegation ........ the cancel cascades: its call Failed, the child task Cancelled
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import git
from tests.e2e.conftest import (
    AcpRepo,
    Background,
    Stub,
    call,
    cli,
    mcpserver_yaml,
    module_repo,
    moves_of,
    no_servers_left,
    serve_args,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
    wait_for,
)

pytestmark = pytest.mark.e2e

BOSS = "Boss: ask the worker."
WORKER = "Worker: echo chained-e2e"
ECHOED = "from the worker e2e-71"
CYCLE = "Cycle: this never runs."
PARENT_LABEL = "acp.gitops.dev/parent-toolcall"


def _agents(marker: str, counter: Any) -> dict[str, str]:
    return {
        "mcpservers/tools.yaml": mcpserver_yaml("tools", marker=marker, counter=counter),
        "agents/boss.yaml": tool_agent_yaml("boss", sub_agents=("worker",)),
        "agents/worker.yaml": tool_agent_yaml(
            "worker", servers=("tools",), description="Does things with the test tools."
        ),
    }


def _rules(worker_call: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "match": "^Boss:",
            "when": "first",
            "toolCalls": [call("delegate_to_agent__worker", message=WORKER)],
        },
        {"match": "^Worker:", "when": "first", "toolCalls": [worker_call]},
        {"match": "^Worker:", "when": "tool", "content": "worker says {tool}"},
        {"match": "^Boss:", "when": "tool", "content": "boss heard: {tool}"},
    ]


@dataclass
class Run:
    repo: AcpRepo
    serve: subprocess.CompletedProcess[str]
    chats: list[dict[str, Any]]

    def status(self, task: str) -> dict[str, Any]:
        document = self.repo.status("tasks", task)
        assert document is not None, f"Task {task} has no status file"
        status: dict[str, Any] = document["status"]
        return status

    def chats_of(self, first_user: str) -> list[dict[str, Any]]:
        return [c for c in self.chats if _first_user(c) == first_user]


def _first_user(chat: dict[str, Any]) -> str | None:
    return next((m.get("content") for m in chat["body"]["messages"] if m.get("role") == "user"), None)


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("subagents")
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, _):
        stub_process.rules(*_rules(call("tools__echo", text=ECHOED)))
        files = _agents(marker, base / "counter")
        files["agents/a.yaml"] = tool_agent_yaml("a", sub_agents=("b",))
        files["agents/b.yaml"] = tool_agent_yaml("b", sub_agents=("a",))
        files["tasks/chain.yaml"] = task_yaml("chain", BOSS, agent="boss")
        files["tasks/loop.yaml"] = task_yaml("loop", CYCLE, agent="a")
        repo.commit(files, "Add agents with sub-agents, and their tasks")
        serve = cli(*serve_args(repo, "--log-dir", str(repo.logs), once=True), timeout=120)
        yield Run(repo, serve, stub_process.chats())


def test_serve_once_exits_zero(run: Run) -> None:
    assert run.serve.returncode == 0, run.serve.stderr
    assert "Traceback" not in run.serve.stderr


# -- a chain of depth 2 -----------------------------------------------------------------------------


def _delegation(run: Run) -> tuple[dict[str, Any], str]:
    (document,) = toolcalls_of(run.repo, "chain")
    return document, f"delegate-{document['metadata']['name']}"


def test_the_boss_gets_the_workers_answer(run: Run) -> None:
    status = run.status("chain")
    assert status["phase"] == "FinalAnswer", status
    assert status["output"] == f"boss heard: worker says {ECHOED}"
    document, _ = _delegation(run)
    assert document["spec"]["toolRef"] == {"name": "delegate_to_agent__worker"}
    assert document["spec"]["toolType"] == "DelegateToAgent"
    assert json.loads(document["spec"]["arguments"]) == {"message": WORKER}
    assert document["status"]["phase"] == "Succeeded"
    assert document["status"]["result"] == f"worker says {ECHOED}"
    window = status["contextWindow"]
    assert window[3] == {
        "role": "tool",
        "toolCallId": document["spec"]["toolCallId"],
        "content": f"worker says {ECHOED}",
    }
    phases = [new for _, new, _ in moves_of(run.repo, "ToolCall", "toolcalls", document["metadata"]["name"])]
    assert phases == ["Pending", "AwaitingSubAgent", "Succeeded"]


def test_the_child_task_lives_on_the_status_branch_only(run: Run) -> None:
    document, child = _delegation(run)
    toolcall = document["metadata"]["name"]
    task = run.repo.status("tasks", child)
    assert task is not None, f"no status/tasks/{child}.yaml"
    assert task["metadata"]["labels"][PARENT_LABEL] == toolcall
    assert task["spec"]["agentRef"] == {"name": "worker"}
    assert task["spec"]["userMessage"] == WORKER
    assert task["status"]["phase"] == "FinalAnswer"
    assert task["status"]["output"] == f"worker says {ECHOED}"
    assert child not in git(run.repo.path, "ls-tree", "-r", "--name-only", "main")
    grep = subprocess.run(["git", "grep", "-q", child, "main"], cwd=run.repo.path)
    assert grep.returncode == 1, f"{child} is mentioned on main"

    # Born in the commit that moved the boss's call to AwaitingSubAgent: a crash can't split them.
    (waiting,) = [
        c for _, new, c in moves_of(run.repo, "ToolCall", "toolcalls", toolcall) if new == "AwaitingSubAgent"
    ]
    created = [(k, n, old) for k, n, old, _ in waiting.moves() if (k, n) == ("Task", child)]
    assert created == [("Task", child, "-")], waiting.message


def test_the_worker_called_its_tool(run: Run) -> None:
    _, child = _delegation(run)
    (document,) = toolcalls_of(run.repo, child)
    assert document["spec"]["toolRef"] == {"name": "tools__echo"}
    assert document["status"]["phase"] == "Succeeded"
    assert document["status"]["result"] == ECHOED
    (request,) = run.chats_of(WORKER)[:1]
    offered = {tool["function"]["name"] for tool in request["body"]["tools"]}
    assert "tools__echo" in offered
    assert not any(name.startswith("delegate_to_agent__") for name in offered)


def test_the_boss_is_offered_the_worker_not_its_tools(run: Run) -> None:
    first = run.chats_of(BOSS)[0]["body"]
    (tool,) = first["tools"]
    assert tool["function"]["name"] == "delegate_to_agent__worker"
    assert tool["function"]["description"] == "Does things with the test tools."
    assert tool["function"]["parameters"]["required"] == ["message"]


def test_get_tasks_shows_the_child(run: Run) -> None:
    _, child = _delegation(run)
    result = cli("--repo", str(run.repo.path), "get", "tasks")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert child in rows, result.stdout
    assert rows[child][1] == "worker"
    assert "FinalAnswer" in rows[child]
    assert "FinalAnswer" in rows["chain"]


# -- a cycle ----------------------------------------------------------------------------------------


def test_a_delegation_cycle_is_an_agent_error(run: Run) -> None:
    result = cli("--repo", str(run.repo.path), "get", "agents", "-o", "wide")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert rows["a"].split()[1:3] == ["false", "Error"], rows["a"]
    assert "sub-agent cycle: a -> b -> a" in rows["a"]
    assert rows["b"].split()[1:3] == ["false", "Error"], rows["b"]
    assert "sub-agent cycle: b -> a -> b" in rows["b"]
    assert rows["boss"].split()[1:3] == ["true", "Ready"]


def test_a_task_on_a_cyclic_agent_does_not_run(run: Run) -> None:
    status = run.status("loop")
    assert status["phase"] == "Pending"
    assert "sub-agent cycle: a -> b -> a" in status["statusDetail"]
    assert run.chats_of(CYCLE) == []
    assert toolcalls_of(run.repo, "loop") == []


# -- cancelling the parent --------------------------------------------------------------------------

SLOW = 3.0  # long enough for the removal to be noticed first, even on a loaded machine


def test_removing_the_parent_cancels_the_child(
    acp_repo: AcpRepo, stub: Stub, marker: str, serve_bg: Callable[..., Background]
) -> None:
    stub.rules(*_rules(call("tools__slow", seconds=SLOW, text="too late")))
    files = _agents(marker, acp_repo.logs / "counter")
    files["tasks/doomed.yaml"] = task_yaml("doomed", BOSS, agent="boss")
    acp_repo.commit(files, "Add the agents and a task that delegates")
    background = serve_bg(acp_repo, "--log-dir", str(acp_repo.logs))

    def slow_call_running() -> tuple[str, str, dict[str, Any]] | None:
        delegated = toolcalls_of(acp_repo, "doomed")
        if not delegated:
            return None
        child = f"delegate-{delegated[0]['metadata']['name']}"
        calls = toolcalls_of(acp_repo, child)
        if calls and calls[0]["status"]["phase"] == "Running":
            return delegated[0]["metadata"]["name"], child, calls[0]
        return None

    delegate, child, slow = wait_for(slow_call_running, timeout=60, what="the worker's slow call to run")
    running_at = time.monotonic()
    acp_repo.remove("tasks/doomed.yaml")
    wait_for(lambda: acp_repo.phase("doomed") == "Cancelled", timeout=30, what="the boss to be Cancelled")
    wait_for(lambda: acp_repo.phase(child) == "Cancelled", timeout=30, what="the child to be Cancelled")

    boss = acp_repo.status("tasks", "doomed")
    assert boss is not None
    assert "removed from main" in boss["status"]["error"]
    delegated = acp_repo.status("toolcalls", delegate)
    assert delegated is not None
    assert delegated["status"]["phase"] == "Failed"
    assert "cancelled" in delegated["status"]["error"]
    task = acp_repo.status("tasks", child)
    assert task is not None
    assert "parent task doomed cancelled" in task["status"]["error"]
    assert task["status"]["completionTime"]
    slow_name = slow["metadata"]["name"]
    cancelled = acp_repo.status("toolcalls", slow_name)
    assert cancelled is not None
    assert cancelled["status"]["phase"] == "Failed"
    assert "cancelled" in cancelled["status"]["error"]

    # The slow call, still running in serve when it was cancelled, must not come back to life when
    # the tool answers: a terminal phase is final. Watch until well after it would have answered.
    def moved_after_failed() -> list[str]:
        phases = [new for _, new, _ in moves_of(acp_repo, "ToolCall", "toolcalls", slow_name)]
        return phases[phases.index("Failed") + 1 :]

    while time.monotonic() < running_at + SLOW + 2.0 and not moved_after_failed():
        time.sleep(0.1)
    assert moved_after_failed() == [], f"{slow_name} left Failed"
    for name in (delegate,):
        phases = [new for _, new, _ in moves_of(acp_repo, "ToolCall", "toolcalls", name)]
        assert phases[-1] == "Failed", phases
    assert acp_repo.phase(child) == "Cancelled"
    assert acp_repo.phase("doomed") == "Cancelled"
    assert not stub.chats(WORKER)[1:], "the cancelled worker asked its LLM again"
    assert len(stub.chats(BOSS)) == 1, "the cancelled boss asked its LLM again"
    assert background.proc.poll() is None
