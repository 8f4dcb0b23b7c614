"""MCP tasks of protocol 2025-11-25 (task-augmented tools/call) in the MCP layer, against the real
third-party server-everything over Streamable HTTP: a `taskSupport: required` tool is called as a
task (a handle, with the HTTP session it lives in), followed with tasks/get to its result
(tasks/result), from a second client too (a restarted serve: the task lives in the first one's
session), asks through tasks/result (an elicitation answered with `answer_task`), and is cancelled
with tasks/cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitops_acp.errors import MCPRefusedError
from gitops_acp.mcp import MCPManager, ServerConfig, TaskState
from gitops_acp.mcp.tasks2025 import late_reply

CONNECT = 60.0
CALL = 30.0
EVERYTHING_ENV = "ACP_SERVER_EVERYTHING"
RESEARCH = "simulate-research-query"


def everything_command() -> str:
    command = os.environ.get(EVERYTHING_ENV)
    if not command:
        pytest.fail(f"{EVERYTHING_ENV} is not set (see tests/test_mcp.py: .ci/run installs the server)")
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def everything_http(log: Path) -> Iterator[str]:
    """server-everything over Streamable HTTP on 127.0.0.1 (a free port); yields its URL."""
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    with log.open("w") as out:
        proc = subprocess.Popen([everything_command(), "streamableHttp"], stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + CONNECT
        while "listening on port" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


async def connected(url: str) -> MCPManager:
    manager = MCPManager(connect_timeout=CONNECT)
    manager.ensure(ServerConfig(name="everything", transport="http", url=url))
    assert await manager.wait_connected("everything", CONNECT), manager.state("everything")
    state = manager.state("everything")
    assert state is not None
    assert state.protocol_version == "2025-11-25"
    return manager


async def until(manager: MCPManager, task: TaskState, *statuses: str, asks: bool = False) -> TaskState:
    """Poll the task until its status is one of `statuses` (and, with `asks`, it has a request)."""
    deadline = time.monotonic() + CALL
    while True:
        current = await manager.get_task("everything", task.task_id, timeout=CALL, session=task.session)
        if current.status in statuses and (current.input_requests or not asks):
            return current
        assert time.monotonic() < deadline, f"task still {current}, waiting for {statuses}"
        await asyncio.sleep(0.1)


def test_a_required_task_tool_runs_as_a_task_and_is_followed_from_a_new_client(tmp_path: Path) -> None:
    async def go(url: str) -> None:
        first = await connected(url)
        try:
            handle = await first.call_tool("everything", RESEARCH, {"topic": "rivers"}, timeout=CALL)
            assert handle.task is not None, handle
            assert handle.text == ""
            assert not handle.is_error
            assert handle.task.status == "working"
            assert handle.task.poll_interval == 1.0
            assert handle.task.session  # the HTTP session it lives in
            # A plain tool of the same server is still called plainly.
            echo = await first.call_tool("everything", "echo", {"message": "hi"}, timeout=CALL)
            assert echo.task is None
            assert echo.text == "Echo: hi"
        finally:
            await first.aclose()  # like a killed serve: the server keeps the session and the task
        second = await connected(url)
        try:
            done = await until(second, handle.task, "completed", "failed")
            assert done.status == "completed", done
            assert done.task_id == handle.task.task_id
            assert done.result is not None
            assert not done.result.is_error
            assert "# Research Report: rivers" in done.result.text
        finally:
            await second.aclose()

    with everything_http(tmp_path / "everything.log") as url:
        asyncio.run(go(url))


def test_an_ambiguous_query_asks_through_tasks_result_and_gets_the_answer(tmp_path: Path) -> None:
    async def go(url: str) -> None:
        manager = await connected(url)
        try:
            args = {"topic": "python", "ambiguous": True}
            handle = await manager.call_tool("everything", RESEARCH, args, timeout=CALL)
            assert handle.task is not None
            asking = await until(manager, handle.task, "input_required", asks=True)
            (request,) = asking.input_requests
            assert request.method == "elicitation/create"
            assert request.key.startswith("elicitation-")
            assert "could have multiple interpretations" in request.message
            assert request.schema is not None
            assert request.schema["required"] == ["interpretation"]
            reply = {"action": "accept", "content": {"interpretation": "snake"}}
            await manager.answer_task("everything", handle.task.task_id, {request.key: reply}, timeout=CALL)
            done = await until(manager, handle.task, "completed", "failed")
            assert done.result is not None, done
            assert "# Research Report: python (snake)" in done.result.text
        finally:
            await manager.aclose()

    with everything_http(tmp_path / "everything.log") as url:
        asyncio.run(go(url))


def test_tasks_cancel_cancels_the_task_also_from_a_new_client(tmp_path: Path) -> None:
    async def go(url: str) -> None:
        first = await connected(url)
        try:
            handle = await first.call_tool("everything", RESEARCH, {"topic": "tides"}, timeout=CALL)
            assert handle.task is not None
        finally:
            await first.aclose()
        second = await connected(url)
        try:
            task = handle.task
            await second.cancel_task("everything", task.task_id, timeout=CALL, session=task.session)
            after = await second.get_task("everything", task.task_id, timeout=CALL, session=task.session)
            assert after.status == "cancelled"
            # A task id the server never made is refused, not a lost connection.
            with pytest.raises(MCPRefusedError, match="not found"):
                await second.get_task("everything", "no-such-task", timeout=CALL, session=task.session)
            # So is a session the server does not have (it restarted): the task is gone with it.
            with pytest.raises(MCPRefusedError, match="the HTTP session the task lives in is gone"):
                await second.get_task("everything", task.task_id, timeout=CALL, session="no-such-session")
        finally:
            await second.aclose()

    with everything_http(tmp_path / "everything.log") as url:
        asyncio.run(go(url))


def test_a_question_asked_of_an_earlier_client_is_answered_by_the_next(tmp_path: Path) -> None:
    """serve restarted while a person thinks: the request came on the first client's tasks/result
    stream and is not sent again; the next client's answer (a JSON-RPC response with the request's
    id, in the task's session) still reaches the tool while the server waits (60 s, for this one)."""

    async def go(url: str) -> None:
        first = await connected(url)
        try:
            args = {"topic": "python", "ambiguous": True}
            handle = await first.call_tool("everything", RESEARCH, args, timeout=CALL)
            assert handle.task is not None
            (request,) = (await until(first, handle.task, "input_required", asks=True)).input_requests
        finally:
            await first.aclose()
        second = await connected(url)
        try:
            task = handle.task
            waiting = await second.get_task("everything", task.task_id, timeout=CALL, session=task.session)
            assert waiting.status == "input_required"
            assert waiting.input_requests == ()  # not sent again: only the first client had it
            reply = {"action": "accept", "content": {"interpretation": "comedy"}}
            await second.answer_task(
                "everything", task.task_id, {request.key: reply}, timeout=CALL, session=task.session
            )
            done = await until(second, task, "completed", "failed")
            assert done.result is not None, done
            assert "# Research Report: python (comedy)" in done.result.text
        finally:
            await second.aclose()

    with everything_http(tmp_path / "everything.log") as url:
        asyncio.run(go(url))


