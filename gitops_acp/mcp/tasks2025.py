"""MCP tasks of protocol 2025-11-25: task-augmented `tools/call`, `tasks/get`, `tasks/result`.

In 2025-11-25 tasks are in the core protocol. A server advertises
`capabilities.tasks.requests.tools.call`; each tool says in `execution.taskSupport` whether it may
(`optional`) or must (`required`) run as a task. The client asks for one by adding `task: {ttl}`
to the call's params:

    tools/call {task: {ttl}} ──► CreateTaskResult {task: {taskId, status, pollInterval}}
    tasks/get    ──► working | input_required | completed | failed | cancelled (no result in it)
    tasks/result ──► blocks until the task ends, then the tool's CallToolResult; while it waits the
                     server sends its requests for input (elicitation/create, carrying
                     `_meta["io.modelcontextprotocol/related-task"]`) on that request's stream
    tasks/cancel

gitops-acp calls every tool whose `taskSupport` is `required` or `optional` as a task when the
server advertises task-augmented `tools/call` (an optional one too: a long-running tool is what
it is for, and a task survives a restart of `serve` where a plain call does not).

The SDK (mcp 2.3) types these messages but does not dispatch them. What it offers is enough:
`send_request` with the SDK's own request models (`CallToolRequestParams.task`, the `tasks/*`
requests). One wrinkle: `send_request` checks a `tools/call` answer against the negotiated
version's `CallToolResult` before anything else sees it, so a `CreateTaskResult` (which has no
`content`) fails that check; the raw answer is the input of the check's validation error
(`created_from`), where nothing of the SDK is patched or bypassed.

Servers on the TypeScript SDK keep tasks per Streamable HTTP session, so a task's `TaskState`
carries the session it was created in (committed with its id); a restarted `serve` asks in that
session (connection.py joins it without a handshake, adopting the live one's).

Requests for input: a task that is `input_required` has sent (or will send) an
`elicitation/create` request on the stream of a `tasks/result` request, once. `Pending` keeps that
request open while the task asks; the sessions' elicitation callback turns each request into an
`InputRequest` (key `elicitation-<JSON-RPC id>`) and waits for `answer`. A request that came to an
earlier serve process (or on a stream that has since dropped) is not sent again; its answer goes
as a JSON-RPC response with that id (`late_reply`), which the server matches by id alone. Whether
the server still waits is its own affair (the TypeScript SDK gives up after 60 s by default and
the tool goes on without the answer): docs/tools.md, "Questions from 2025-11-25 tasks".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import mcp_types
import pydantic
from mcp import MCPError as SDKError
from mcp.client.session import ClientRequestContext, ClientSession
from mcp_types import CallToolResult, RequestParams, Result

from gitops_acp.errors import MCPRefusedError
from gitops_acp.mcp import convert
from gitops_acp.mcp.models import InputRequest, TaskState, ToolResult

__all__ = [
    "PROTOCOL",
    "Pending",
    "Task",
    "cancel",
    "create",
    "get",
    "offers_tasks",
    "payload",
    "wants_task",
]

log = logging.getLogger(__name__)

PROTOCOL = "2025-11-25"
RELATED_TASK = "io.modelcontextprotocol/related-task"
#: An input request's key: this prefix and the JSON-RPC id of the server's elicitation/create.
_KEY_PREFIX = "elicitation-"
#: How long gitops-acp asks the server to keep a task after it was created (its `ttl`): a day, so
#: a restarted `serve` finds it; the server may shorten it.
TTL_MS = 24 * 3600 * 1000

#: A function that opens the session a task lives in (the live one, or the one it was created in).
Opener = Callable[[], contextlib.AbstractAsyncContextManager[ClientSession]]


class Task(Result):
    """A task as 2025-11-25 describes it (`tasks/get`, `tasks/cancel`, inside `CreateTaskResult`)."""

    task_id: str
    status: str
    status_message: str | None = None
    created_at: str | None = None
    last_updated_at: str | None = None
    ttl: int | None = None
    poll_interval: int | None = None


class CreateTaskResult(Result):
    task: Task


class TaskIdParams(RequestParams):
    task_id: str


class GetTask(mcp_types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams


class TaskPayload(mcp_types.Request[TaskIdParams, Literal["tasks/result"]]):
    method: Literal["tasks/result"] = "tasks/result"
    params: TaskIdParams


class CancelTask(mcp_types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams


def offers_tasks(protocol: str | None, capabilities: mcp_types.ServerCapabilities | None) -> bool:
    """Whether a server on `protocol` takes task-augmented `tools/call` requests."""
    if protocol != PROTOCOL or capabilities is None or capabilities.tasks is None:
        return False
    requests = capabilities.tasks.requests
    return requests is not None and requests.tools is not None and requests.tools.call is not None


def wants_task(tool: mcp_types.Tool) -> bool:
    """Whether gitops-acp calls `tool` as a task (its taskSupport is required or optional)."""
    execution = tool.execution
    return execution is not None and execution.task_support in ("required", "optional")


def created_from(exc: pydantic.ValidationError) -> CreateTaskResult | None:
    """The `CreateTaskResult` a `tools/call` answer was, read from the SDK's failed result check."""
    for error in exc.errors():
        raw = error.get("input")
        if error.get("loc") == ("content",) and isinstance(raw, dict) and isinstance(raw.get("task"), dict):
            try:
                return CreateTaskResult.model_validate(raw, by_name=False)
            except pydantic.ValidationError:
                return None
    return None


