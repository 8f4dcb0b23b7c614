"""ToolCall controller: run one tool call durably, and tell the model what happened.

ToolCalls exist only on the status branch: the task controller creates them, in the same commit
as the assistant message that asked for them. This controller moves each one to a terminal phase;
every terminal checkpoint wakes the task, which appends the results in the LLM's order.

Execution goes through executors registered per tool type (MCP, sub-agents, humans). A call whose
tool is not offered to the agent, or whose arguments are not a JSON object, fails with a message the
model can read and act on (ACP handed the model an empty string instead).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Protocol

from gitops_acp.controllers.base import DONE, Context, Key, Result, rfc3339
from gitops_acp.resources.meta import TERMINAL_TOOLCALL_PHASES, Condition, Kind, ToolCallPhase, ToolType
from gitops_acp.resources.models import AnyResource, ToolCall, ToolCallStatus

__all__ = ["Executor", "ToolCallController"]


class Executor(Protocol):
    """Runs tool calls of one tool type; returns the call with its next status."""

    def offers(self, call: ToolCall, ctx: Context) -> bool:
        """Whether the call's tool is available to the task's agent."""
        ...

    async def execute(self, call: ToolCall, ctx: Context) -> Result:
        """Move the call forward, committing each checkpoint through `ctx`."""
        ...


class ToolCallController:
    """Dispatches tool calls to the executor of their type."""

    kind = Kind.ToolCall

    def __init__(self, executors: Mapping[ToolType, Executor] | None = None) -> None:
        self._executors = dict(executors or {})

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        return ()

    async def reconcile(self, name: str, ctx: Context) -> Result:
        call = ctx.observed(Kind.ToolCall, name)
        if not isinstance(call, ToolCall) or call.status is None:
            return DONE
        if call.status.phase in TERMINAL_TOOLCALL_PHASES:
            return DONE
        executor = self._executors.get(call.spec.tool_type)
        tool = call.spec.tool_ref.name
        if executor is None or not executor.offers(call, ctx):
            await _fail(call, ctx, f'unknown tool "{tool}": the agent has no tool of that name')
            return DONE
        if not _is_json_object(call.spec.arguments):
            await _fail(
                call,
                ctx,
                f'invalid arguments for "{tool}": expected a JSON object, got {call.spec.arguments!r}',
            )
            return DONE
        return await executor.execute(call, ctx)


async def _fail(call: ToolCall, ctx: Context, error: str) -> None:
    status = call.status or ToolCallStatus()
    failed = status.model_copy(
        update={
            "phase": ToolCallPhase.Failed,
            "status": Condition.Error,
            "status_detail": error,
            "error": error,
            "start_time": status.start_time or rfc3339(ctx.now()),
            "completion_time": rfc3339(ctx.now()),
        }
    )
    await ctx.checkpoint(call.model_copy(update={"status": failed}))  # the reactor wakes the task


def _is_json_object(arguments: str) -> bool:
    try:
        return isinstance(json.loads(arguments or "{}"), dict)
    except ValueError:
        return False
