"""The MCP layer against real servers: the project's test server as a subprocess over stdio and over
Streamable HTTP, PyPI's mcp-server-time (the current SDK) and npm's server-everything (the older
TypeScript SDK, 2025-11-25 handshake). No mocks: processes are checked with psutil.

Starting a Python MCP server costs about a second of imports, so the read-only tests share one
stdio and one HTTP server on a module-wide event loop; tests that crash, restart or stop servers
start their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mcp_types
import psutil
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gitops_acp.errors import MCPError
from gitops_acp.mcp import MCPManager, ServerConfig, ServerState, ToolInfo, convert

T = TypeVar("T")

# Generous: a loaded 2-core machine starts a Python MCP server in 1-3 s.
CONNECT = 60.0
CALL = 30.0
FAST_BACKOFF = (0.05, 0.5)
EVERYTHING_ENV = "ACP_SERVER_EVERYTHING"
SECRET = "s3cr3t-value-that-must-not-leak"


def stdio_config(
    name: str, *, env: dict[str, str] | None = None, log_path: Path | None = None
) -> ServerConfig:
    """Config for the project's test server over stdio."""
    return ServerConfig(
        name=name,
        transport="stdio",
        command=sys.executable,
        args=("-m", "gitops_acp.testing.mcp_server", "--max-seconds", "300"),
        env=tuple((env or {}).items()),
        log_path=log_path,
    )


@contextlib.contextmanager
def http_testserver(port: int = 0) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run the test server over Streamable HTTP as a subprocess; yield it and its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gitops_acp.testing.mcp_server",
            "--http",
            "--port",
            str(port),
            "--max-seconds",
            "300",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip() if port == 0 else f"http://127.0.0.1:{port}/mcp"
        assert url.startswith("http://127.0.0.1:"), f"test server printed {url!r}"
        yield proc, url
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def gone(pid: int) -> bool:
    """Whether the process no longer runs (a zombie waiting for init counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def state_of(manager: MCPManager, name: str) -> ServerState:
    """The server's state; it must be known to the manager."""
    state = manager.state(name)
    assert state is not None, f"{name} is not managed"
    return state


