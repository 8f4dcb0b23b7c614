"""The project's own MCP server, for tests, benchmarks and `demo`.

STYLE asks for fakes over real protocols: this is a real MCP server built on the SDK's
`MCPServer`, run as a separate process (`python -m gitops_acp.testing.mcp_server`) over stdio, or over
Streamable HTTP with `--http --port N` (path `/mcp`; with `--port 0` the URL is the first line on
stdout). Its tools cover what the client side has to get right:

- `echo`, `add`: plain calls (read-only / idempotent annotations);
- `count` (not idempotent) and `count_readonly` (idempotent): append a line to the file named by
  `ACP_TEST_COUNTER_FILE` and fsync it before answering, so a test can prove after a crash and a
  restart that a non-idempotent tool ran exactly once;
- `work` (not idempotent): one call at a time (later calls wait for the one running), each
  appending `start <label>` to that file (fsynced), sleeping, then appending `end <label>`: the
  witness of the crash soak (benchmarks/bench_crash.py), which tells a call cut mid-execution
  (a start without its end) from one that never started (no line at all) or ran twice;
- `fail` (a tool error: isError), `rpc_error` (a JSON-RPC error), `slow` (timeouts, kills mid-call),
  `crash` (exits with code 3 mid-call);
- `complex`: arrays, anyOf and nested objects under `$defs` in its input schema;
- `pid`, `spawn` (a child left behind), `getenv`: for the restart, orphan and environment checks;
- `grow`: adds a tool and announces the changed tool list;
- `long_job` and `ask`: run as MCP tasks (the tasks extension, `io.modelcontextprotocol/tasks`,
  2026-07-28) when the client declares it. `long_job` (not idempotent) appends `start <label>`
  to the counter file, waits until the file `<counter file>.release` exists, appends
  `end <label>` and answers; cancelled (`tasks/cancel`), it appends `cancelled <label>`.
  `ask` asks its question through the task's `input_required` state (an elicitation) and
  answers with what came back. Tasks live in the server process: a server on Streamable HTTP
  that outlives its client keeps them across the client's restarts.

The server never outlives its test: it exits after `--max-seconds` (default 600) and as soon as
its parent process is gone (stdio servers also exit when stdin closes).

`python -m gitops_acp.mcp.testserver`, its old name, still runs it (a shim there), for repositories
made by `gitops-acp init --offline` before it moved here.
"""

# The MCP SDK is confined to gitops_acp/mcp/ for the product (ruff's banned-api); this is a server,
# not part of the product, kept in testing/ where no product layer may import it (pyproject.toml).
# ruff: noqa: TID251

from __future__ import annotations

import argparse
import asyncio
import contextvars
import datetime
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable

from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError as MCPProtocolError
from mcp.types import ToolAnnotations
from mcp_types import RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

__all__ = ["COUNTER_ENV", "build_server", "main"]

COUNTER_ENV = "ACP_TEST_COUNTER_FILE"


class Inner(BaseModel):
    """The innermost object of `complex`'s `nested` argument."""

    b: list[int]


class Nested(BaseModel):
    """`complex`'s `nested` argument: an object holding an object (a `$defs` entry in the schema)."""

    a: Inner


