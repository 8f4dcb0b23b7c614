"""Running MCP tool calls durably: intent before effect, and never a non-idempotent tool twice.

    Pending ──(connected, room on it)──► Running (attempt n, committed) ──► call ──► Succeeded | Failed
                                      │
       found Running at a reconcile ──┤ the last invocation was interrupted (a crash, a shutdown):
                                      ├─ tool annotated readOnlyHint/idempotentHint: run again, attempt n+1
                                      └─ otherwise: Failed "interrupted: outcome unknown, not re-run"

A call the server runs as an MCP task (its answer is a task handle) is followed by
controllers/mcptasks.py: its task id is committed before any wait, and a call found `Running` with
one is followed again after a restart, never run again.

"Room on it": calls that cannot be re-run wait, still Pending, while the server is busy (its
limit: spec.maxConcurrentCalls, or learned; mcp/gate.py), so only a call whose request was handed
to a server with room can end "outcome unknown". A key is reconciled by one worker at a time, so
a call found `Running` is never one still running in this process. Every failure — isError, a
JSON-RPC error, a timeout, a crashed server — ends `Failed` with the error text, which is what the
model reads (ACP gave it an empty string).
"""

from __future__ import annotations

import json
import time

from gitops_acp.controllers import approval, mcptasks
from gitops_acp.controllers.base import DONE, Context, Result, rfc3339
from gitops_acp.controllers.calls import finish
from gitops_acp.controllers.catalog import Entry, entry_for_call
from gitops_acp.errors import MCPError
from gitops_acp.mcp.models import TaskState
from gitops_acp.resources.meta import Condition, Kind, ToolCallPhase
from gitops_acp.resources.models import MCPServer, ToolCall, ToolCallStatus
from gitops_acp.telemetry import metrics

__all__ = ["INTERRUPTED", "MCPExecutor"]

INTERRUPTED = "interrupted: outcome unknown, not re-run"


class MCPExecutor:
    """Executes `<server>__<tool>` calls through the MCP manager's sessions."""

    def entry(self, call: ToolCall, ctx: Context) -> Entry | None:
        """The catalog entry of the call, or None when the task's agent has no such MCP tool."""
        entry = entry_for_call(call.spec.task_ref.name, call.spec.tool_ref.name, ctx)
        return entry if entry is not None and entry.type == "MCP" else None

    def offers(self, call: ToolCall, ctx: Context) -> bool:
        return self.entry(call, ctx) is not None

    async def execute(self, call: ToolCall, ctx: Context) -> Result:
        entry = self.entry(call, ctx)
        status = call.status or ToolCallStatus()
        if entry is None:  # the agent stopped offering the tool while the call waited
            interrupted = status.phase == ToolCallPhase.Running
            await finish(
                call, ctx, error=INTERRUPTED if interrupted else f'unknown tool "{call.spec.tool_ref.name}"'
            )
            return DONE
        if status.mcp_task is not None and status.phase == ToolCallPhase.Running:
            return await mcptasks.follow(call, entry, ctx)  # the server's task: never a second run
        if status.mcp_task is not None and status.phase == ToolCallPhase.AwaitingHumanInput:
            return await mcptasks.check_answer(call, entry, ctx)
        if status.phase == ToolCallPhase.Running and not entry.idempotent:
            await finish(call, ctx, error=INTERRUPTED)
            return DONE
        if status.phase in (ToolCallPhase.Pending, ToolCallPhase.AwaitingHumanApproval):
            needed, channel = approval.needs_approval(entry, ctx)
            if needed and status.phase == ToolCallPhase.Pending:
                return await approval.request(call, entry, channel, ctx)
            if needed:
                outcome = await approval.check(call, channel, ctx)
                if isinstance(outcome, Result):
                    return outcome
                call, status = outcome, outcome.status or ToolCallStatus()
        if not _connected(entry, ctx):
            waiting = status.model_copy(update={"status_detail": _not_connected(entry, ctx)})
            if waiting != status:
                await ctx.state.checkpoint(call.model_copy(update={"status": waiting}))
            return DONE  # the server's status change wakes this call (dependency index)
        # Room on the server first, Running second: a call queued behind a busy server never ran,
        # and must not be declared "outcome unknown" after a crash (mcp/gate.py).
        gate = ctx.mcp.gate(entry.target)
        if not gate.free(safe=entry.idempotent):
            detail = (
                f'Waiting for MCP server "{entry.target}": it takes {gate.limit} call(s) at once, '
                f"{gate.inflight} in flight, {gate.waiting} waiting"
            )
            if status.status_detail != detail:
                status = status.model_copy(update={"status_detail": detail})
                call = call.model_copy(update={"status": status})
                await ctx.state.checkpoint(call)
        ticket = await gate.acquire(safe=entry.idempotent)
        latency: float | None = None
        error: str | None = None
        text = ""
        handle: TaskState | None = None
        try:
            if not _connected(entry, ctx):  # it went away while the call waited
                return DONE
            running = status.model_copy(
                update={
                    "phase": ToolCallPhase.Running,
                    "status": Condition.Pending,
                    "status_detail": f"Calling {entry.tool} on MCP server {entry.target}"
                    + (
                        f" (attempt {status.attempt + 1}, the previous one was interrupted)"
                        if status.attempt
                        else ""
                    ),
                    "attempt": status.attempt + 1,
                    "start_time": status.start_time or rfc3339(ctx.now()),
                }
            )
            call = call.model_copy(update={"status": running})
            await ctx.state.checkpoint(call)  # intent before effect
            arguments = json.loads(call.spec.arguments or "{}")
            sent = time.monotonic()
            try:
                result = await ctx.mcp.call_tool(
                    entry.target, entry.tool, arguments, timeout=_timeout(entry, ctx)
                )
            except MCPError as exc:
                error = str(exc)
            else:
                handle = result.task
                # A task handle comes back at once: its latency says nothing about the server's room.
                latency = time.monotonic() - sent if handle is None else None
                text = result.text
                if result.is_error:
                    error = text or "the tool reported an error"
            if handle is None:  # a task is counted when it ends (controllers/mcptasks.py)
                metrics.tool_call(entry.target, entry.tool, time.monotonic() - sent, ok=error is None)
        finally:
            gate.release(ticket, latency=latency)
        if handle is not None:
            return await mcptasks.started(call, entry, ctx, handle)
        if error is not None:
            await finish(call, ctx, error=error)
        else:
            await finish(call, ctx, result=text)
        return DONE


def _connected(entry: Entry, ctx: Context) -> bool:
    state = ctx.mcp.state(entry.target)
    return state is not None and state.connected


def _not_connected(entry: Entry, ctx: Context) -> str:
    state = ctx.mcp.state(entry.target)
    why = (state.error if state is not None else None) or "starting"
    return f'Waiting for MCP server "{entry.target}" to connect ({why})'


def _timeout(entry: Entry, ctx: Context) -> float:
    loaded = ctx.state.desired(Kind.MCPServer, entry.target)
    server = loaded.resource if loaded is not None else None
    seconds = server.spec.timeout_seconds if isinstance(server, MCPServer) else None
    return seconds if seconds is not None else ctx.settings.tool_timeout