async def create(
    session: ClientSession, tool: str, arguments: dict[str, Any], *, timeout: float
) -> CallToolResult | Task:
    """Call `tool` as a task: its handle, or its result when the server answered plainly."""
    request = mcp_types.CallToolRequest(
        params=mcp_types.CallToolRequestParams(
            name=tool, arguments=arguments, task=mcp_types.TaskMetadata(ttl=TTL_MS)
        )
    )
    try:
        return await session.send_request(request, CallToolResult, request_read_timeout_seconds=timeout)
    except pydantic.ValidationError as exc:
        created = created_from(exc)
        if created is None:
            raise
        return created.task


async def get(session: ClientSession, task_id: str, *, timeout: float) -> Task:
    """`tasks/get`."""
    request = GetTask(params=TaskIdParams(task_id=task_id))
    return await session.send_request(request, Task, request_read_timeout_seconds=timeout)


async def payload(session: ClientSession, task_id: str, *, timeout: float | None) -> CallToolResult:
    """`tasks/result`: the tool's result once the task has ended (blocks until then)."""
    request = TaskPayload(params=TaskIdParams(task_id=task_id))
    return await session.send_request(request, CallToolResult, request_read_timeout_seconds=timeout)


async def cancel(session: ClientSession, task_id: str, *, timeout: float) -> None:
    """`tasks/cancel`."""
    request = CancelTask(params=TaskIdParams(task_id=task_id))
    await session.send_request(request, Result, request_read_timeout_seconds=timeout)


def state(
    task: Task,
    *,
    result: ToolResult | None = None,
    error: str | None = None,
    requests: tuple[InputRequest, ...] = (),
    session: str | None = None,
) -> TaskState:
    """The plain value of a 2025-11-25 task."""
    interval = task.poll_interval / 1000 if task.poll_interval and task.poll_interval > 0 else None
    return TaskState(
        task_id=task.task_id,
        status=task.status,
        status_message=task.status_message,
        poll_interval=interval,
        result=result,
        error=error,
        input_requests=requests,
        session=session,
    )


@dataclass
class _Ask:
    request: InputRequest
    answer: asyncio.Future[dict[str, Any]]


@dataclass
class _Follow:
    """The `tasks/result` request kept open for one task, and what came of it."""

    runner: asyncio.Task[None]
    asks: dict[str, _Ask] = field(default_factory=dict)
    result: ToolResult | None = None
    error: str | None = None


