"""Ending a tool call: the one place that writes a terminal ToolCall status."""

from __future__ import annotations

from gitops_acp.controllers.base import Context, rfc3339
from gitops_acp.resources.meta import Condition, ToolCallPhase
from gitops_acp.resources.models import ToolCall, ToolCallStatus

__all__ = ["cannot_ask", "finish"]


async def finish(
    call: ToolCall,
    ctx: Context,
    *,
    result: str | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> None:
    """Commit the call as Succeeded (with `result`) or, when `error` is given, Failed; the task is woken."""
    status = call.status or ToolCallStatus()
    ok = error is None
    done = status.model_copy(
        update={
            "phase": ToolCallPhase.Succeeded if ok else ToolCallPhase.Failed,
            "status": Condition.Succeeded if ok else Condition.Error,
            "status_detail": error if not ok else (detail or "Tool call succeeded"),
            "result": result,
            "error": error,
            "start_time": status.start_time or rfc3339(ctx.now()),
            "completion_time": rfc3339(ctx.now()),
        }
    )
    await ctx.state.checkpoint(call.model_copy(update={"status": done}))


async def cannot_ask(call: ToolCall, ctx: Context, reason: str, *, phase: ToolCallPhase) -> None:
    """Commit the call as `phase` (ErrorRequestingHumanApproval / ...Input): nobody could be asked.

    Terminal, with `reason` as the error the model reads.
    """
    status = call.status or ToolCallStatus()
    failed = status.model_copy(
        update={
            "phase": phase,
            "status": Condition.Error,
            "status_detail": reason,
            "error": reason,
            "start_time": status.start_time or rfc3339(ctx.now()),
            "completion_time": rfc3339(ctx.now()),
        }
    )
    await ctx.state.checkpoint(call.model_copy(update={"status": failed}))
