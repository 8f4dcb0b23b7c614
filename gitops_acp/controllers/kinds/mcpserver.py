"""MCPServer controller: keep one MCP session per server, and publish its tools in status.

Steps: resolve the environment and headers (secrets), hand the configuration to the MCP manager
(which starts, restarts after a crash with backoff, or restarts on a changed spec, in the
background), then commit what the manager reports: connected or not, why, and the tool list with
schemas and annotations. The manager wakes this controller whenever a session connects, drops or
changes its tools, so the status follows the process without polling. A server removed from `main`
is stopped and its status file deleted.
"""

from __future__ import annotations

from collections.abc import Iterable

from gitops_acp.controllers.base import DONE, Context, Key, Result, forget
from gitops_acp.errors import SecretError
from gitops_acp.mcp import ServerConfig, ServerState
from gitops_acp.resources.meta import Condition, Kind
from gitops_acp.resources.models import AnyResource, MCPServer, MCPServerStatus, MCPTool
from gitops_acp.secrets import SecretResolver

__all__ = ["MCPServerController", "server_config"]


def server_config(server: MCPServer, ctx: Context) -> ServerConfig:
    """The session configuration of an MCPServer resource; raises SecretError for a missing secret."""
    spec = server.spec
    name = server.metadata.name
    owner = f'MCPServer "{name}"'
    log_dir = ctx.settings.log_dir
    return ServerConfig(
        name=name,
        transport=str(spec.transport),
        command=spec.command,
        args=tuple(spec.args),
        env=tuple((var.name, _value(var, ctx.secrets, owner)) for var in spec.env),
        url=spec.url,
        headers=tuple((var.name, _value(var, ctx.secrets, owner)) for var in spec.headers),
        log_path=(log_dir / f"mcp-{name}.log") if log_dir is not None else None,
        max_concurrent_calls=spec.max_concurrent_calls,
    )


def _value(var: object, secrets: SecretResolver, owner: str) -> str:
    value = getattr(var, "value", None)
    if value is not None:
        return str(value)
    ref = var.value_from.secret_key_ref  # type: ignore[attr-defined]
    return secrets.resolve(ref.name, ref.key, owner=owner)


def _checked(server: MCPServer) -> tuple[str, str | None, list[str], str | None]:
    """What the policy looks at: the transport, the command, the env variable names, the URL."""
    spec = server.spec
    return str(spec.transport), spec.command, [var.name for var in spec.env], spec.url


def _status(state: ServerState | None, previous: MCPServerStatus | None) -> MCPServerStatus:
    if state is None:
        return MCPServerStatus(connected=False, status=Condition.Pending, status_detail="Starting")
    if state.connected:
        tools = [
            MCPTool(
                name=t.name, description=t.description, input_schema=t.input_schema, annotations=t.annotations
            )
            for t in state.tools
        ]
        return MCPServerStatus(
            connected=True,
            status=Condition.Ready,
            status_detail=f"Connected successfully with {len(tools)} tools",
            tools=tools,
            max_concurrent_calls=state.call_limit,
        )
    # Keep the last known tools: the catalog stays the same across a restart, while `connected`
    # says the tools can't be called right now.
    tools = previous.tools if previous is not None else []
    limit = state.call_limit
    if state.error:
        return MCPServerStatus(
            connected=False,
            status=Condition.Error,
            status_detail=state.error,
            tools=tools,
            max_concurrent_calls=limit,
        )
    return MCPServerStatus(
        connected=False,
        status=Condition.Pending,
        status_detail="Connecting",
        tools=tools,
        max_concurrent_calls=limit,
    )


class MCPServerController:
    """Starts, restarts and stops MCP sessions; commits their state."""

    kind = Kind.MCPServer

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        assert isinstance(obj, MCPServer)
        if obj.spec.approval_contact_channel is not None:
            yield (Kind.ContactChannel, obj.spec.approval_contact_channel.name)

    async def reconcile(self, name: str, ctx: Context) -> Result:
        loaded = ctx.state.desired(Kind.MCPServer, name)
        if loaded is None:
            await ctx.mcp.stop(name)
            return await forget(Kind.MCPServer, name, ctx)
        assert isinstance(loaded.resource, MCPServer)
        server = loaded.resource
        observed = ctx.state.observed(Kind.MCPServer, name)
        previous = observed.status if isinstance(observed, MCPServer) else None
        try:
            config = server_config(server, ctx)
        except SecretError as exc:
            await ctx.mcp.stop(name)
            status = MCPServerStatus(connected=False, status=Condition.Error, status_detail=str(exc))
            await ctx.state.checkpoint(server.model_copy(update={"status": status}))
            return Result(ctx.settings.error_retry, progress=False)
        policy = ctx.settings.policy
        refused = policy.refuse_mcp(*_checked(server)) if policy is not None else None
        if refused is not None:  # never spawned, never connected: a person changes the spec or the policy
            await ctx.mcp.stop(name)
            status = MCPServerStatus(connected=False, status=Condition.Error, status_detail=refused)
            await ctx.state.checkpoint(server.model_copy(update={"status": status}))
            return DONE
        learned = previous.max_concurrent_calls if previous is not None else None
        ctx.mcp.ensure(config, learned_limit=learned)
        status = _status(ctx.mcp.state(name), previous)
        await ctx.state.checkpoint(server.model_copy(update={"status": status}))
        return DONE
