"""Tasks calling MCP tools (DESIGN §2, §4), all in one `serve --once` run over the real test server.

echo ......................... one call, its result is the answer; intent (Running) committed first
slow, slow ................... two calls of one answer run at once; results in the LLM's order
fail ......................... Failed with the tool's text, which the model reads; the task still ends
echo under maxTurns 1 ........ Cancelled by the limit, the tool's result still in the context window
echo, pid over HTTP .......... Streamable HTTP to a server the test started itself
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import git
from tests.e2e.conftest import (
    AcpRepo,
    Stub,
    call,
    cli,
    http_testserver,
    mcpserver_yaml,
    module_repo,
    moves_of,
    no_servers_left,
    serve_args,
    status_files,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
)

pytestmark = pytest.mark.e2e

ECHO_TEXT = "echoed through MCP e2e-5b1f"
FAIL_TEXT = "e2e-distinctive tool failure 9c2d"
MESSAGES = {
    "echo": "Echo through the tool, please.",
    "parallel": "Two slow calls at once.",
    "failing": "Call the failing tool.",
    "limited": "One turn only, with a tool.",
    "remote": "Echo over Streamable HTTP.",
}
AGENTS = {"limited": "one-turn-tools", "remote": "remote-agent"}


@dataclass
class Run:
    repo: AcpRepo
    serve: subprocess.CompletedProcess[str]
    chats: list[dict[str, Any]]
    http_pid: int

    def chats_of(self, task: str) -> list[dict[str, Any]]:
        return [c for c in self.chats if _first_user(c) == MESSAGES[task]]

    def status(self, task: str) -> dict[str, Any]:
        document = self.repo.status("tasks", task)
        assert document is not None, f"Task {task} has no status file"
        status: dict[str, Any] = document["status"]
        return status

    def toolcalls(self, task: str) -> list[dict[str, Any]]:
        return toolcalls_of(self.repo, task)


def _first_user(chat: dict[str, Any]) -> str | None:
    return next((m.get("content") for m in chat["body"]["messages"] if m.get("role") == "user"), None)


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("tools")
    with (
        no_servers_left() as marker,
        http_testserver(marker) as http,
        module_repo(stub_process, base) as (repo, _),
    ):
        stub_process.rules(
            {"match": "^Echo through", "when": "first", "toolCalls": [call("tools__echo", text=ECHO_TEXT)]},
            {
                "match": "^Two slow",
                "when": "first",
                "toolCalls": [
                    call("tools__slow", seconds=1, text="first-slow"),
                    call("tools__slow", seconds=0.6, text="second-slow"),
                ],
            },
            {
                "match": "^Call the failing",
                "when": "first",
                "toolCalls": [call("tools__fail", message=FAIL_TEXT)],
            },
            {
                "match": "^One turn only",
                "when": "first",
                "toolCalls": [call("tools__echo", text="limited-echo")],
            },
            {
                "match": "^Echo over",
                "when": "first",
                "toolCalls": [call("remote__echo", text="over-http"), call("remote__pid")],
            },
            {"when": "tool", "content": "{tool}"},
        )
        files = {
            "mcpservers/tools.yaml": mcpserver_yaml("tools", marker=marker, counter=base / "counter"),
            "mcpservers/remote.yaml": mcpserver_yaml("remote", marker=marker, url=http.url),
            "agents/toolsmith.yaml": tool_agent_yaml("toolsmith", servers=("tools",)),
            "agents/one-turn-tools.yaml": tool_agent_yaml("one-turn-tools", servers=("tools",), max_turns=1),
            "agents/remote-agent.yaml": tool_agent_yaml("remote-agent", servers=("remote",)),
        }
        for name, message in MESSAGES.items():
            files[f"tasks/{name}.yaml"] = task_yaml(name, message, agent=AGENTS.get(name, "toolsmith"))
        repo.commit(files, "Add MCP servers, tool agents and tasks")
        serve = cli(*serve_args(repo, "--log-dir", str(repo.logs), once=True), timeout=120)
        yield Run(repo, serve, stub_process.chats(), http.proc.pid)


def test_serve_once_exits_zero(run: Run) -> None:
    assert run.serve.returncode == 0, run.serve.stderr
    assert "Traceback" not in run.serve.stderr


# -- one call ---------------------------------------------------------------------------------------


def test_a_tool_result_becomes_the_final_answer(run: Run) -> None:
    status = run.status("echo")
    assert status["phase"] == "FinalAnswer", status
    assert status["output"] == ECHO_TEXT
    assert status["turns"] == 2
    window = status["contextWindow"]
    assert [m["role"] for m in window] == ["system", "user", "assistant", "tool", "assistant"]
    (asked,) = window[2]["toolCalls"]
    assert asked["function"]["name"] == "tools__echo"
    assert window[3] == {"role": "tool", "toolCallId": asked["id"], "content": ECHO_TEXT}

    # The model's second request carried the tool's answer under the id it asked with.
    first, second = run.chats_of("echo")
    assert second["body"]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": asked["id"],
        "content": ECHO_TEXT,
    }
    assert second["body"]["messages"][-2]["tool_calls"][0]["id"] == asked["id"]
    assert first["body"]["messages"][-1]["role"] == "user"


def test_the_toolcall_status_file(run: Run) -> None:
    (document,) = run.toolcalls("echo")
    request = run.status("echo")["toolCallRequestId"]
    name = f"echo-{request}-tc-01"
    assert document["metadata"]["name"] == name
    assert document["metadata"]["labels"] == {
        "acp.gitops.dev/task": "echo",
        "acp.gitops.dev/toolcallrequest": request,
    }
    spec = document["spec"]
    assert spec["taskRef"] == {"name": "echo"}
    assert spec["toolRef"] == {"name": "tools__echo"}
    assert spec["toolType"] == "MCP"
    assert json.loads(spec["arguments"]) == {"text": ECHO_TEXT}
    assert spec["toolCallId"] == run.status("echo")["contextWindow"][2]["toolCalls"][0]["id"]
    status = document["status"]
    assert status["phase"] == "Succeeded"
    assert status["attempt"] == 1
    assert status["result"] == ECHO_TEXT
    assert not status.get("error")
    assert status["startTime"] <= status["completionTime"]


def test_intent_is_committed_before_the_effect(run: Run) -> None:
    (document,) = run.toolcalls("echo")
    name = document["metadata"]["name"]
    moves = moves_of(run.repo, "ToolCall", "toolcalls", name)
    assert [(old, new) for old, new, _ in moves] == [
        ("-", "Pending"),
        ("Pending", "Running"),
        ("Running", "Succeeded"),
    ]
    (_, _, created), (_, _, running), (_, _, done) = moves
    assert len({created.sha, running.sha, done.sha}) == 3  # three commits, in this order
    ancestry = git(run.repo.path, "rev-list", done.sha).splitlines()
    assert running.sha in ancestry
    assert created.sha in ancestry
    assert ancestry.index(created.sha) > ancestry.index(running.sha)

    at_running = run.repo.status("toolcalls", name, rev=running.sha)
    assert at_running is not None
    assert at_running["status"]["phase"] == "Running"
    assert at_running["status"]["attempt"] == 1
    assert at_running["status"]["startTime"]
    assert not at_running["status"].get("result")
    assert not at_running["status"].get("completionTime")

    # The ToolCall was born in the commit that recorded the answer asking for it (one commit).
    (asked,) = [c for _, new, c in run.repo.transitions("Task", "echo") if new == "ToolCallsPending"]
    assert asked.sha == created.sha
    assert ("ToolCall", name, "-", "Pending") in asked.moves()


def test_get_toolcalls_and_mcpservers(run: Run) -> None:
    (document,) = run.toolcalls("echo")
    name = document["metadata"]["name"]
    toolcalls = cli("--repo", str(run.repo.path), "get", "toolcalls")
    assert toolcalls.returncode == 0, toolcalls.stderr
    header, *rows = toolcalls.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "TASK", "TOOL"]
    assert [name, "Succeeded", "echo", "tools__echo"] in [row.split() for row in rows]

    servers = cli("--repo", str(run.repo.path), "get", "mcpservers")
    assert servers.returncode == 0, servers.stderr
    header, *rows = servers.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "CONNECTED"]
    table = {row.split()[0]: row.split()[1:] for row in rows}
    assert table["tools"][0] == "true"
    assert table["remote"][0] == "true"


def test_the_mcpserver_status_lists_tools_with_schemas_and_annotations(run: Run) -> None:
    document = run.repo.status("mcpservers", "tools")
    assert document is not None
    status = document["status"]
    assert status["connected"] is True
    tools = {tool["name"]: tool for tool in status["tools"]}
    assert {"echo", "add", "count", "count_readonly", "fail", "slow", "crash", "complex", "pid"} <= set(tools)
    for tool in tools.values():
        assert tool["inputSchema"]["type"] == "object", tool
    assert tools["echo"]["inputSchema"]["required"] == ["text"]
    assert tools["echo"]["annotations"]["readOnlyHint"] is True
    assert tools["count"]["annotations"]["idempotentHint"] is False
    assert tools["count_readonly"]["annotations"]["idempotentHint"] is True
    assert tools["echo"]["description"] == "Return the text unchanged."


def test_the_llm_sees_the_tools_with_their_schemas_intact(run: Run) -> None:
    recorded = run.repo.status("mcpservers", "tools")
    assert recorded is not None
    schemas = {tool["name"]: tool["inputSchema"] for tool in recorded["status"]["tools"]}
    first = run.chats_of("echo")[0]["body"]
    offered = {tool["function"]["name"]: tool for tool in first["tools"]}
    assert set(offered) == {f"tools__{name}" for name in schemas}  # only its own server's tools
    for name, schema in schemas.items():
        assert offered[f"tools__{name}"]["type"] == "function"
        assert offered[f"tools__{name}"]["function"]["parameters"] == schema, name

    complex_ = offered["tools__complex"]["function"]["parameters"]
    assert complex_["properties"]["items"]["type"] == "array"
    assert complex_["properties"]["items"]["items"] == {"type": "string"}
    assert {"type": "string"} in complex_["properties"]["choice"]["anyOf"]
    assert {"type": "integer"} in complex_["properties"]["choice"]["anyOf"]
    nested = complex_["properties"]["nested"]
    assert nested["$ref"].startswith("#/$defs/")
    defs = complex_["$defs"]
    inner = defs[nested["$ref"].removeprefix("#/$defs/")]["properties"]["a"]["$ref"].removeprefix("#/$defs/")
    assert defs[inner]["properties"]["b"] == {"items": {"type": "integer"}, "title": "B", "type": "array"}
    assert set(complex_["required"]) == {"items", "nested"}


# -- two calls at once ------------------------------------------------------------------------------


def test_parallel_calls_run_concurrently_and_return_in_order(run: Run) -> None:
    status = run.status("parallel")
    assert status["phase"] == "FinalAnswer", status
    window = status["contextWindow"]
    asked = [c["id"] for c in window[2]["toolCalls"]]
    assert len(asked) == 2
    assert window[3:5] == [
        {"role": "tool", "toolCallId": asked[0], "content": "first-slow"},
        {"role": "tool", "toolCallId": asked[1], "content": "second-slow"},
    ]
    calls = run.toolcalls("parallel")
    assert [c["spec"]["toolCallId"] for c in calls] == asked
    assert [c["status"]["phase"] for c in calls] == ["Succeeded", "Succeeded"]
    # They sleep 1 s and 0.6 s: run one after the other, their [start, completion] could not overlap.
    # (The second one ends first: the order of the results is the LLM's, not the order they ended.)
    (a, b) = (c["status"] for c in calls)
    assert a["startTime"] < b["completionTime"], (a, b)
    assert b["startTime"] < a["completionTime"], (a, b)
    # Both results were appended in one checkpoint, after both calls ended.
    (back,) = [c for old, _, c in run.repo.transitions("Task", "parallel") if old == "ToolCallsPending"]
    ancestry = git(run.repo.path, "rev-list", back.sha).splitlines()
    for document in calls:
        (_, _, done), *_ = [
            m
            for m in moves_of(run.repo, "ToolCall", "toolcalls", document["metadata"]["name"])
            if m[1] == "Succeeded"
        ]
        assert done.sha in ancestry


# -- a failing tool ---------------------------------------------------------------------------------


def test_a_failing_tool_is_failed_and_the_model_reads_why(run: Run) -> None:
    (document,) = run.toolcalls("failing")
    assert document["status"]["phase"] == "Failed"
    assert FAIL_TEXT in document["status"]["error"]
    assert not document["status"].get("result")
    status = run.status("failing")
    assert status["phase"] == "FinalAnswer"
    tool_message = status["contextWindow"][3]
    assert tool_message["role"] == "tool"
    assert tool_message["toolCallId"] == document["spec"]["toolCallId"]
    assert FAIL_TEXT in tool_message["content"]
    sent = run.chats_of("failing")[-1]["body"]["messages"][-1]
    assert sent["role"] == "tool"
    assert FAIL_TEXT in sent["content"]


# -- limits -----------------------------------------------------------------------------------------


def test_max_turns_cancels_after_recording_the_tool_result(run: Run) -> None:
    status = run.status("limited")
    assert status["phase"] == "Cancelled", status
    assert "maxTurns" in status["error"]
    assert status["turns"] == 1
    assert len(run.chats_of("limited")) == 1
    (document,) = run.toolcalls("limited")
    assert document["status"]["phase"] == "Succeeded"
    moves = moves_of(run.repo, "ToolCall", "toolcalls", document["metadata"]["name"])
    assert [new for _, new, _ in moves] == ["Pending", "Running", "Succeeded"]
    window = status["contextWindow"]
    assert window[-1] == {
        "role": "tool",
        "toolCallId": document["spec"]["toolCallId"],
        "content": "limited-echo",
    }


# -- Streamable HTTP ----------------------------------------------------------------------------------


def test_a_tool_over_streamable_http(run: Run) -> None:
    status = run.status("remote")
    assert status["phase"] == "FinalAnswer", status
    calls = run.toolcalls("remote")
    assert [c["spec"]["toolRef"]["name"] for c in calls] == ["remote__echo", "remote__pid"]
    assert [c["status"]["phase"] for c in calls] == ["Succeeded", "Succeeded"]
    assert calls[0]["status"]["result"] == "over-http"
    # The answer came from the server this test started, not from some process serve spawned.
    assert calls[1]["status"]["result"] == str(run.http_pid)
    assert status["output"] == str(run.http_pid)
    document = run.repo.status("mcpservers", "remote")
    assert document is not None
    assert document["status"]["connected"] is True
    assert "echo" in {tool["name"] for tool in document["status"]["tools"]}


# -- every call -------------------------------------------------------------------------------------

TERMINAL = {"Succeeded", "Failed", "ToolCallRejected"}


def test_no_toolcall_leaves_a_terminal_phase(run: Run) -> None:
    left = []
    for (plural, name), _ in sorted(status_files(run.repo).items()):
        if plural != "toolcalls":
            continue
        phases = [new for _, new, _ in moves_of(run.repo, "ToolCall", "toolcalls", name)]
        ended = [i for i, phase in enumerate(phases) if phase in TERMINAL]
        if ended and ended[0] != len(phases) - 1:
            left.append(f"{name}: {' -> '.join(phases)}")
    assert not left, left
