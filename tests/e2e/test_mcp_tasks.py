"""Long-running tools on MCP tasks, and tools that ask (DESIGN §12), with the real `serve`, the stub
LLM and the project's MCP test server over Streamable HTTP, started by the test as its own process
so that it outlives `serve`:

- `long_job` runs as an MCP task and is held until the test creates its release file; `serve` is
  SIGKILLed while it runs and restarted: the same MCP task's result is used (its id was committed
  before the wait) and the tool ran once (the server's counter file holds one start, one end);
- removing the Task from main cancels the MCP task (tasks/cancel: the server records it);
- `ask` asks through the task's `input_required` state: the question becomes a branch
  `acp/questions/<toolcall>`, the answer merged into main (while `serve` is down) goes back to the
  tool from the next `serve`; a task without a contact channel declines it, and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import git
from tests.e2e.conftest import (
    API,
    AcpRepo,
    Background,
    Stub,
    call,
    http_testserver,
    mcpserver_yaml,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
    wait_for,
)
from tests.e2e.test_approvals import ALICE, git_as

pytestmark = pytest.mark.e2e

AGENT = "jobber"
QUESTION = "Which colour?"


def _setup(
    repo: AcpRepo, marker: str, url: str, tasks: dict[str, str], *, extra: dict[str, str] | None = None
) -> None:
    files = {
        "mcpservers/jobs.yaml": mcpserver_yaml("jobs", marker=marker, url=url),
        f"agents/{AGENT}.yaml": tool_agent_yaml(AGENT, servers=("jobs",)),
        **(extra or {}),
    }
    files |= {f"tasks/{name}.yaml": task_yaml(name, message, agent=AGENT) for name, message in tasks.items()}
    repo.commit(files, "Add the jobs server, the agent and the tasks")


def _the_call(repo: AcpRepo, task: str) -> dict[str, Any] | None:
    calls = toolcalls_of(repo, task)
    return calls[0] if calls else None


def _status(repo: AcpRepo, task: str) -> dict[str, Any]:
    found = _the_call(repo, task)
    return dict((found or {}).get("status") or {})


def _lines(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def _final(repo: AcpRepo, task: str, *, timeout: float = 60) -> str:
    wait_for(lambda: repo.phase(task) == "FinalAnswer", timeout=timeout, what=f"{task} FinalAnswer")
    status = (repo.status("tasks", task) or {}).get("status") or {}
    return str(status["output"])


def test_serve_killed_while_the_tool_runs_resumes_the_same_mcp_task(
    acp_repo: AcpRepo,
    stub: Stub,
    marker: str,
    serve_bg: Callable[..., Background],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = tmp_path / "runs.txt"
    monkeypatch.setenv("ACP_TEST_COUNTER_FILE", str(counter))  # the HTTP server's environment
    stub.rules(
        {"match": "^Run the long job", "when": "first", "toolCalls": [call("jobs__long_job", label="L1")]},
        {"when": "tool", "content": "Result: {tool}"},
    )
    with http_testserver(marker) as server:
        _setup(acp_repo, marker, server.url, {"long": "Run the long job"})
        first = serve_bg(acp_repo)
        task_id = wait_for(
            lambda: (_status(acp_repo, "long").get("mcpTask") or {}).get("taskId"),
            timeout=60,
            what="the MCP task id committed",
        )
        wait_for(lambda: _lines(counter) == ["start L1"], timeout=30, what="the job started")
        first.kill()  # SIGKILL, mid-task
        killed = _status(acp_repo, "long")
        assert killed["phase"] == "Running"
        assert killed["attempt"] == 1
        assert killed["mcpTask"]["server"] == "jobs"
        assert killed["mcpTask"]["taskId"] == task_id  # committed before the wait the kill cut
        assert acp_repo.phase("long") == "ToolCallsPending"

        serve_bg(acp_repo)
        wait_for(
            lambda: "MCP task" in str(_status(acp_repo, "long").get("statusDetail")) and counter.exists(),
            timeout=60,
            what="the restarted serve following the task",
        )
        (tmp_path / "runs.txt.release").touch()  # the job may finish now
        assert _final(acp_repo, "long") == "Result: job L1 done"
        done = _status(acp_repo, "long")
        assert done["phase"] == "Succeeded"
        assert done["result"] == "job L1 done"
        assert done["attempt"] == 1  # never invoked again
        assert done["mcpTask"]["taskId"] == task_id  # the same MCP task
        assert done["mcpTask"]["status"] == "completed"
        assert _lines(counter) == ["start L1", "end L1"]  # the tool ran once


def test_a_stdio_servers_task_dies_with_serve_and_the_call_fails_visibly(
    acp_repo: AcpRepo,
    stub: Stub,
    marker: str,
    serve_bg: Callable[..., Background],
    tmp_path: Path,
) -> None:
    """A stdio server is serve's child: killed with it, its tasks are gone; not run again."""
    counter = tmp_path / "runs.txt"
    stub.rules(
        {"match": "^Run a local job", "when": "first", "toolCalls": [call("local__long_job", label="S1")]},
        {"when": "tool", "content": "Result: {tool}"},
    )
    acp_repo.commit(
        {
            "mcpservers/local.yaml": mcpserver_yaml("local", marker=marker, counter=counter),
            "agents/local-jobber.yaml": tool_agent_yaml("local-jobber", servers=("local",)),
            "tasks/local.yaml": task_yaml("local", "Run a local job", agent="local-jobber"),
        },
        "Add a stdio server's job",
    )
    first = serve_bg(acp_repo)
    task_id = wait_for(
        lambda: (_status(acp_repo, "local").get("mcpTask") or {}).get("taskId"),
        timeout=60,
        what="the MCP task id committed",
    )
    first.kill()
    serve_bg(acp_repo)
    output = _final(acp_repo, "local")
    failed = _status(acp_repo, "local")
    assert failed["phase"] == "Failed"
    assert failed["error"].startswith(f"interrupted: outcome unknown, not re-run (MCP task {task_id}: ")
    assert f"unknown task {task_id}" in failed["error"]
    assert failed["attempt"] == 1
    assert failed["error"] in output
    # Started once; it ended with the server process (whose stdin closed with serve), never again.
    assert _lines(counter) == ["start S1", "cancelled S1"]


