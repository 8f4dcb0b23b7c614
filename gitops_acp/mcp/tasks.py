"""MCP tasks on the wire: the tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28).

Since protocol 2026-07-28 tasks are an extension (SEP-2663). The client declares it in each
request's capabilities; a server that advertises it may answer any `tools/call` with a task handle
(`resultType: "task"`) instead of the result; the client then follows the task:

    tools/call ──► {resultType: task, taskId, status: working}      (the caller commits taskId)
    tasks/get  ──► working | input_required {inputRequests} | completed {result} | failed {error}
                   | cancelled                                      (polled, pollIntervalMs apart)
    tasks/update {taskId, inputResponses}                           (answers to inputRequests)
    tasks/cancel {taskId}

The SDK (mcp 2.3) carries no tasks API: it offers the extension points (a `ResultClaim` for the
new result shape, `send_request` for any method), and the wire shapes below follow the
extension's schema. The 2025-11-25 protocol had tasks in its core (`execution.taskSupport`,
task-augmented requests, `tasks/result`, questions sent on its stream): mcp/tasks2025.py speaks
those. Both hand the same plain values up (`TaskState`, `InputRequest`): the Connection picks the
protocol by what the server negotiated, and the controllers never know which it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import mcp_types
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp_types import CallToolResult, RequestParams, Result

from gitops_acp.mcp import convert
from gitops_acp.mcp.models import InputRequest, TaskState

__all__ = [
    "EXTENSION",
    "CancelTask",
    "GetTask",
    "TaskCreated",
    "TasksExtension",
    "UpdateTask",
    "WireTask",
    "state",
]

EXTENSION = "io.modelcontextprotocol/tasks"


class _Task(Result):
    """What every description of a task carries."""

    task_id: str
    status: str
    status_message: str | None = None
    created_at: str | None = None
    last_updated_at: str | None = None
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class WireTask(_Task):
    """A task as `tasks/get` describes it, with its result, error or input requests."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    input_requests: dict[str, Any] | None = None


class CreateTaskResult(_Task):
    """The handle a server returns in lieu of a `CallToolResult` (the SDK forbids a claim to name
    `inputRequests`, a field of its core results: a new task's input requests come from tasks/get)."""

    result_type: Literal["task"] = "task"


class TaskCreated(Exception):
    """Raised by the claim's resolver so the call path gets the handle, not a result."""

    def __init__(self, handle: CreateTaskResult) -> None:
        super().__init__(f"MCP task {handle.task_id} created")
        self.handle = handle


async def _resolve(handle: CreateTaskResult, context: ClaimContext) -> CallToolResult:
    # The SDK would have the claim finish the call here (wait for the result); the reconciler must
    # commit the task id first, so the handle is handed up instead.
    raise TaskCreated(handle)


class TasksExtension(ClientExtension):
    """Declares the tasks extension on every request and claims the `task` result shape."""

    identifier = EXTENSION

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=_resolve)]


class TaskIdParams(RequestParams):
    task_id: str


class UpdateTaskParams(RequestParams):
    task_id: str
    input_responses: dict[str, Any]


class GetTask(mcp_types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams


class UpdateTask(mcp_types.Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams


class CancelTask(mcp_types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams


def state(task: _Task) -> TaskState:
    """Return the plain value of a wire task: its result as text, its input requests read."""
    if not isinstance(task, WireTask):
        task = WireTask.model_validate(task.model_dump(by_alias=True))
    result = None
    if task.result is not None:
        result = convert.tool_result(CallToolResult.model_validate(task.result, by_name=False))
    error = None
    if task.error is not None:
        message = task.error.get("message")
        code = task.error.get("code")
        error = f"{message if isinstance(message, str) else task.error} (JSON-RPC error {code})"
    requests: list[InputRequest] = []
    for key, request in sorted((task.input_requests or {}).items()):
        body = request if isinstance(request, dict) else {}
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        assert isinstance(params, dict)
        message = params.get("message")
        schema = params.get("requestedSchema")
        requests.append(
            InputRequest(
                key=str(key),
                method=str(body.get("method", "")),
                message=message if isinstance(message, str) else "",
                schema=schema if isinstance(schema, dict) else None,
            )
        )
    interval = task.poll_interval_ms / 1000 if task.poll_interval_ms and task.poll_interval_ms > 0 else None
    return TaskState(
        task_id=task.task_id,
        status=task.status,
        status_message=task.status_message,
        poll_interval=interval,
        result=result,
        error=error,
        input_requests=tuple(requests),
    )