def build_server() -> MCPServer:
    """Return the test server with all its tools registered."""
    server = MCPServer("gitops-acp-testserver", version="1", log_level="WARNING", extensions=[_Tasks()])

    @server.tool(annotations=ToolAnnotations(title="Echo", read_only_hint=True))
    async def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
    async def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
    def count(label: str) -> str:
        """Record one run under `label` in the counter file; return how many runs it has (not idempotent)."""
        return str(_count(label))

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
    def work(label: str, seconds: float = 0.2) -> str:
        """Do `seconds` of work under `label`, one call at a time; recorded as it starts and ends."""
        # The SDK runs a sync tool in a worker thread and dispatches requests concurrently, so
        # the lock is what makes this a server that runs one call at a time: the others queue.
        with _WORK_LOCK:
            _record(f"start {label}")
            time.sleep(seconds)
            _record(f"end {label}")
        return f"worked on {label}"

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
    def count_readonly(label: str) -> str:
        """Like count, but annotated as safe to re-run."""
        return str(_count(label))

    @server.tool()
    async def fail(message: str) -> str:
        """Fail with the message (the client sees isError)."""
        raise ToolError(message)

    @server.tool()
    async def rpc_error(code: int, message: str) -> str:
        """Answer with a JSON-RPC error (not a tool error) carrying `code` and `message`."""
        raise MCPProtocolError(code, message)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def getenv(name: str) -> str:
        """Return the server's environment variable `name`, or "<unset>"."""
        return os.environ.get(name, "<unset>")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def slow(seconds: float, text: str = "done") -> str:
        """Sleep `seconds`, then return `text`."""
        await asyncio.sleep(seconds)
        return text

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    async def crash() -> str:
        """Exit the server process at once with code 3, mid-call."""
        os._exit(3)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def complex(items: list[str], nested: Nested, choice: str | int | None = None) -> str:
        """Return the arguments as JSON (the input schema has arrays, anyOf, nested objects and $defs)."""
        return json.dumps({"items": items, "choice": choice, "nested": nested.model_dump()}, sort_keys=True)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def pid() -> int:
        """Return this server's process id."""
        return os.getpid()

    @server.tool()
    def spawn(seconds: float = 600) -> int:
        """Start a child process that sleeps `seconds` (a grandchild of the client); return its pid."""
        child = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({float(seconds)!r})"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Deliberately not waited for: the point is a child the server leaves behind.
        return child.pid

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool called `name` (it echoes) and tell the client that the tool list changed."""
        server.add_tool(_echo_as(name), name=name, description=f"{name}: echo the text")
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await ctx.notify_tools_changed()  # delivered on the client's subscriptions/listen stream
        else:
            await ctx.session.send_tool_list_changed()
        return f"added {name}"

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
    async def long_job(label: str) -> str:
        """Start a job under `label` and finish it once the test releases it (run as an MCP task)."""
        release = pathlib.Path(_record(f"start {label}") + ".release")
        try:
            while not release.exists():  # noqa: ASYNC240 - a stat every 50 ms, in a test server
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            _record(f"cancelled {label}")
            raise
        _record(f"end {label}")
        return f"job {label} done"

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
    async def ask(question: str) -> str:
        """Ask a person `question` (an elicitation while running as an MCP task); return the answer."""
        schema: dict[str, object] = {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
        }
        reply = await _elicit(question, schema)
        action = reply.get("action")
        if action != "accept":
            return f"no answer ({action})"
        content = reply.get("content")
        answer = content.get("answer") if isinstance(content, dict) else None
        return f"the answer was: {answer}"

    return server


class _TaskIdParams(RequestParams):
    task_id: str


class _UpdateParams(RequestParams):
    task_id: str
    input_responses: dict[str, dict[str, object]]


class _Task:
    """One MCP task of this server: its wire record, its runner, and the input it waits for."""

    def __init__(self, task_id: str) -> None:
        now = _now()
        self.record: dict[str, object] = {
            "taskId": task_id,
            "status": "working",
            "createdAt": now,
            "lastUpdatedAt": now,
            "ttlMs": None,
            "pollIntervalMs": 100,
        }
        self.runner: asyncio.Task[None] | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, object]]] = {}
        self.keys = 0

    def update(self, **fields: object) -> None:
        self.record.update(fields, lastUpdatedAt=_now())


#: The task a tool body runs in (set in the task's runner; the tool's `_elicit` reads it).
_CURRENT: contextvars.ContextVar[_Task | None] = contextvars.ContextVar("task", default=None)


class _Tasks(Extension):
    """The tasks extension, server side: `long_job` and `ask` become tasks when the client asks."""

    identifier = "io.modelcontextprotocol/tasks"
    TOOLS = frozenset({"long_job", "ask"})

    def __init__(self) -> None:
        self.tasks: dict[str, _Task] = {}

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", _TaskIdParams, self._get),
            MethodBinding("tasks/update", _UpdateParams, self._update),
            MethodBinding("tasks/cancel", _TaskIdParams, self._cancel),
        ]

    async def intercept_tool_call(self, params, ctx, call_next):  # type: ignore[no-untyped-def]
        capabilities = (ctx.meta or {}).get("io.modelcontextprotocol/clientCapabilities") or {}
        if params.name not in self.TOOLS or self.identifier not in (capabilities.get("extensions") or {}):
            return await call_next(ctx)
        task = _Task(uuid.uuid4().hex)
        self.tasks[task.record["taskId"]] = task  # type: ignore[index]

        async def run() -> None:
            _CURRENT.set(task)
            try:
                result = await call_next(ctx)
            except asyncio.CancelledError:
                task.update(status="cancelled", statusMessage="cancelled by the client")
                raise
            except MCPProtocolError as exc:
                task.update(status="failed", error={"code": exc.code, "message": exc.error.message})
                return
            assert isinstance(result, BaseModel)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            task.update(status="completed", result=dumped)

        task.runner = asyncio.get_running_loop().create_task(run())
        return {"resultType": "task", **task.record}

    def _task(self, task_id: str) -> _Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise MCPProtocolError(-32602, f"unknown task {task_id}")
        return task

    async def _get(self, ctx, params: _TaskIdParams) -> dict[str, object]:  # type: ignore[no-untyped-def]
        return dict(self._task(params.task_id).record)

    async def _update(self, ctx, params: _UpdateParams) -> dict[str, object]:  # type: ignore[no-untyped-def]
        task = self._task(params.task_id)
        for key, response in params.input_responses.items():
            waiter = task.waiting.pop(key, None)
            if waiter is not None and not waiter.done():  # unknown or answered keys are ignored
                waiter.set_result(response)
        return {}

    async def _cancel(self, ctx, params: _TaskIdParams) -> dict[str, object]:  # type: ignore[no-untyped-def]
        task = self._task(params.task_id)
        if task.runner is not None and not task.runner.done():
            task.runner.cancel()
            task.update(status="cancelled", statusMessage="cancelled by the client")
        return {}


async def _elicit(message: str, schema: dict[str, object]) -> dict[str, object]:
    """Ask the client for input through the current task's `input_required` state; wait for it."""
    task = _CURRENT.get()
    if task is None:
        raise ToolError("this tool asks for input only when run as an MCP task")
    task.keys += 1
    key = f"input-{task.keys}"
    waiter: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
    task.waiting[key] = waiter
    params = {"mode": "form", "message": message, "requestedSchema": schema}
    request = {"method": "elicitation/create", "params": params}
    task.update(status="input_required", inputRequests={key: request}, statusMessage=message)
    try:
        return await waiter
    finally:
        task.record.pop("inputRequests", None)
        task.update(status="working", statusMessage=None)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _echo_as(name: str) -> Callable[[str], Awaitable[str]]:
    """Return an echo tool function named `name` (for `grow`)."""

    async def tool(text: str) -> str:
        return text

    tool.__name__ = name
    return tool