def test_cancelling_the_task_cancels_the_mcp_task(
    acp_repo: AcpRepo,
    stub: Stub,
    marker: str,
    serve_bg: Callable[..., Background],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = tmp_path / "runs.txt"
    monkeypatch.setenv("ACP_TEST_COUNTER_FILE", str(counter))
    stub.rules({"match": "^Start a job", "when": "first", "toolCalls": [call("jobs__long_job", label="C1")]})
    with http_testserver(marker) as server:
        _setup(acp_repo, marker, server.url, {"doomed": "Start a job"})
        serve_bg(acp_repo)
        wait_for(
            lambda: (_status(acp_repo, "doomed").get("mcpTask") or {}).get("taskId"),
            timeout=60,
            what="the MCP task id committed",
        )
        acp_repo.remove("tasks/doomed.yaml")
        wait_for(lambda: "cancelled C1" in _lines(counter), timeout=60, what="the MCP task cancelled")
        assert acp_repo.phase("doomed") == "Cancelled"
        ended = wait_for(
            lambda: (s := _status(acp_repo, "doomed")).get("mcpTask", {}).get("cancelRequestedAt") and s,
            timeout=30,
            what="the cancellation recorded",
        )
        assert ended["phase"] == "Failed"
        assert ended["error"] == "cancelled: Task removed from main"
        assert ended["mcpTask"]["status"] == "cancelled"
        assert _lines(counter) == ["start C1", "cancelled C1"]


def test_a_tool_that_asks_gets_the_answer_merged_on_main_or_is_declined(
    acp_repo: AcpRepo,
    stub: Stub,
    marker: str,
    serve_bg: Callable[..., Background],
) -> None:
    repo = acp_repo
    stub.rules(
        {
            "match": "^Ask the tool",
            "when": "first",
            "toolCalls": [call("jobs__ask", question="Which colour?")],
        },
        {"when": "tool", "content": "Result: {tool}"},
    )
    channel = f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: team\nspec:\n  type: git\n"
    asker = tool_agent_yaml("asker", servers=("jobs",)) + "  humanContactChannels:\n    - name: team\n"
    with http_testserver(marker) as server:
        _setup(
            repo,
            marker,
            server.url,
            {"nobody": "Ask the tool, nobody to answer"},
            extra={
                "contactchannels/team.yaml": channel,
                "agents/asker.yaml": asker,
                "tasks/colour.yaml": task_yaml("colour", "Ask the tool for a colour", agent="asker"),
            },
        )
        first = serve_bg(repo)
        # No contact channel: declined at once, and the status says why.
        assert _final(repo, "nobody") == "Result: no answer (decline)"
        declined = _status(repo, "nobody")
        assert "has no contact channel" in declined["mcpTask"]["declined"]

        waiting = wait_for(
            lambda: (s := _status(repo, "colour")).get("phase") == "AwaitingHumanInput" and s,
            timeout=60,
            what="the question asked",
        )
        name = (_the_call(repo, "colour") or {})["metadata"]["name"]
        branch = f"acp/questions/{name}"
        assert waiting["humanContact"] == {"channel": "team", "branch": branch}
        assert waiting["mcpTask"]["question"] == name
        assert "Which colour?" in waiting["statusDetail"]
        path = f"responses/{name}.yaml"
        proposed = yaml.safe_load(git(repo.path, "show", f"{branch}:{path}"))
        assert proposed["kind"] == "HumanResponse"
        assert proposed["spec"]["question"] == "Which colour?"
        assert proposed["spec"]["requestedSchema"]["properties"] == {"answer": {"type": "string"}}

        # serve stops while the question waits; the answer arrives meanwhile; the next serve replies.
        first.kill()
        git_as(repo, ALICE, "checkout", "-q", branch)
        document = yaml.safe_load((repo.path / path).read_text())
        document["spec"]["response"] = "green"
        (repo.path / path).write_text(yaml.safe_dump(document, sort_keys=False))
        git_as(repo, ALICE, "commit", "-q", "-am", "Answer: green")
        git_as(repo, ALICE, "checkout", "-q", "main")
        git_as(repo, ALICE, "merge", "-q", "--no-ff", "--no-edit", branch)
        serve_bg(repo)

        assert _final(repo, "colour") == "Result: the answer was: green"
        answered = _status(repo, "colour")
        assert answered["phase"] == "Succeeded"
        assert answered["humanContact"]["respondedBy"] == "Alice <alice@example.com>"
        assert answered["mcpTask"]["answeredInputs"] == ["input-1"]
        assert answered["attempt"] == 1