def test_a_question_outside_a_task_is_still_refused(tmp_path: Path) -> None:
    """The elicitation capability is declared (for tasks' questions); a plain call's question is
    answered "Elicitation not supported", as before, and the call fails with the server's words."""

    async def go(url: str) -> None:
        manager = await connected(url)
        try:
            result = await manager.call_tool("everything", "trigger-elicitation-request", {}, timeout=CALL)
        finally:
            await manager.aclose()
        assert result.task is None
        assert result.is_error
        assert result.text == "MCP error -32600: Elicitation not supported"

    with everything_http(tmp_path / "everything.log") as url:
        asyncio.run(go(url))


@pytest.mark.parametrize(
    ("key", "request_id"), [("elicitation-0", 0), ("elicitation-17", 17), ('elicitation-"r-1"', "r-1")]
)
def test_a_late_answer_is_the_response_to_the_request_its_key_names(key: str, request_id: int | str) -> None:
    reply = late_reply("T9", key, {"action": "accept", "content": {"interpretation": "snake"}})
    assert reply == {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {
            "action": "accept",
            "content": {"interpretation": "snake"},
            "_meta": {"io.modelcontextprotocol/related-task": {"taskId": "T9"}},
        },
    }


@pytest.mark.parametrize("key", ["input-1", "elicitation-", "elicitation-true", "elicitation-[1]"])
def test_a_key_that_names_no_request_is_refused(key: str) -> None:
    with pytest.raises(MCPRefusedError, match=f"has no request for input {re.escape(key)}"):
        late_reply("T9", key, {"action": "decline"})
