"""MCP tasks of protocol 2025-11-25 (task-augmented tools/call) with the real `serve`, the stub LLM
and the real third-party server-everything over Streamable HTTP, started by the test so that it
outlives `serve`. Its `simulate-research-query` has `execution.taskSupport: required`, runs four
stages of a second, and with `ambiguous: true` goes `input_required` and asks (an elicitation sent
on the stream of tasks/result):

- the task id (and the HTTP session it lives in) is committed before any wait; `serve` SIGKILLed
  while the tool runs and restarted follows the same task in that session and gets its result:
  the session holds one task, the call's;
- removing the Task cancels the MCP task (tasks/cancel: the server says `cancelled`);
- the ambiguous query's question becomes a question branch; the merged answer reaches the tool,
  whose report carries the chosen interpretation.

The server is asked directly (plain JSON-RPC over HTTP in the task's session) to check what it holds.
"""

from __future__ import annotations

import json
import urllib.request
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
    mcpserver_yaml,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
    wait_for,
)
from tests.e2e.test_approvals import ALICE, git_as
from tests.test_mcp_tasks_2025 import everything_http

pytestmark = pytest.mark.e2e

AGENT = "researcher"
TOOL = "everything__simulate-research-query"


def _setup(repo: AcpRepo, marker: str, url: str, tasks: dict[str, str], *, channel: bool = False) -> None:
    agent = tool_agent_yaml(AGENT, servers=("everything",))
    files = {"mcpservers/everything.yaml": mcpserver_yaml("everything", marker=marker, url=url)}
    if channel:
        files["contactchannels/team.yaml"] = (
            f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: team\nspec:\n  type: git\n"
        )
        agent += "  humanContactChannels:\n    - name: team\n"
    files[f"agents/{AGENT}.yaml"] = agent
    files |= {f"tasks/{name}.yaml": task_yaml(name, message, agent=AGENT) for name, message in tasks.items()}
    repo.commit(files, "Add server-everything, the agent and the tasks")


def _call(repo: AcpRepo, task: str) -> dict[str, Any]:
    calls = toolcalls_of(repo, task)
    return calls[0] if calls else {}


def _status(repo: AcpRepo, task: str) -> dict[str, Any]:
    return dict(_call(repo, task).get("status") or {})


def _committed_task(repo: AcpRepo, task: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: (m := _status(repo, task).get("mcpTask") or {}).get("taskId") and m,
        timeout=60,
        what="the MCP task id committed",
    )
    return found


def _final(repo: AcpRepo, task: str, *, timeout: float = 60) -> str:
    wait_for(lambda: repo.phase(task) == "FinalAnswer", timeout=timeout, what=f"{task} FinalAnswer")
    status = (repo.status("tasks", task) or {}).get("status") or {}
    return str(status["output"])


