"""ToolCall controller: run one tool call durably, and tell the model what happened.

ToolCalls exist only on the status branch: the task controller creates them, in the same commit
as the assistant message that asked for them. This controller moves each one to a terminal phase
through the executor of its type (MCP tools, sub-agents, questions to humans); every
checkpoint wakes the task, which appends the results in the LLM's order once all are terminal.

A call whose tool the agent does not offer, or whose arguments are not a JSON object, fails with a
message the model can read and act on (ACP handed the model an empty string instead).

Once a call that waited on a person is terminal (its checkpoint committed), its pull request is
closed if still open and its branch deleted (controllers/cleanup.py), retried until done; a call
that ended before the MCP task running it (its Task was cancelled) cancels that task
(controllers/mcptasks.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Protocol

from gitops_acp.controllers import cleanup, mcptasks
from gitops_acp.controllers.base import DONE, Context, Key, Result
from gitops_acp.controllers.calls import finish
from gitops_acp.controllers.catalog import split_mcp_name
from gitops_acp.resources.meta import TERMINAL_TOOLCALL_PHASES, Kind, ToolCallPhase, ToolType
from gitops_acp.resources.models import AnyResource, ToolCall

__all__ = ["Executor", "ToolCallController"]


class Executor(Protocol):
    """Runs tool calls of one tool type, committing each checkpoint through `ctx`."""

    def offers(self, call: ToolCall, ctx: Context) -> bool:
        """Whether the call's tool is available to the task's agent."""
        ...

    async def execute(self, call: ToolCall, ctx: Context) -> Result:
        """Move the call forward (it is known to be offered, with valid arguments, when Pending)."""
        ...


class ToolCallController:
    """Dispatches tool calls to the executor of their type."""

    kind = Kind.ToolCall

    def __init__(self, executors: Mapping[ToolType, Executor] | None = None) -> None:
        self._executors = dict(executors or {})

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        assert isinstance(obj, ToolCall)
        if obj.spec.tool_type == ToolType.MCP:
            yield (Kind.MCPServer, split_mcp_name(obj.spec.tool_ref.name)[0])
        if obj.spec.tool_type == ToolType.HumanContact:
            yield (Kind.ContactChannel, split_mcp_name(obj.spec.tool_ref.name)[0])

    async def reconcile(self, name: str, ctx: Context) -> Result:
        call = ctx.state.observed(Kind.ToolCall, name)
        if not isinstance(call, ToolCall) or call.status is None:
            return DONE
        if call.status.phase in TERMINAL_TOOLCALL_PHASES:
            cancelling = await mcptasks.cancel_if_unfinished(call, ctx)  # its Task was cancelled
            if cancelling is not None:
                return cancelling
            return await cleanup.tidy(call, ctx, just_ended=False)
        executor = self._executors.get(call.spec.tool_type)
        tool = call.spec.tool_ref.name
        if call.status.phase == ToolCallPhase.Pending:
            if executor is None or not executor.offers(call, ctx):
                await finish(call, ctx, error=f'unknown tool "{tool}": the agent has no tool of that name')
                return DONE
            if not _is_json_object(call.spec.arguments):
                got = call.spec.arguments[:500]
                await finish(
                    call, ctx, error=f'invalid arguments for "{tool}": expected a JSON object, got {got!r}'
                )
                return DONE
        if executor is None:
            await finish(call, ctx, error=f"no executor for tool type {call.spec.tool_type}")
            return DONE
        result = await executor.execute(call, ctx)
        ended = ctx.state.observed(Kind.ToolCall, name)
        # Ended in this reconcile (its terminal checkpoint committed): now its branch may go.
        if isinstance(ended, ToolCall) and ended.status and ended.status.phase in TERMINAL_TOOLCALL_PHASES:
            tidied = await cleanup.tidy(ended, ctx, just_ended=True)
            return tidied if tidied.requeue_after is not None else result
        return result


def _is_json_object(arguments: str) -> bool:
    try:
        return isinstance(json.loads(arguments or "{}"), dict)
    except ValueError:
        return False
