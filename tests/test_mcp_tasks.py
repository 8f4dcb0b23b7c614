"""MCP tasks (the tasks extension) in the MCP layer, against the project's test server over
Streamable HTTP and over stdio: a call the server runs as a task comes back as a handle, the task
is followed with tasks/get across a reconnect, answered with tasks/update, cancelled with
tasks/cancel; a task the server does not know is refused (MCPRefusedError), not a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitops_acp.errors import MCPError, MCPRefusedError
from gitops_acp.mcp import MCPManager, ServerConfig, TaskState
from gitops_acp.mcp.tasks import WireTask, state

CONNECT = 60.0
CALL = 30.0
EVERYTHING_ENV = "ACP_SERVER_EVERYTHING"


@contextlib.contextmanager
def http_server(counter: Path) -> Iterator[str]:
    """The test server over Streamable HTTP on 127.0.0.1, its tool runs recorded in `counter`."""
    env = {**os.environ, "ACP_TEST_COUNTER_FILE": str(counter)}
    command = [sys.executable, "-m", "gitops_acp.testing.mcp_server", "--http", "--max-seconds", "120"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


async def until(manager: MCPManager, server: str, task_id: str, status: str) -> TaskState:
    """Poll the task until it has `status`."""
    deadline = time.monotonic() + CALL
    while True:
        current = await manager.get_task(server, task_id, timeout=CALL)
        if current.status == status:
            return current
        assert time.monotonic() < deadline, f"task still {current.status}, waiting for {status}"
        await asyncio.sleep(0.05)


def lines(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def test_a_task_is_followed_to_its_result_across_a_reconnect(tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"

    async def go(url: str) -> None:
        manager = MCPManager(connect_timeout=CONNECT)
        manager.ensure(ServerConfig(name="web", transport="http", url=url))
        assert await manager.wait_connected("web", CONNECT)
        try:
            handle = await manager.call_tool("web", "long_job", {"label": "one"}, timeout=CALL)
            assert handle.task is not None, handle
            assert handle.task.status == "working"
            assert handle.text == ""
            assert not handle.is_error
            task_id = handle.task.task_id
            assert (await manager.get_task("web", task_id, timeout=CALL)).status == "working"
        finally:
            await manager.aclose()
        # A new client (a restarted serve) follows the same task: the server kept it.
        (tmp_path / "runs.txt.release").touch()
        manager = MCPManager(connect_timeout=CONNECT)
        manager.ensure(ServerConfig(name="web", transport="http", url=url))
        assert await manager.wait_connected("web", CONNECT)
        try:
            done = await until(manager, "web", task_id, "completed")
            assert done.result is not None
            assert done.result.text == "job one done"
            assert done.terminal
            with pytest.raises(MCPRefusedError, match="unknown task nope"):
                await manager.get_task("web", "nope", timeout=CALL)
        finally:
            await manager.aclose()
        assert lines(counter) == ["start one", "end one"]  # ran once

    with http_server(counter) as url:
        asyncio.run(go(url))


def test_input_required_is_answered_and_a_task_is_cancelled(tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"

    async def go(url: str) -> None:
        manager = MCPManager(connect_timeout=CONNECT)
        manager.ensure(ServerConfig(name="web", transport="http", url=url))
        assert await manager.wait_connected("web", CONNECT)
        try:
            asked = await manager.call_tool("web", "ask", {"question": "Which colour?"}, timeout=CALL)
            assert asked.task is not None
            waiting = await until(manager, "web", asked.task.task_id, "input_required")
            (request,) = waiting.input_requests
            assert request.method == "elicitation/create"
            assert request.message == "Which colour?"
            assert request.schema is not None
            assert "answer" in request.schema["properties"]
            reply = {request.key: {"action": "accept", "content": {"answer": "green"}}}
            await manager.answer_task("web", asked.task.task_id, reply, timeout=CALL)
            done = await until(manager, "web", asked.task.task_id, "completed")
            assert done.result is not None
            assert done.result.text == "the answer was: green"

            job = await manager.call_tool("web", "long_job", {"label": "two"}, timeout=CALL)
            assert job.task is not None
            await manager.cancel_task("web", job.task.task_id, timeout=CALL)
            await until(manager, "web", job.task.task_id, "cancelled")
        finally:
            await manager.aclose()
        assert lines(counter) == ["start two", "cancelled two"]

    with http_server(counter) as url:
        asyncio.run(go(url))


def test_a_stdio_servers_tasks_end_with_it(tmp_path: Path) -> None:
    """A restarted stdio server does not know the tasks of the process before it: refused."""
    counter = tmp_path / "runs.txt"
    config = ServerConfig(
        name="local",
        transport="stdio",
        command=sys.executable,
        args=("-m", "gitops_acp.testing.mcp_server", "--max-seconds", "120"),
        env=(("ACP_TEST_COUNTER_FILE", str(counter)),),
    )

    async def go() -> None:
        manager = MCPManager(connect_timeout=CONNECT)
        manager.ensure(config)
        assert await manager.wait_connected("local", CONNECT)
        handle = await manager.call_tool("local", "long_job", {"label": "x"}, timeout=CALL)
        assert handle.task is not None
        await manager.aclose()
        manager = MCPManager(connect_timeout=CONNECT)
        manager.ensure(config)
        assert await manager.wait_connected("local", CONNECT)
        try:
            with pytest.raises(MCPRefusedError, match=f"unknown task {handle.task.task_id}"):
                await manager.get_task("local", handle.task.task_id, timeout=CALL)
        finally:
            await manager.aclose()
        with pytest.raises(MCPError, match="no such MCP server"):
            await manager.get_task("local", handle.task.task_id, timeout=CALL)

    asyncio.run(go())


def test_wire_task_to_state() -> None:
    wire = WireTask.model_validate(
        {
            "taskId": "t1",
            "status": "failed",
            "pollIntervalMs": 250,
            "error": {"code": -32603, "message": "disk full"},
            "inputRequests": {
                "b": {"method": "elicitation/create", "params": {"message": "Why?"}},
                "a": {"method": "sampling/createMessage", "params": {}},
            },
        }
    )
    got = state(wire)
    assert got.poll_interval == 0.25
    assert got.error == "disk full (JSON-RPC error -32603)"
    assert [r.key for r in got.input_requests] == ["a", "b"]
    assert got.input_requests[1].message == "Why?"
    assert got.input_requests[1].schema is None
    assert got.terminal


def test_a_2025_11_25_tool_that_requires_a_task_runs_as_one_over_stdio() -> None:
    """server-everything (npm, the older TypeScript SDK) has such a tool: it is called with
    `task: {ttl}` and followed to its result (tests/test_mcp_tasks_2025.py: over HTTP)."""
    command = os.environ.get(EVERYTHING_ENV)
    if not command:
        pytest.fail(f"{EVERYTHING_ENV} is not set (see tests/test_mcp.py: .ci/run installs the server)")

    async def go() -> None:
        manager = MCPManager(connect_timeout=CONNECT)
        manager.ensure(ServerConfig(name="everything", transport="stdio", command=command, args=("stdio",)))
        try:
            assert await manager.wait_connected("everything", CONNECT)
            handle = await manager.call_tool(
                "everything", "simulate-research-query", {"topic": "x"}, timeout=CALL
            )
            assert handle.task is not None, handle
            assert handle.task.session is None  # stdio: no HTTP session; the task dies with the process
            done = await until(manager, "everything", handle.task.task_id, "completed")
        finally:
            await manager.aclose()
        assert done.result is not None
        assert "# Research Report: x" in done.result.text

    asyncio.run(go())