class Pending:
    """The requests for input of one server's 2025-11-25 tasks, while this process lives.

    `follow(task_id, opener)` keeps a `tasks/result` request open for a task that is
    `input_required`; `on_elicit` (the sessions' elicitation callback) turns each request that
    names one of these tasks into an `InputRequest` and waits for `answer`.
    """

    def __init__(self) -> None:
        self._follows: dict[str, _Follow] = {}

    def follow(self, task_id: str, opener: Opener) -> None:
        """Open `tasks/result` for `task_id` in the background, unless it is open already."""
        current = self._follows.get(task_id)
        if current is not None and not current.runner.done():
            return
        runner = asyncio.get_running_loop().create_task(
            self._fetch(task_id, opener), name=f"tasks/result {task_id}"
        )
        self._follows[task_id] = _Follow(runner=runner)

    async def _fetch(self, task_id: str, opener: Opener) -> None:
        try:
            async with opener() as session:
                result = await payload(session, task_id, timeout=None)
        except SDKError as exc:
            follow = self._follows.get(task_id)
            if follow is not None and exc.code != mcp_types.CONNECTION_CLOSED:
                follow.error = f"{exc.error.message} (JSON-RPC error {exc.code})"
            log.debug("tasks/result for %s ended: %s", task_id, exc)
        except Exception as exc:  # a lost connection: the next look opens it again
            log.debug("tasks/result for %s ended: %r", task_id, exc)
        else:
            follow = self._follows.get(task_id)
            if follow is not None:
                follow.result = convert.tool_result(result)
        finally:
            follow = self._follows.get(task_id)
            if follow is not None:
                for ask in follow.asks.values():
                    if not ask.answer.done():
                        ask.answer.cancel()
                follow.asks.clear()

    def outcome(self, task_id: str) -> tuple[ToolResult | None, str | None]:
        """The result (or JSON-RPC error) the open `tasks/result` got, if it has ended."""
        follow = self._follows.get(task_id)
        if follow is None or not follow.runner.done():
            return None, None
        return follow.result, follow.error

    def requests(self, task_id: str) -> tuple[InputRequest, ...]:
        """The requests for input of `task_id` waiting for an answer, oldest first."""
        follow = self._follows.get(task_id)
        if follow is None:
            return ()
        return tuple(ask.request for ask in follow.asks.values() if not ask.answer.done())

    def answer(self, task_id: str, responses: dict[str, Any]) -> dict[str, Any]:
        """Hand each answer to the callback waiting for it; return those nobody here waits for
        (the request came to an earlier serve process, or on a stream that has since dropped)."""
        follow = self._follows.get(task_id)
        late: dict[str, Any] = {}
        for key, reply in responses.items():
            ask = follow.asks.get(key) if follow is not None else None
            if ask is None or ask.answer.done():
                late[key] = reply
            else:
                ask.answer.set_result(reply)
        return late

    def forget(self, task_id: str) -> None:
        """Stop following `task_id` (cancelled, or its result taken)."""
        follow = self._follows.pop(task_id, None)
        if follow is not None and not follow.runner.done():
            follow.runner.cancel()

    async def aclose(self) -> None:
        """Stop every `tasks/result` request (the connection is closing)."""
        runners = [follow.runner for follow in self._follows.values()]
        self._follows.clear()
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(BaseException):
                await runner

    async def on_elicit(
        self, context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        """The sessions' elicitation callback: a task's request waits for a person's answer."""
        meta = context.meta or params.meta or {}
        related = meta.get(RELATED_TASK) if isinstance(meta, dict) else None
        task_id = related.get("taskId") if isinstance(related, dict) else None
        follow = self._follows.get(task_id) if isinstance(task_id, str) else None
        if follow is None:
            # Not a task's: a question inside a plain call is not put to anyone (docs/tools.md).
            return mcp_types.ErrorData(code=mcp_types.INVALID_REQUEST, message="Elicitation not supported")
        if not isinstance(params, mcp_types.ElicitRequestFormParams):
            return mcp_types.ElicitResult(action="decline")  # a URL to open: nobody here to open it
        key = f"{_KEY_PREFIX}{json.dumps(context.request_id)}"
        wanted: Any = params.requested_schema
        schema = (
            wanted.model_dump(by_alias=True, exclude_none=True)
            if isinstance(wanted, pydantic.BaseModel)
            else wanted
        )
        request = InputRequest(key=key, method="elicitation/create", message=params.message, schema=schema)
        ask = _Ask(request=request, answer=asyncio.get_running_loop().create_future())
        follow.asks[key] = ask
        try:
            reply = await ask.answer
        except asyncio.CancelledError:
            follow.asks.pop(key, None)
            raise
        follow.asks.pop(key, None)
        return mcp_types.ElicitResult.model_validate(reply)


def late_reply(task_id: str, key: str, reply: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC response answering the request `key` names, for a process that did not get
    it: the server matches a response to its request by id alone, whichever connection brings it.

    Raises MCPRefusedError when `key` names no request this way."""
    try:
        request_id = json.loads(key.removeprefix(_KEY_PREFIX)) if key.startswith(_KEY_PREFIX) else None
    except ValueError:
        request_id = None
    if not isinstance(request_id, int | str) or isinstance(request_id, bool):
        raise MCPRefusedError(f"MCP task {task_id} has no request for input {key}")
    result = mcp_types.ElicitResult.model_validate(reply).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    result["_meta"] = {RELATED_TASK: {"taskId": task_id}}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


@contextlib.asynccontextmanager
async def borrowed(session: ClientSession) -> AsyncIterator[ClientSession]:
    """An opener's context for a session someone else owns (the live one)."""
    yield session