def _ask_server(url: str, session: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC request in `session` (the server answers as JSON or as one SSE event)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-session-id": session,
            "mcp-protocol-version": "2025-11-25",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    if not text.lstrip().startswith("{"):
        # An SSE stream: the answer is the event with a JSON body (a first one may be empty).
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:") and line[5:].strip())
    answer: dict[str, Any] = json.loads(text)
    assert "result" in answer, answer
    return dict(answer["result"])


def test_serve_killed_while_the_tool_runs_resumes_the_same_task_in_its_session(
    acp_repo: AcpRepo, stub: Stub, marker: str, serve_bg: Callable[..., Background], tmp_path: Path
) -> None:
    stub.rules(
        {"match": "^Research rivers", "when": "first", "toolCalls": [call(TOOL, topic="rivers")]},
        {"when": "tool", "content": "Result: {tool}"},
    )
    with everything_http(tmp_path / "everything.log") as url:
        _setup(acp_repo, marker, url, {"rivers": "Research rivers"})
        first = serve_bg(acp_repo)
        committed = _committed_task(acp_repo, "rivers")
        first.kill()  # SIGKILL while the tool runs (four stages of a second)
        killed = _status(acp_repo, "rivers")
        assert killed["phase"] == "Running"
        assert killed["attempt"] == 1
        assert killed["mcpTask"]["server"] == "everything"
        assert killed["mcpTask"]["status"] == "working"
        session, task_id = committed["session"], committed["taskId"]
        assert session  # the HTTP session the task lives in, committed with its id

        serve_bg(acp_repo)
        output = _final(acp_repo, "rivers")
        done = _status(acp_repo, "rivers")
        assert done["phase"] == "Succeeded", done
        assert done["attempt"] == 1  # never invoked again
        assert done["mcpTask"]["taskId"] == task_id
        assert done["mcpTask"]["status"] == "completed"
        assert done["result"].startswith("# Research Report: rivers\n")
        assert output.startswith("Result: # Research Report: rivers")
        # The tool ran once: its session holds one task, the one the call committed.
        listed = _ask_server(url, session, "tasks/list", {})
        assert [(t["taskId"], t["status"]) for t in listed["tasks"]] == [(task_id, "completed")]


def test_removing_the_task_cancels_the_mcp_task(
    acp_repo: AcpRepo, stub: Stub, marker: str, serve_bg: Callable[..., Background], tmp_path: Path
) -> None:
    stub.rules(
        {
            "match": "^Research tides",
            "when": "first",
            "toolCalls": [call(TOOL, topic="tides", ambiguous=True)],
        }
    )
    with everything_http(tmp_path / "everything.log") as url:
        # The ambiguous query waits for its question (up to the server's 60 s): time to cancel it.
        _setup(acp_repo, marker, url, {"tides": "Research tides"}, channel=True)
        serve_bg(acp_repo)
        committed = _committed_task(acp_repo, "tides")
        wait_for(
            lambda: _status(acp_repo, "tides").get("phase") == "AwaitingHumanInput",
            timeout=60,
            what="the question asked",
        )
        acp_repo.remove("tasks/tides.yaml")
        ended = wait_for(
            lambda: (s := _status(acp_repo, "tides")).get("mcpTask", {}).get("cancelRequestedAt") and s,
            timeout=60,
            what="the cancellation recorded",
        )
        assert acp_repo.phase("tides") == "Cancelled"
        assert ended["phase"] == "Failed"
        assert ended["error"] == "cancelled: Task removed from main"
        assert ended["mcpTask"]["status"] == "cancelled"
        assert ended["mcpTask"]["statusMessage"] == "cancelled by gitops-acp"
        told = _ask_server(url, committed["session"], "tasks/get", {"taskId": committed["taskId"]})
        assert told["status"] == "cancelled"


def test_an_ambiguous_querys_question_is_answered_by_a_merge_and_reaches_the_tool(
    acp_repo: AcpRepo, stub: Stub, marker: str, serve_bg: Callable[..., Background], tmp_path: Path
) -> None:
    repo = acp_repo
    stub.rules(
        {
            "match": "^Research python",
            "when": "first",
            "toolCalls": [call(TOOL, topic="python", ambiguous=True)],
        },
        {"when": "tool", "content": "Result: {tool}"},
    )
    with everything_http(tmp_path / "everything.log") as url:
        _setup(repo, marker, url, {"python": "Research python"}, channel=True)
        serve_bg(repo)
        waiting = wait_for(
            lambda: (s := _status(repo, "python")).get("phase") == "AwaitingHumanInput" and s,
            timeout=60,
            what="the question asked",
        )
        name = _call(repo, "python")["metadata"]["name"]
        branch = f"acp/questions/{name}"
        assert waiting["humanContact"] == {"channel": "team", "branch": branch}
        assert waiting["mcpTask"]["question"] == name
        assert waiting["mcpTask"]["inputRequest"].startswith("elicitation-")
        assert "could have multiple interpretations" in waiting["statusDetail"]
        path = f"responses/{name}.yaml"
        proposed = yaml.safe_load(git(repo.path, "show", f"{branch}:{path}"))
        assert '"python" could have multiple interpretations' in proposed["spec"]["question"]
        assert proposed["spec"]["requestedSchema"]["required"] == ["interpretation"]

        # Answered while serve runs (the server waits 60 s for it): merged into main.
        git_as(repo, ALICE, "checkout", "-q", branch)
        document = yaml.safe_load((repo.path / path).read_text())
        document["spec"]["response"] = "snake"
        (repo.path / path).write_text(yaml.safe_dump(document, sort_keys=False))
        git_as(repo, ALICE, "commit", "-q", "-am", "Answer: snake")
        git_as(repo, ALICE, "checkout", "-q", "main")
        git_as(repo, ALICE, "merge", "-q", "--no-ff", "--no-edit", branch)

        output = _final(repo, "python")
        answered = _status(repo, "python")
        assert answered["phase"] == "Succeeded", answered
        assert answered["result"].startswith("# Research Report: python (snake)\n")
        assert 'After receiving clarification ("snake")' in answered["result"]
        assert output.startswith("Result: # Research Report: python (snake)")
        assert answered["humanContact"]["respondedBy"] == "Alice <alice@example.com>"
        assert answered["mcpTask"]["answeredInputs"] == [waiting["mcpTask"]["inputRequest"]]
        assert answered["attempt"] == 1


def test_a_question_pending_when_serve_is_killed_is_answered_by_the_next_serve(
    acp_repo: AcpRepo, stub: Stub, marker: str, serve_bg: Callable[..., Background], tmp_path: Path
) -> None:
    """The request came on the killed serve's stream; the next serve sends the merged answer as the
    response to it, in the task's session, and the server (still waiting: 60 s) takes it."""
    repo = acp_repo
    stub.rules(
        {
            "match": "^Research python",
            "when": "first",
            "toolCalls": [call(TOOL, topic="python", ambiguous=True)],
        },
        {"when": "tool", "content": "Result: {tool}"},
    )
    with everything_http(tmp_path / "everything.log") as url:
        _setup(repo, marker, url, {"python": "Research python"}, channel=True)
        first = serve_bg(repo)
        wait_for(
            lambda: _status(repo, "python").get("phase") == "AwaitingHumanInput",
            timeout=60,
            what="the question asked",
        )
        first.kill()
        name = _call(repo, "python")["metadata"]["name"]
        branch, path = f"acp/questions/{name}", f"responses/{name}.yaml"
        git_as(repo, ALICE, "checkout", "-q", branch)
        document = yaml.safe_load((repo.path / path).read_text())
        document["spec"]["response"] = "comedy"
        (repo.path / path).write_text(yaml.safe_dump(document, sort_keys=False))
        git_as(repo, ALICE, "commit", "-q", "-am", "Answer: comedy")
        git_as(repo, ALICE, "checkout", "-q", "main")
        git_as(repo, ALICE, "merge", "-q", "--no-ff", "--no-edit", branch)
        serve_bg(repo)

        assert _final(repo, "python").startswith("Result: # Research Report: python (comedy)")
        answered = _status(repo, "python")
        assert answered["phase"] == "Succeeded"
        assert answered["attempt"] == 1
        assert answered["humanContact"]["respondedBy"] == "Alice <alice@example.com>"
