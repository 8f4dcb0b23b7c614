"""MCPServer controller (placeholder until MCP sessions are built).

An MCP server's tools are offered to agents only once a session to it is connected and its tools
are listed. This version does not start MCP sessions yet, so every MCPServer reports `Pending` with
a reason saying so, and agents that use one wait (visibly) instead of running without their tools.
"""

from __future__ import annotations

from collections.abc import Iterable

from gitops_acp.controllers.base import DONE, Context, Key, Result
from gitops_acp.resources.meta import Condition, Kind
from gitops_acp.resources.models import AnyResource, MCPServer, MCPServerStatus

__all__ = ["MCPServerController"]


class MCPServerController:
    """Reports MCP servers as not connected, with the reason."""

    kind = Kind.MCPServer

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        assert isinstance(obj, MCPServer)
        if obj.spec.approval_contact_channel is not None:
            yield (Kind.ContactChannel, obj.spec.approval_contact_channel.name)

    async def reconcile(self, name: str, ctx: Context) -> Result:
        loaded = ctx.desired(Kind.MCPServer, name)
        if loaded is None:
            if ctx.observed(Kind.MCPServer, name) is not None:
                await ctx.remove(Kind.MCPServer, name, reason="removed from main")
            return DONE
        assert isinstance(loaded.resource, MCPServer)
        status = MCPServerStatus(
            connected=False,
            status=Condition.Pending,
            status_detail="MCP sessions are not supported by this version yet",
        )
        await ctx.checkpoint(loaded.resource.model_copy(update={"status": status}))
        return DONE