#: `work` runs one call at a time (see there).
_WORK_LOCK = threading.Lock()


def _count(label: str) -> int:
    """Append `label` to the counter file durably; return how many lines carry it."""
    path = _record(label)
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.rstrip("\n") == label)


def _record(line: str) -> str:
    """Append `line` to the counter file and fsync it before returning the file's path."""
    path = os.environ.get(COUNTER_ENV)
    if not path:
        raise ToolError(f"{COUNTER_ENV} is not set")
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def _watchdog(max_seconds: float) -> None:
    """Exit the process when its parent is gone or `max_seconds` have passed (a thread)."""
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        # Re-parented (to init or a subreaper) means whoever started us is gone.
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.2)
    os._exit(0)


def _serve_http(server: MCPServer, port: int) -> None:
    """Serve Streamable HTTP on 127.0.0.1:`port` at /mcp, printing the URL first when `port` is 0."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    # Print only once the socket is bound, so a reader of this line can connect (the backlog
    # holds a connection until uvicorn starts accepting).
    sock.listen(128)
    if port == 0:
        print(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    import uvicorn  # only for --http: stdio servers start faster without it

    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    """Run the test server: stdio by default, Streamable HTTP with --http."""
    parser = argparse.ArgumentParser(prog="python -m gitops_acp.testing.mcp_server", description=__doc__)
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0: pick one, print URL)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long")
    args = parser.parse_args(argv)

    threading.Thread(target=_watchdog, args=(args.max_seconds,), daemon=True).start()
    server = build_server()
    if args.http:
        _serve_http(server, args.port)
    else:
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