async def eventually(check: Callable[[], bool], timeout: float = CONNECT) -> None:
    """Poll `check` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def call_text(manager: MCPManager, server: str, tool: str, **arguments: Any) -> str:
    result = await manager.call_tool(server, tool, arguments, timeout=CALL)
    assert not result.is_error, result.text
    return result.text


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- shared servers: one stdio, one HTTP, on a module-wide loop ----------------------------------


class Shared:
    """A manager with the test server over stdio ("local") and over HTTP ("web"), both connected."""

    def __init__(self, runner: asyncio.Runner, manager: MCPManager, counter: Path) -> None:
        self.runner = runner
        self.manager = manager
        self.counter = counter

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    counter = tmp_path_factory.mktemp("counter") / "count.txt"
    with http_testserver() as (_, url), asyncio.Runner() as runner:
        manager = runner.run(_start_shared(url, counter))
        try:
            yield Shared(runner, manager, counter)
        finally:
            runner.run(manager.aclose())


async def _start_shared(url: str, counter: Path) -> MCPManager:
    manager = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
    manager.ensure(stdio_config("local", env={"ACP_TEST_COUNTER_FILE": str(counter), "TOKEN": SECRET}))
    manager.ensure(ServerConfig(name="web", transport="http", url=url))
    for name in ("local", "web"):
        assert await manager.wait_connected(name, CONNECT), manager.state(name)
    return manager


both = pytest.mark.parametrize("server", ["local", "web"])


def tools_of(shared: Shared, server: str) -> dict[str, ToolInfo]:
    state = state_of(shared.manager, server)
    return {tool.name: tool for tool in state.tools}


@both
def test_tools_are_listed_with_schemas_and_annotations_intact(shared: Shared, server: str) -> None:
    state = state_of(shared.manager, server)
    assert state.connected
    assert state.error is None
    assert state.restarts == 0
    assert state.protocol_version == "2026-07-28"
    tools = tools_of(shared, server)
    assert {"echo", "add", "count", "count_readonly", "fail", "slow", "crash", "complex", "pid"} <= set(tools)

    schema = tools["complex"].input_schema
    assert schema["properties"]["items"] == {"items": {"type": "string"}, "title": "Items", "type": "array"}
    assert [alt.get("type") for alt in schema["properties"]["choice"]["anyOf"]] == [
        "string",
        "integer",
        "null",
    ]
    assert schema["properties"]["nested"] == {"$ref": "#/$defs/Nested"}
    assert schema["$defs"]["Nested"]["properties"]["a"] == {"$ref": "#/$defs/Inner"}
    assert schema["$defs"]["Inner"]["properties"]["b"]["items"] == {"type": "integer"}
    assert schema["required"] == ["items", "nested"]

    assert tools["echo"].annotations == {"title": "Echo", "readOnlyHint": True}
    assert tools["add"].annotations == {"readOnlyHint": True, "idempotentHint": True}
    assert tools["count"].annotations == {"destructiveHint": False, "idempotentHint": False}
    assert tools["count_readonly"].annotations == {"destructiveHint": False, "idempotentHint": True}
    assert tools["fail"].annotations is None
    assert tools["echo"].description == "Return the text unchanged."


@both
def test_tool_calls_return_text_and_tool_errors_are_results(shared: Shared, server: str) -> None:
    async def go() -> None:
        m = shared.manager
        assert await call_text(m, server, "echo", text="héllo\nworld") == "héllo\nworld"
        assert await call_text(m, server, "add", a=1.25, b=2) == "3.25"
        args = {"items": ["x", "y"], "choice": 7, "nested": {"a": {"b": [1, 2]}}}
        assert json.loads(await call_text(m, server, "complex", **args)) == args

        failed = await m.call_tool(server, "fail", {"message": "disk is full"}, timeout=CALL)
        assert failed.is_error
        assert "disk is full" in failed.text

        # This SDK answers an unknown tool with isError, not a JSON-RPC error.
        unknown = await m.call_tool(server, "no_such_tool", {}, timeout=CALL)
        assert unknown.is_error
        assert "Unknown tool: no_such_tool" in unknown.text

        bad_args = await m.call_tool(server, "add", {"a": "one"}, timeout=CALL)
        assert bad_args.is_error

    shared.run(go())


@both
def test_json_rpc_error_is_mcp_error_with_code_and_message(shared: Shared, server: str) -> None:
    async def go() -> None:
        with pytest.raises(MCPError) as caught:
            await shared.manager.call_tool(
                server, "rpc_error", {"code": -32050, "message": "quota"}, timeout=CALL
            )
        assert (
            str(caught.value)
            == f'MCP server "{server}": tool "rpc_error" failed: quota (JSON-RPC error -32050)'
        )

    shared.run(go())


@both
def test_timeout_raises_and_the_session_stays_usable(shared: Shared, server: str) -> None:
    async def go() -> None:
        m = shared.manager
        started = time.monotonic()
        with pytest.raises(MCPError, match=rf'^MCP server "{server}": tool "slow" timed out after 0.5s$'):
            await m.call_tool(server, "slow", {"seconds": 30}, timeout=0.5)
        assert time.monotonic() - started < 10
        assert await call_text(m, server, "echo", text="still here") == "still here"
        state = state_of(m, server)
        assert state.connected
        assert state.restarts == 0

    shared.run(go())


@both
def test_concurrent_calls_share_one_session(shared: Shared, server: str) -> None:
    async def go() -> None:
        m = shared.manager
        texts = await asyncio.gather(*(call_text(m, server, "echo", text=f"call {i}") for i in range(50)))
        assert texts == [f"call {i}" for i in range(50)]
        # Twenty 1-second calls in flight together: serialized, they would take 20 s.
        started = time.monotonic()
        slow = await asyncio.gather(
            *(call_text(m, server, "slow", seconds=1, text=str(i)) for i in range(20))
        )
        assert slow == [str(i) for i in range(20)]
        assert time.monotonic() - started < 10

    shared.run(go())


@both
def test_a_call_leaves_the_callers_context_as_it_was(shared: Shared, server: str) -> None:
    """A call tells anyio it runs on asyncio (sniffio's variable) for its own duration only."""
    import sniffio

    async def go() -> None:
        before = sniffio.current_async_library_cvar.get()
        assert await call_text(shared.manager, server, "echo", text="x") == "x"
        assert sniffio.current_async_library_cvar.get() == before
        with pytest.raises(MCPError, match="timed out"):
            await shared.manager.call_tool(server, "slow", {"seconds": 30}, timeout=0.2)
        assert sniffio.current_async_library_cvar.get() == before

    shared.run(go())


def test_stdio_server_gets_its_env_and_not_ours(shared: Shared, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        m = shared.manager
        first = int(await call_text(m, "local", "count", label="env"))
        assert int(await call_text(m, "local", "count", label="env")) == first + 1
        assert shared.counter.read_text().splitlines().count("env") == first + 1
        # The reconciler's environment (API keys for other resources) stays out; PATH is passed.
        assert await call_text(m, "local", "getenv", name="SHARED_TEST_LEAK") == "<unset>"
        assert await call_text(m, "local", "getenv", name="PATH") == os.environ["PATH"]

    monkeypatch.setenv("SHARED_TEST_LEAK", "visible-only-here")
    shared.run(go())


@both
def test_tool_list_change_updates_state_and_notifies(shared: Shared, server: str) -> None:
    async def go() -> None:
        m = shared.manager
        name = f"grown_{server}"
        assert name not in tools_of(shared, server)
        await call_text(m, server, "grow", name=name)
        await eventually(lambda: name in tools_of(shared, server))
        assert await call_text(m, server, name, text="new tool") == "new tool"

    shared.run(go())


# --- lifecycle: each test starts its own servers -------------------------------------------------


def test_crash_mid_call_fails_the_call_and_restarts_the_server(tmp_path: Path) -> None:
    changes: list[str] = []

    async def go() -> None:
        m = MCPManager(on_change=changes.append, restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            m.ensure(stdio_config("crashy", log_path=tmp_path / "logs" / "crashy.log"))
            assert await m.wait_connected("crashy", CONNECT)
            assert changes == ["crashy"]
            first = int(await call_text(m, "crashy", "pid"))

            with pytest.raises(
                MCPError, match=r'^MCP server "crashy" exited during the call \(exit code 3\)$'
            ):
                await m.call_tool("crashy", "crash", {}, timeout=CALL)
            await eventually(lambda: len(changes) >= 3)  # connected, crashed, connected again
            assert await m.wait_connected("crashy", CONNECT)
            second = int(await call_text(m, "crashy", "pid"))
            assert second != first
            assert gone(first)
            state = state_of(m, "crashy")
            assert state.connected
            assert state.restarts == 1
            assert state.error is None
            assert (tmp_path / "logs" / "crashy.log").is_file()
        finally:
            await m.aclose()

    run(go())


def test_changed_config_restarts_and_same_config_does_not() -> None:
    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            m.ensure(stdio_config("conf", env={"MODE": "one"}))
            assert await m.wait_connected("conf", CONNECT)
            first = int(await call_text(m, "conf", "pid"))

            m.ensure(stdio_config("conf", env={"MODE": "one"}))  # unchanged: nothing happens
            assert int(await call_text(m, "conf", "pid")) == first

            m.ensure(stdio_config("conf", env={"MODE": "two"}))
            await eventually(lambda: gone(first))
            assert await m.wait_connected("conf", CONNECT)
            assert await call_text(m, "conf", "getenv", name="MODE") == "two"
            state = state_of(m, "conf")
            assert state.restarts == 0
        finally:
            await m.aclose()

    run(go())


def test_stop_and_aclose_leave_no_process_and_no_orphan() -> None:
    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        for name in ("one", "two", "three"):
            m.ensure(stdio_config(name))
        pids: dict[str, list[int]] = {}
        for name in ("one", "two", "three"):
            assert await m.wait_connected(name, CONNECT)
            server = int(await call_text(m, name, "pid"))
            child = int(await call_text(m, name, "spawn", seconds=120))
            assert psutil.Process(child).ppid() == server
            pids[name] = [server, child]

        await m.stop("one")
        assert all(gone(pid) for pid in pids["one"])
        assert m.state("one") is None
        with pytest.raises(MCPError, match=r'^MCP server "one" is not connected'):
            await m.call_tool("one", "echo", {"text": "x"}, timeout=CALL)
        assert not any(gone(pid) for pid in pids["two"] + pids["three"])

        await m.aclose()
        assert all(gone(pid) for pid in pids["two"] + pids["three"])
        assert m.names() == []

    run(go())


def test_the_old_module_name_still_runs_the_test_server() -> None:
    # Repositories made by `gitops-acp init --offline` before the move name the old module.
    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            m.ensure(
                ServerConfig(
                    name="old",
                    transport="stdio",
                    command=sys.executable,
                    args=("-m", "gitops_acp.mcp.testserver", "--max-seconds", "300"),
                )
            )
            assert await m.wait_connected("old", CONNECT), m.state("old")
            assert await call_text(m, "old", "echo", text="still here") == "still here"
        finally:
            await m.aclose()

    run(go())


def test_connect_failures_retry_with_backoff_and_say_why(tmp_path: Path) -> None:
    def broken_callback(name: str) -> None:
        raise RuntimeError("a broken on_change must not stop the manager")

    async def go() -> None:
        m = MCPManager(on_change=broken_callback, restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        log = tmp_path / "deep" / "logs" / "exits.log"
        try:
            m.ensure(
                ServerConfig(name="missing", transport="stdio", command=str(tmp_path / "no-such-command"))
            )
            m.ensure(
                ServerConfig(
                    name="exits",
                    transport="stdio",
                    command=sys.executable,
                    args=("-c", "import sys; sys.stderr.write('bad flag --x\\n'); sys.exit(2)"),
                    log_path=log,
                )
            )
            m.ensure(ServerConfig(name="refused", transport="http", url="http://127.0.0.1:9/mcp"))

            for name in ("missing", "exits", "refused"):
                await eventually(functools.partial(lambda name: state_of(m, name).restarts >= 2, name))
            states = {name: state_of(m, name) for name in ("missing", "exits", "refused")}
            assert all(not s.connected and not s.tools for s in states.values())
            missing = tmp_path / "no-such-command"
            assert states["missing"].error == f'cannot start command "{missing}": No such file or directory'
            assert states["exits"].error == f"exited during start-up (exit code 2); its stderr is in {log}"
            assert "bad flag --x" in log.read_text()
            assert (states["refused"].error or "").startswith("cannot reach http://127.0.0.1:9/mcp: ")

            with pytest.raises(MCPError, match=r'^MCP server "refused" is not connected: cannot reach'):
                await m.call_tool("refused", "echo", {}, timeout=CALL)
            with pytest.raises(MCPError, match=r'^MCP server "nobody" is not connected'):
                await m.call_tool("nobody", "echo", {}, timeout=CALL)
        finally:
            await m.aclose()

    run(go())


def test_a_server_stopped_while_it_starts_leaves_no_process_behind() -> None:
    """A stop (or a new config, or the connect deadline) landing while the server's process is
    being started stops that process too: none left running, no pipe of it left open.

    Stopped after 0, 1, 2, ... turns of the event loop, so that some stops land while asyncio
    connects the new process's pipes (before 2026-12-07, ~6% of random stops left the process
    unreaped and its pipes open, found by CI as ResourceWarnings in a later test)."""
    marker = "acp-start-race-marker"
    command = ("-c", f"import sys; sys.argv.append({marker!r}); sys.stdin.read()")

    def ours() -> list[psutil.Process]:
        found = []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
        return found

    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            for turns in [*range(60), *range(60)]:  # each stop point twice: the window moves a little
                m.ensure(ServerConfig(name="slow", transport="stdio", command=sys.executable, args=command))
                for _ in range(turns % 30):
                    await asyncio.sleep(0)
                if turns >= 30:
                    await asyncio.sleep(0.0005 * (turns - 30))
                await m.stop("slow")
                assert ours() == [], f"a process left running after a stop {turns} turns in"
        finally:
            await m.aclose()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run(go())
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_http_error_status_is_named_in_the_error() -> None:
    async def deny(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no", status_code=401)

    app = Starlette(routes=[Route("/mcp", deny, methods=["GET", "POST", "DELETE"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # listening: a connection refused first would be the first error
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)

    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        try:
            m.ensure(
                ServerConfig(
                    name="locked", transport="http", url=url, headers=(("Authorization", "Bearer x"),)
                )
            )
            await eventually(lambda: state_of(m, "locked").error is not None)
            assert (state_of(m, "locked").error or "").startswith("HTTP 401 Unauthorized: ")
        finally:
            await m.aclose()

    try:
        run(go())
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def test_http_session_break_is_noticed_and_reconnects() -> None:
    async def go(port: int) -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            with http_testserver(port) as (proc, url):
                m.ensure(ServerConfig(name="web", transport="http", url=url))
                assert await m.wait_connected("web", CONNECT)
                proc.kill()
                # No call in flight: the subscription stream breaking is what tells.
                await eventually(lambda: not state_of(m, "web").connected)
            with http_testserver(port):
                assert await m.wait_connected("web", CONNECT)
                assert await call_text(m, "web", "echo", text="back") == "back"
                assert state_of(m, "web").restarts >= 1
        finally:
            await m.aclose()

    with socket.socket() as probe:  # a free port to come back to
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run(go(port))


def test_secrets_stay_out_of_repr_and_fingerprints() -> None:
    config = ServerConfig(
        name="web",
        transport="http",
        url="http://127.0.0.1:9/mcp",
        env=(("TOKEN", SECRET),),
        headers=(("Authorization", f"Bearer {SECRET}"),),
    )
    assert SECRET not in repr(config)
    assert SECRET not in config.fingerprint()
    rotated = ServerConfig(
        name="web", transport="http", url=config.url, headers=(("Authorization", "Bearer new"),)
    )
    assert rotated.fingerprint() != config.fingerprint()
    assert config.fingerprint() == ServerConfig(**config.__dict__).fingerprint()
    assert config.scrub(f"401 for token {SECRET}; header Bearer {SECRET}") == "401 for token ***; header ***"

    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            m.ensure(config)
            await eventually(lambda: state_of(m, "web").error is not None)
            assert SECRET not in str(m.state("web"))
        finally:
            await m.aclose()

    run(go())


def test_secrets_stay_out_of_call_errors(shared: Shared) -> None:
    async def go() -> None:
        # A server that puts the value into a JSON-RPC error: the message the model reads is scrubbed.
        with pytest.raises(MCPError) as caught:
            await shared.manager.call_tool(
                "local", "rpc_error", {"code": -32000, "message": f"bad {SECRET}"}, timeout=CALL
            )
        # -32000 on purpose: the code the SDK also uses for a closed connection, which this is not.
        assert (
            str(caught.value)
            == 'MCP server "local": tool "rpc_error" failed: bad *** (JSON-RPC error -32000)'
        )

    shared.run(go())


# --- third-party servers: protocol negotiation with current and older SDKs ----------------------


def test_mcp_server_time_from_pypi() -> None:
    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            m.ensure(
                ServerConfig(
                    name="time", transport="stdio", command=sys.executable, args=("-m", "mcp_server_time")
                )
            )
            assert await m.wait_connected("time", CONNECT), m.state("time")
            state = state_of(m, "time")
            assert "get_current_time" in {tool.name for tool in state.tools}
            answer = json.loads(await call_text(m, "time", "get_current_time", timezone="Asia/Tokyo"))
            assert answer["timezone"] == "Asia/Tokyo"
            assert answer["datetime"].endswith("+09:00")
        finally:
            await m.aclose()

    run(go())


def test_server_everything_from_npm_speaks_the_older_handshake() -> None:
    command = os.environ.get(EVERYTHING_ENV)
    if not command:
        pytest.fail(
            f"{EVERYTHING_ENV} is not set. Install the server the way .ci/run does:\n"
            '  npm install --prefix "$PWD/.ci/node" @modelcontextprotocol/server-everything@2026.8.31 '
            "--no-audit --no-fund\n"
            f'  export {EVERYTHING_ENV}="$PWD/.ci/node/node_modules/.bin/mcp-server-everything"'
        )

    async def go() -> None:
        m = MCPManager(restart_backoff=FAST_BACKOFF, connect_timeout=CONNECT)
        try:
            m.ensure(ServerConfig(name="everything", transport="stdio", command=command, args=("stdio",)))
            assert await m.wait_connected("everything", CONNECT), m.state("everything")
            state = state_of(m, "everything")
            assert state.protocol_version == "2025-11-25"
            echo = {tool.name: tool for tool in state.tools}["echo"]
            assert echo.input_schema["properties"]["message"]["type"] == "string"
            assert echo.annotations is not None
            assert echo.annotations["readOnlyHint"] is True
            assert await call_text(m, "everything", "echo", message="hello") == "Echo: hello"
        finally:
            await m.aclose()

    run(go())


# --- conversions, without a server ---------------------------------------------------------------


def test_result_text_describes_every_kind_of_content() -> None:
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(type="text", text="first"),
            mcp_types.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png"),
            mcp_types.AudioContent(type="audio", data="AAAA", mime_type="audio/wav"),
            mcp_types.ResourceLink(type="resource_link", uri="file:///tmp/report.txt", name="report"),
            mcp_types.EmbeddedResource(
                type="resource",
                resource=mcp_types.TextResourceContents(uri="file:///notes.md", text="# notes"),
            ),
            mcp_types.TextContent(type="text", text="last"),
        ],
        is_error=True,
    )
    text = convert.tool_result(result)
    assert text.is_error
    assert text.text.splitlines() == [
        "first",
        "[image/png, 5 bytes]",
        "[audio/wav, 3 bytes]",
        "[resource link file:///tmp/report.txt]",
        "[resource file:///notes.md]",
        "# notes",
        "last",
    ]


def test_structured_content_stands_in_for_missing_text() -> None:
    only_structured = mcp_types.CallToolResult(content=[], structured_content={"b": 1, "a": [True, None]})
    assert convert.tool_result(only_structured).text == '{"a": [true, null], "b": 1}'
    with_text = mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text="3")], structured_content={"result": 3}
    )
    assert convert.tool_result(with_text).text == "3"
    assert convert.tool_result(mcp_types.CallToolResult(content=[])).text == ""
