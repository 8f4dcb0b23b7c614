"""One MCP server kept connected: an owner task that starts it, watches it and restarts it.

The SDK's `Client` is entered and left by one long-lived task (anyio cancel scopes belong to the
task that entered them; see shared/SDK-NOTES.md), so every server gets an owner task running
`Connection._run`: connect, list tools, then wait for something to happen; on a crash or a broken
session, back off and connect again with a new `Client` (one cannot be re-entered).

Tool calls do not go through the owner. The SDK's dispatcher is safe to use from many tasks at
once: each request gets its own id and waiter, and nothing in the call path enters a cancel
scope that outlives the call. So callers send on the owner's session directly and concurrently,
which costs nothing over the SDK's own per-call work; a queue to the owner would add two task
switches per call and a second place for a call to get stuck. When the session ends under a call,
the SDK wakes it with "connection closed", and the call path turns that into why: the exit code
of a crashed process, a stop, a restart for a new config.

States: starting → connected ⇄ (crashed / connect failed → backoff → starting) … → stopped.
`on_change` runs on every transition that changes `state()` and on a changed tool list.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import logging
import math
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import mcp_types
import pydantic
import sniffio
from mcp import Client
from mcp import MCPError as SDKError
from mcp.client import Transport
from mcp.client.session import ClientSession, IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import gitops_acp
from gitops_acp.errors import MCPError, MCPRefusedError
from gitops_acp.mcp import convert, tasks, tasks2025
from gitops_acp.mcp._stdio import StdioTransport
from gitops_acp.mcp.models import ServerConfig, ServerState, TaskState, ToolInfo, ToolResult
from gitops_acp.waiting import wait_event

__all__ = ["Connection"]

log = logging.getLogger(__name__)

# A listing that never ends (a buggy paginator) must not hang the connect.
_MAX_TOOL_PAGES = 1000
# Time for a crashed process's exit code to arrive after its stdout closed, so a failed call can
# say how the server ended; short, because it only runs after the connection is already gone.
_EXIT_CODE_WAIT = 2.0
# How long close() waits for the owner to stop the server gracefully before cancelling it; the
# stdio shutdown itself is bounded (stdin close, SIGTERM, SIGKILL: about 7 s at worst).
_CLOSE_WAIT = 15.0
_CLIENT_INFO = mcp_types.Implementation(name="gitops-acp", version=gitops_acp.__version__)

# The SDK checks every tool result against the tool's output schema with jsonschema, which it
# imports on the first result it checks: ~35 ms of a busy reconciler's first tool call (py-spy).
# Imported with this module instead, which the first MCPServer's reconcile loads.
importlib.import_module("jsonschema.validators")
importlib.import_module("referencing.exceptions")


class Connection:
    """One MCP server: its owner task, its state, and the call path onto its session."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        on_change: Callable[[str], None],
        restart_backoff: tuple[float, float],
        connect_timeout: float,
    ) -> None:
        self.config = config
        self.fingerprint = config.fingerprint()
        self._on_change = on_change
        self._backoff = restart_backoff
        self._connect_timeout = connect_timeout

        self._client: Client | None = None  # set while connected: what calls are sent on
        self._transport: StdioTransport | None = None  # the current stdio process, if any
        self._tools: tuple[ToolInfo, ...] = ()
        self._error: str | None = None
        self._restarts = 0
        self._protocol_version: str | None = None
        # 2025-11-25 tasks (mcp/tasks2025.py): the tools called as tasks, the requests for input
        # of this server's tasks, the live HTTP session's id and handshake (to reach a task that
        # lives in the session of an earlier serve process).
        self._task_tools: frozenset[str] = frozenset()
        self._pending = tasks2025.Pending()
        self._http_session: str | None = None
        self._handshake: mcp_types.InitializeResult | None = None

        # The owner sleeps on `_wake`; the flags say why it was woken.
        self._wake = asyncio.Event()
        self._stopping = False
        self._reconfigure = False
        self._died = False
        self._tools_dirty = False
        self._scope: anyio.CancelScope | None = None  # the current session, to abort a connect
        self._connecting = False  # between the spawn and the end of the first tool listing
        self._http_status: str | None = None  # the session's last HTTP error status, for messages
        self._changed = asyncio.Event()  # replaced on every change, for wait_connected
        self._published = self.state()  # what on_change was last called for
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mcp-server {config.name}")

    @property
    def name(self) -> str:
        """The MCPServer resource name."""
        return self.config.name

    def state(self) -> ServerState:
        """Return a snapshot of the connection."""
        return ServerState(
            connected=self._client is not None,
            tools=self._tools,
            error=self._error,
            restarts=self._restarts,
            protocol_version=self._protocol_version,
        )

    def reconfigure(self, config: ServerConfig) -> None:
        """Switch to a new config: the server is restarted with it right away."""
        self.config = config
        self.fingerprint = config.fingerprint()
        self._reconfigure = True
        self._abort_connect()
        self._client = None  # new calls wait for the new server; calls in flight finish or fail
        self._wake.set()

    async def close(self) -> None:
        """Stop the server (stdin close, SIGTERM, SIGKILL for its process group) and end the owner."""
        self._stopping = True
        self._abort_connect()
        self._client = None
        self._wake.set()
        await self._pending.aclose()
        done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_WAIT)
        if not done:
            # The stdio shutdown is shielded: cancelling cannot leave the process behind.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        elif not self._task.cancelled() and (exc := self._task.exception()) is not None:
            log.error("MCP server %r: owner task failed: %r", self.name, exc)

    async def wait_connected(self, timeout: float) -> bool:
        """Return once connected (True) or when `timeout` seconds have passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._client is None:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._task.done():
                return False
            await wait_event(self._changed, remaining)
        return True

    # --- the call path: runs in the caller's task ---------------------------------------------

    async def call_tool(self, tool: str, arguments: dict[str, Any], *, timeout: float) -> ToolResult:
        """Call `tool` on the live session; SDK failures become MCPError with a readable reason."""
        token = _say_asyncio()
        try:
            return await self._call_tool(tool, arguments, timeout=timeout)
        finally:
            sniffio.current_async_library_cvar.reset(token)

    async def _call_tool(self, tool: str, arguments: dict[str, Any], *, timeout: float) -> ToolResult:
        client = self._client
        if client is None:
            why = self._error or "it is still starting"
            raise MCPError(self.config.scrub(f'MCP server "{self.name}" is not connected: {why}'))
        transport = self._transport
        try:
            # The SDK's read timeout runs from the moment the request is written; the outer bound
            # also covers a write blocked on a server that stopped reading.
            with anyio.fail_after(timeout + 1.0):
                if tool in self._task_tools and client.protocol_version == tasks2025.PROTOCOL:
                    answer = await tasks2025.create(client.session, tool, arguments, timeout=timeout)
                    if isinstance(answer, tasks2025.Task):
                        # A 2025-11-25 task: the caller commits its id (and session), then follows it.
                        return ToolResult(
                            text="", is_error=False, task=tasks2025.state(answer, session=self._http_session)
                        )
                    result = answer
                else:
                    result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except tasks.TaskCreated as created:
            # The server runs the call as an MCP task: the caller commits its id, then follows it.
            return ToolResult(text="", is_error=False, task=tasks.state(created.handle))
        except SDKError as exc:
            raise MCPError(
                self.config.scrub(await self._call_failure(tool, exc, timeout, client, transport))
            ) from None
        except TimeoutError:
            raise MCPError(f'MCP server "{self.name}": tool "{tool}" timed out after {timeout:g}s') from None
        except RuntimeError as exc:
            if self._client is not client:
                # The session closed before the request went out ("must be used within an
                # async context manager"): the same as losing it mid-call.
                closed = SDKError(mcp_types.CONNECTION_CLOSED, "Connection closed")
                raise MCPError(
                    self.config.scrub(await self._call_failure(tool, closed, timeout, client, transport))
                ) from None
            message = f'MCP server "{self.name}": tool "{tool}" returned an invalid result: {exc}'
            raise MCPError(self.config.scrub(message)) from None
        except pydantic.ValidationError as exc:
            # The SDK checks results against the protocol's types and the tool's output schema.
            message = f'MCP server "{self.name}": tool "{tool}" returned an invalid result: {exc}'
            raise MCPError(self.config.scrub(message)) from None
        return convert.tool_result(result)

    async def task_request(
        self,
        method: str,
        task_id: str,
        *,
        timeout: float,
        responses: dict[str, Any] | None = None,
        session: str | None = None,
    ) -> TaskState | None:
        """Send `tasks/get`, `tasks/cancel` or `tasks/update` for `task_id` (mcp/tasks.py), or
        their 2025-11-25 counterparts (mcp/tasks2025.py) to a server on that protocol.

        Returns the task's state for tasks/get, None for the others. Raises MCPRefusedError when
        the server answers with a JSON-RPC error (a task it does not know), MCPError when it
        cannot be asked (not connected, a timeout, the connection lost). `session`: the HTTP
        session the task was created in (2025-11-25), when it is not the live one.
        """
        token = _say_asyncio()
        try:
            client = self._client
            if client is None:
                why = self._error or "it is still starting"
                raise MCPError(self.config.scrub(f'MCP server "{self.name}" is not connected: {why}'))
            if client.protocol_version == tasks2025.PROTOCOL:
                return await self._task_request_2025(client, method, task_id, timeout, responses, session)
            request: tasks.GetTask | tasks.CancelTask | tasks.UpdateTask
            if method == "tasks/update":
                params = tasks.UpdateTaskParams(task_id=task_id, input_responses=responses or {})
                request = tasks.UpdateTask(params=params)
            elif method == "tasks/cancel":
                request = tasks.CancelTask(params=tasks.TaskIdParams(task_id=task_id))
            else:
                request = tasks.GetTask(params=tasks.TaskIdParams(task_id=task_id))
            prefix = f'MCP server "{self.name}": {method} for task {task_id}'
            try:
                with anyio.fail_after(timeout + 1.0):
                    answer = await client.session.send_request(
                        request,
                        tasks.WireTask if method == "tasks/get" else mcp_types.Result,
                        request_read_timeout_seconds=timeout,
                    )
            except SDKError as exc:
                if exc.code == mcp_types.REQUEST_TIMEOUT:
                    raise MCPError(f"{prefix} timed out after {timeout:g}s") from None
                if exc.code == mcp_types.CONNECTION_CLOSED and (
                    exc.error.message == "Connection closed" or self._client is not client
                ):
                    raise MCPError(f"{prefix}: connection lost") from None
                message = f"{prefix} failed: {exc.error.message} (JSON-RPC error {exc.code})"
                raise MCPRefusedError(self.config.scrub(message)) from None
            except TimeoutError:
                raise MCPError(f"{prefix} timed out after {timeout:g}s") from None
            except RuntimeError as exc:
                raise MCPError(self.config.scrub(f"{prefix}: connection lost ({exc})")) from None
            except pydantic.ValidationError as exc:
                raise MCPError(self.config.scrub(f"{prefix}: invalid answer: {exc}")) from None
            return tasks.state(answer) if isinstance(answer, tasks.WireTask) else None
        finally:
            sniffio.current_async_library_cvar.reset(token)

    async def _task_request_2025(
        self,
        client: Client,
        method: str,
        task_id: str,
        timeout: float,
        responses: dict[str, Any] | None,
        session: str | None,
    ) -> TaskState | None:
        """tasks/get (with tasks/result once it ended), tasks/cancel, or the answers to its
        requests for input, for a task of a 2025-11-25 server (mcp/tasks2025.py)."""
        said = "the answer" if method == "tasks/update" else method
        prefix = f'MCP server "{self.name}": {said} for task {task_id}'
        live = session is None or session == self._http_session or self.config.transport != "http"
        if method == "tasks/update":
            late = self._pending.answer(task_id, responses or {})
            for key, reply in late.items():
                await self._answer_late(prefix, task_id, key, reply, session or self._http_session, timeout)
            return None

        def opener() -> contextlib.AbstractAsyncContextManager[ClientSession]:
            return tasks2025.borrowed(client.session) if live else self._earlier_session(session or "")

        try:
            return await self._task_request_on(opener, method, task_id, timeout, session)
        except BaseException as raised:
            exc = _root_cause(raised) if isinstance(raised, BaseExceptionGroup) else raised
            if not isinstance(exc, Exception):
                raise
            failure = self._task_failure(prefix, exc, client, timeout)
            if failure is None:
                raise
            raise failure from None

    async def _task_request_on(
        self,
        opener: Callable[[], contextlib.AbstractAsyncContextManager[ClientSession]],
        method: str,
        task_id: str,
        timeout: float,
        session: str | None,
    ) -> TaskState | None:
        """One 2025-11-25 task request on the session `opener` gives."""
        with anyio.fail_after(2 * timeout + 1.0):
            async with opener() as wire:
                if method == "tasks/cancel":
                    await tasks2025.cancel(wire, task_id, timeout=timeout)
                    self._pending.forget(task_id)
                    return None
                task = await tasks2025.get(wire, task_id, timeout=timeout)
                if task.status == "input_required":
                    self._pending.follow(task_id, opener)
                if task.status == "cancelled":
                    self._pending.forget(task_id)
                if task.status not in ("completed", "failed"):
                    requests = self._pending.requests(task_id)
                    return tasks2025.state(task, requests=requests, session=session)
                result, error = self._pending.outcome(task_id)
                if result is None and error is None:
                    try:
                        result = convert.tool_result(await tasks2025.payload(wire, task_id, timeout=timeout))
                    except SDKError as exc:
                        if exc.code in (mcp_types.REQUEST_TIMEOUT, mcp_types.CONNECTION_CLOSED):
                            raise
                        error = f"{exc.error.message} (JSON-RPC error {exc.code})"
                self._pending.forget(task_id)
                if task.status == "failed" and result is not None and not result.is_error:
                    error, result = result.text or task.status_message, None
                return tasks2025.state(task, result=result, error=error, session=session)

    def _task_failure(self, prefix: str, exc: Exception, client: Client, timeout: float) -> MCPError | None:
        """The MCPError (MCPRefusedError: the server said no) for a failed 2025-11-25 task request."""
        if isinstance(exc, MCPError):
            return exc
        if isinstance(exc, SDKError):
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                return MCPError(f"{prefix} timed out after {timeout:g}s")
            if exc.code == mcp_types.CONNECTION_CLOSED and (
                exc.error.message == "Connection closed" or self._client is not client
            ):
                return MCPError(f"{prefix}: connection lost")
            message = f"{prefix} failed: {exc.error.message} (JSON-RPC error {exc.code})"
            return MCPRefusedError(self.config.scrub(message))
        if isinstance(exc, TimeoutError):
            return MCPError(f"{prefix} timed out after {timeout:g}s")
        if isinstance(exc, RuntimeError | httpx2.HTTPError | OSError):
            return MCPError(self.config.scrub(f"{prefix}: connection lost ({exc})"))
        if isinstance(exc, pydantic.ValidationError):
            return MCPError(self.config.scrub(f"{prefix}: invalid answer: {exc}"))
        return None

    async def _answer_late(
        self, prefix: str, task_id: str, key: str, reply: dict[str, Any], session: str | None, timeout: float
    ) -> None:
        """Answer a request for input that came to an earlier serve process (or on a stream since
        dropped): the JSON-RPC response, POSTed in the task's HTTP session. The SDK sends
        responses only to requests its own session received, so this one message goes as plain
        HTTP. The server takes it if it still waits (its own timeout decides: docs/tools.md)."""
        if self.config.transport != "http" or not self.config.url or session is None:
            raise MCPRefusedError(
                f"{prefix}: request for input {key} is no longer open (it came to a serve process "
                "that has ended, and a stdio server ended with it)"
            )
        body = tasks2025.late_reply(task_id, key, reply)
        headers = {
            **dict(self.config.headers),
            "mcp-session-id": session,
            "mcp-protocol-version": tasks2025.PROTOCOL,
            "accept": "application/json, text/event-stream",
        }
        try:
            async with httpx2.AsyncClient(timeout=httpx2.Timeout(timeout)) as http:
                response = await http.post(self.config.url, json=body, headers=headers)
        except httpx2.HTTPError as exc:
            raise MCPError(self.config.scrub(f"{prefix}: cannot reach {self.config.url}: {exc}")) from None
        if response.status_code >= 400:
            raise MCPRefusedError(
                f"{prefix}: the answer to {key} was refused (HTTP {response.status_code} "
                f"{response.reason_phrase}: the session is gone)"
            )

    @contextlib.asynccontextmanager
    async def _earlier_session(self, session_id: str) -> AsyncIterator[ClientSession]:
        """A client session joining the HTTP session `session_id`, which an earlier serve process
        opened (its tasks live there): no handshake, the live one's result is adopted."""
        handshake = self._handshake
        if handshake is None or not self.config.url:
            raise MCPError(f'MCP server "{self.name}" is not connected')
        headers = {
            **dict(self.config.headers),
            "mcp-session-id": session_id,
            "mcp-protocol-version": handshake.protocol_version,
        }
        refused: list[str] = []

        async def note(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                refused.append(f"{response.status_code} {response.reason_phrase}")

        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(self._connect_timeout, read=None),
            event_hooks={"response": [note]},
        )
        transport = streamable_http_client(self.config.url, http_client=http, terminate_on_close=False)
        async with (
            http,
            transport as (read, write),
            ClientSession(
                read, write, client_info=_CLIENT_INFO, elicitation_callback=self._pending.on_elicit
            ) as wire,
        ):
            wire.adopt(handshake)
            try:
                yield wire
            except SDKError:
                if refused and refused[-1][:3] in ("400", "404"):
                    # The spec's answer to an unknown session is 404; some servers say 400.
                    raise MCPRefusedError(
                        f'MCP server "{self.name}": the HTTP session the task lives in is gone '
                        f"(HTTP {refused[-1]}): the server restarted, or ended the session"
                    ) from None
                raise

    async def _call_failure(
        self, tool: str, exc: SDKError, timeout: float, client: Client, transport: StdioTransport | None
    ) -> str:
        """Say why a call failed, for the model."""
        prefix = f'MCP server "{self.name}"'
        if exc.code == mcp_types.REQUEST_TIMEOUT:
            return f'{prefix}: tool "{tool}" timed out after {timeout:g}s'
        # -32000 is also the first code of JSON-RPC's range for servers' own errors, so the code alone
        # does not say the connection closed: the SDK's own "Connection closed" or a gone session does.
        closed = exc.code == mcp_types.CONNECTION_CLOSED and (
            exc.error.message == "Connection closed" or self._client is not client
        )
        if not closed:
            return f'{prefix}: tool "{tool}" failed: {exc.error.message} (JSON-RPC error {exc.code})'
        if self._stopping:
            return f"{prefix} was stopped during the call"
        if self._reconfigure:
            return f"{prefix} was restarted during the call (its configuration changed)"
        if transport is not None:
            with anyio.move_on_after(_EXIT_CODE_WAIT):
                while transport.returncode is None:
                    await anyio.sleep(0.01)
            if transport.returncode is not None:
                return f"{prefix} exited during the call ({_exit_status(transport.returncode)})"
        detail = exc.error.message
        return f"{prefix}: connection lost during the call ({detail})"

    # --- the owner task --------------------------------------------------------------------------

    async def _run(self) -> None:
        """Keep the server connected until closed: connect, serve, back off, again."""
        _say_asyncio()  # for this task and the session's tasks it starts (they copy its context)
        attempt = 0  # failures since the last connection that stayed up
        started = False
        while not self._stopping:
            if self._reconfigure:
                # A new config is a new server: a fresh count, and no waiting.
                self._reconfigure = False
                self._restarts, attempt, started = 0, 0, False
            if started:
                self._restarts += 1
            started = True
            connected_at: float | None = None
            try:
                connected_at = await self._session()
            except Exception as exc:
                if not (self._stopping or self._reconfigure):
                    error = self.config.scrub(self._describe(exc))
                    # Once per distinct reason: a server down for an hour is one line, not 120.
                    log.log(
                        logging.DEBUG if error == self._error else logging.WARNING,
                        "MCP server %r: %s",
                        self.name,
                        error,
                    )
                    self._error = error
            finally:
                self._client = None
                self._transport = None
            if self._stopping:
                break
            self._notify()
            if self._reconfigure:
                continue
            # Backoff resets only after a connection that stayed up a while: a server that
            # crashes right after each start must not be restarted in a tight loop.
            if connected_at is not None and time.monotonic() - connected_at >= self._backoff[1]:
                attempt = 0
            await self._sleep(self._delay(attempt))
            attempt += 1
        self._error = "stopped"
        self._notify()

    async def _session(self) -> float | None:
        """Connect, list tools, serve until something ends the session; return when it connected."""
        self._wake.clear()
        self._died = self._tools_dirty = False
        self._http_status = None
        self._http_session = None
        config = self.config
        connected_at: float | None = None
        # The deadline covers the spawn, the handshake and the tool listing; once connected it is
        # lifted (a session lasts as long as it lasts). The scope encloses the Client, whose
        # task groups must be left inside the scope they were entered in.
        scope = self._scope = anyio.CancelScope(deadline=anyio.current_time() + self._connect_timeout)
        self._connecting = True
        try:
            with scope:
                async with contextlib.AsyncExitStack() as stack:
                    transport = await self._open_transport(config, stack)
                    client = await stack.enter_async_context(
                        Client(
                            transport,
                            cache=None,
                            client_info=_CLIENT_INFO,
                            message_handler=self._on_message,
                            extensions=[tasks.TasksExtension()],
                            # Declares elicitation: 2025-11-25 servers send a task's questions only
                            # then; a question outside a task is refused as before (tasks2025.py).
                            elicitation_callback=self._pending.on_elicit,
                        )
                    )
                    tools = await self._list_tools(client)
                    scope.deadline = math.inf
                    self._connecting = False
                    connected_at = time.monotonic()
                    self._connected(client, tools)
                    await self._serve(client)
        finally:
            self._scope = None
            self._connecting = False
        if scope.cancelled_caught and connected_at is None and not (self._stopping or self._reconfigure):
            raise TimeoutError(f"no answer within {self._connect_timeout:g}s (connect timeout)")
        if self._died and not self._stopping and self._transport is not None:
            self._error = self._crash_reason()
        return connected_at

    async def _open_transport(self, config: ServerConfig, stack: contextlib.AsyncExitStack) -> Transport:
        """Return the transport for `config` (entered by the Client); its resources go on `stack`."""
        if config.transport == "stdio":
            if not config.command:
                raise ValueError("transport stdio needs a command")
            transport = StdioTransport(
                config.command, config.args, dict(config.env), config.log_path, on_exit=self._on_exit
            )
            self._transport = transport
            return transport
        if config.transport == "http":
            if not config.url:
                raise ValueError("transport http needs a url")
            # No read timeout: a tool may stream for longer than any fixed bound, and each call
            # has its own deadline. Connect, write and pool waits stay bounded.
            http = httpx2.AsyncClient(
                headers=dict(config.headers),
                timeout=httpx2.Timeout(self._connect_timeout, read=None),
                event_hooks={"response": [self._on_http_response]},
            )
            await stack.enter_async_context(http)
            # No DELETE of the session when the connection closes: a 2025-11-25 server keeps its
            # tasks per session, and the next serve follows them there (mcp/tasks2025.py).
            return streamable_http_client(config.url, http_client=http, terminate_on_close=False)
        raise ValueError(f"unknown transport {config.transport!r} (expected stdio or http)")

    async def _on_http_response(self, response: httpx2.Response) -> None:
        """Remember the last HTTP error status of this session, for the error message."""
        if response.status_code >= 400:
            self._http_status = f"{response.status_code} {response.reason_phrase}"
        elif session := response.headers.get("mcp-session-id"):
            self._http_session = session

    async def _list_tools(self, client: Client) -> tuple[ToolInfo, ...]:
        """Return every tool, following `next_cursor` across pages."""
        tools: list[ToolInfo] = []
        as_tasks: set[str] = set()
        offers = tasks2025.offers_tasks(client.protocol_version, client.server_capabilities)
        cursor: str | None = None
        for _ in range(_MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(convert.tool_info(tool) for tool in page.tools)
            as_tasks.update(tool.name for tool in page.tools if offers and tasks2025.wants_task(tool))
            cursor = page.next_cursor
            if not cursor:
                break
        self._task_tools = frozenset(as_tasks)
        return tuple(tools)

    def _connected(self, client: Client, tools: tuple[ToolInfo, ...]) -> None:
        self._client = client
        self._tools = tools
        self._error = None
        self._protocol_version = client.protocol_version
        self._handshake = client.session.initialize_result
        log.info("MCP server %r: connected (%s, %d tools)", self.name, self._protocol_version, len(tools))
        self._notify()

    async def _serve(self, client: Client) -> None:
        """Wait for the session's end (stop, new config, crash), re-listing tools when they change."""
        async with anyio.create_task_group() as tg:
            capabilities = client.server_capabilities
            if (
                client.protocol_version in MODERN_PROTOCOL_VERSIONS
                and capabilities.tools is not None
                and capabilities.tools.list_changed
            ):
                # Since 2026-07-28 change notifications come only on a subscriptions/listen stream;
                # older servers send them unasked (see _on_message).
                tg.start_soon(self._listen, client)
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._stopping or self._reconfigure or self._died:
                    break
                if self._tools_dirty:
                    self._tools_dirty = False
                    if not await self._relist(client):
                        break
            tg.cancel_scope.cancel()

    async def _relist(self, client: Client) -> bool:
        """Refresh the tool list; return False when the session no longer answers."""
        try:
            with anyio.fail_after(self._connect_timeout):
                tools = await self._list_tools(client)
        except Exception as exc:
            self._error = self.config.scrub(f"tools/list failed: {self._describe(exc)}")
            log.warning("MCP server %r: %s; reconnecting", self.name, self._error)
            return False
        if tools != self._tools:
            self._tools = tools
            self._notify()
        return True

    async def _listen(self, client: Client) -> None:
        """Re-list tools on every change event; when the stream drops, probe the session."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    self._tools_dirty = True
                    self._wake.set()
        except Exception as exc:
            log.debug("MCP server %r: tool change subscription ended: %r", self.name, exc)
        # A stream that ends while the session lives is a server going away, or an HTTP session
        # that broke with no call in flight: a re-list tells which, without waiting for a call.
        self._tools_dirty = True
        self._wake.set()

    async def _on_message(self, message: IncomingMessage) -> None:
        """Notice `tools/list_changed` from servers speaking a protocol before 2026-07-28."""
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._tools_dirty = True
            self._wake.set()

    def _on_exit(self) -> None:
        """The stdio process died by itself: stop taking calls now, let the owner clean up."""
        self._died = True
        if self._client is not None:
            self._client = None
            self._error = self._crash_reason()
            self._notify()
        self._wake.set()

    def _abort_connect(self) -> None:
        """Cancel a session still connecting (a handshake can take up to the connect timeout)."""
        if self._connecting and self._scope is not None:
            self._scope.cancel()

    async def _sleep(self, delay: float) -> None:
        """Sleep `delay` seconds, or less when woken by close() or a new config."""
        self._wake.clear()
        await wait_event(self._wake, delay)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of first·2^attempt, at most the cap."""
        first, cap = self._backoff
        delay: float = min(cap, first * 2.0 ** min(attempt, 32))
        return delay / 2 + random.uniform(0, delay / 2)

    def _notify(self) -> None:
        """If state() changed: wake wait_connected() and call on_change (whose errors stay there)."""
        state = self.state()
        if state == self._published:
            return
        self._published = state
        self._changed.set()
        self._changed = asyncio.Event()
        try:
            self._on_change(self.name)
        except Exception:
            log.exception("MCP server %r: on_change callback failed", self.name)

    def _crash_reason(self) -> str:
        transport = self._transport
        code = transport.returncode if transport is not None else None
        how = _exit_status(code) if code is not None else "closed its stdout"
        where = f"; its stderr is in {self.config.log_path}" if self.config.log_path else ""
        return f"exited ({how}){where}"

    def _describe(self, exc: BaseException) -> str:
        """Say in one line why a connect or a session failed."""
        leaf = _root_cause(exc)
        config = self.config
        transport = self._transport
        if isinstance(leaf, FileNotFoundError | PermissionError) and config.transport == "stdio":
            return f'cannot start command "{config.command}": {leaf.strerror}'
        if transport is not None and transport.returncode is not None:
            where = f"; its stderr is in {config.log_path}" if config.log_path else ""
            return f"exited during start-up ({_exit_status(transport.returncode)}){where}"
        if isinstance(leaf, SDKError):
            # The SDK turns an HTTP error status into a generic JSON-RPC error; the status (a 401
            # from a wrong token, a 404 from a wrong path) is what a person can act on.
            status = f"HTTP {self._http_status}: " if self._http_status else ""
            return f"{status}{leaf.error.message} (JSON-RPC error {leaf.code})"
        if isinstance(leaf, httpx2.HTTPError):
            return f"cannot reach {config.url}: {str(leaf) or type(leaf).__name__}"
        if isinstance(leaf, TimeoutError):
            return str(leaf) or "timed out"
        return f"{type(leaf).__name__}: {leaf}"


def _say_asyncio() -> contextvars.Token[str | None]:
    """Tell anyio, through sniffio's context variable, that this task runs on asyncio.

    The SDK's calls go through anyio, which asks sniffio for the event loop on every operation
    (cancel scopes, memory streams, checkpoints), and sniffio, unless told, finds out by asking
    asyncio for the current task, which is Python code on 3.11: about a tenth of the CPU an MCP
    tool call costs this process (py-spy, ~1000 calls/s over stdio). Setting the variable is
    sniffio's documented way for an event loop to announce itself; the answer is the same, only
    cheaper. (sniffio comes with openai, a dependency; anyio uses it when it is there.)
    """
    return sniffio.current_async_library_cvar.set("asyncio")


def _root_cause(exc: BaseException) -> BaseException:
    """Return the most telling exception inside an ExceptionGroup (what the SDK's task groups raise)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_root_cause(inner) for inner in exc.exceptions]
        # "Connection closed" is the symptom; an HTTP or OS error beside it is the cause.
        for leaf in leaves:
            if not isinstance(leaf, SDKError | asyncio.CancelledError):
                return leaf
        return leaves[0]
    return exc


def _exit_status(code: int) -> str:
    """Return "exit code 3" or "killed by SIGKILL" for a return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
