"""Agent controller: an agent is Ready when its LLM, tools, channels and sub-agents are.

Unlike ACP, a missing dependency is not an error that sticks: the agent waits in `Pending` and is
woken the moment the dependency appears or becomes ready (the reactor's dependency index), with no
polling delay. A sub-agent cycle (A delegates to B delegates to A) is an Error named as such,
instead of two agents waiting for each other forever.
"""

from __future__ import annotations

from collections.abc import Iterable

from gitops_acp.controllers.base import DONE, Context, Key, Result, forget
from gitops_acp.controllers.catalog import DELEGATE_PREFIX, HUMAN_CONTACT_SUFFIX, name_problem
from gitops_acp.resources.meta import Condition, Kind
from gitops_acp.resources.models import (
    LLM,
    Agent,
    AgentStatus,
    AnyResource,
    ContactChannel,
    MCPServer,
    ValidContactChannel,
    ValidMCPServer,
    ValidSubAgent,
)

__all__ = ["AgentController", "find_cycle"]


class AgentController:
    """Validates an agent's dependencies and publishes its tool sources."""

    kind = Kind.Agent

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        assert isinstance(obj, Agent)
        spec = obj.spec
        yield (Kind.LLM, spec.llm_ref.name)
        yield from ((Kind.MCPServer, ref.name) for ref in spec.mcp_servers)
        yield from ((Kind.ContactChannel, ref.name) for ref in spec.human_contact_channels)
        yield from ((Kind.Agent, ref.name) for ref in spec.sub_agents)

    async def reconcile(self, name: str, ctx: Context) -> Result:
        loaded = ctx.state.desired(Kind.Agent, name)
        if loaded is None:
            return await forget(Kind.Agent, name, ctx)
        assert isinstance(loaded.resource, Agent)
        agent = loaded.resource
        status = self._validate(agent, ctx)
        await ctx.state.checkpoint(agent.model_copy(update={"status": status}))
        return DONE

    def _validate(self, agent: Agent, ctx: Context) -> AgentStatus:
        spec = agent.spec
        cycle = find_cycle(agent.metadata.name, ctx)
        if cycle:
            return _status(Condition.Error, "sub-agent cycle: " + " -> ".join(cycle))

        llm = ctx.state.observed(Kind.LLM, spec.llm_ref.name)
        if ctx.state.desired(Kind.LLM, spec.llm_ref.name) is None:
            return _status(Condition.Pending, f'waiting for LLM "{spec.llm_ref.name}" (not found)')
        if not isinstance(llm, LLM) or llm.status is None or llm.status.status != Condition.Ready:
            return _status(
                Condition.Pending, f'waiting for LLM "{spec.llm_ref.name}" to become ready{_why(llm)}'
            )

        sub_agents: list[ValidSubAgent] = []
        for ref in spec.sub_agents:
            sub = ctx.state.observed(Kind.Agent, ref.name)
            if ctx.state.desired(Kind.Agent, ref.name) is None:
                return _status(Condition.Pending, f'waiting for sub-agent "{ref.name}" (not found)')
            if not isinstance(sub, Agent) or sub.status is None or sub.status.status != Condition.Ready:
                return _status(
                    Condition.Pending, f'waiting for sub-agent "{ref.name}" to become ready{_why(sub)}'
                )
            sub_agents.append(ValidSubAgent(name=ref.name))

        servers: list[ValidMCPServer] = []
        for ref in spec.mcp_servers:
            server = ctx.state.observed(Kind.MCPServer, ref.name)
            if ctx.state.desired(Kind.MCPServer, ref.name) is None:
                return _status(Condition.Pending, f'waiting for MCPServer "{ref.name}" (not found)')
            # A server that connected once keeps its recorded tools while it restarts: the agent stays
            # Ready and tool calls wait for the reconnection instead of finding no such tool.
            status = server.status if isinstance(server, MCPServer) else None
            if status is None or not (status.connected or status.tools):
                return _status(
                    Condition.Pending, f'waiting for MCPServer "{ref.name}" to connect{_why(server)}'
                )
            servers.append(ValidMCPServer(name=ref.name, tools=[tool.name for tool in status.tools]))

        channels: list[ValidContactChannel] = []
        for ref in spec.human_contact_channels:
            channel = ctx.state.observed(Kind.ContactChannel, ref.name)
            if ctx.state.desired(Kind.ContactChannel, ref.name) is None:
                return _status(Condition.Pending, f'waiting for ContactChannel "{ref.name}" (not found)')
            if not isinstance(channel, ContactChannel) or channel.status is None or not channel.status.ready:
                return _status(
                    Condition.Pending,
                    f'waiting for ContactChannel "{ref.name}" to become ready{_why(channel)}',
                )
            channels.append(ValidContactChannel(name=ref.name, type=str(channel.spec.type)))

        names = [f"{s.name}__{tool}" for s in servers for tool in s.tools]
        names += [DELEGATE_PREFIX + s.name for s in sub_agents]
        names += [c.name + HUMAN_CONTACT_SUFFIX for c in channels]
        problems = [p for p in map(name_problem, names) if p]
        if problems:
            return _status(Condition.Error, "; ".join(problems))

        return AgentStatus(
            ready=True,
            status=Condition.Ready,
            status_detail="All dependencies validated successfully",
            valid_mcp_servers=servers,
            valid_human_contact_channels=channels,
            valid_sub_agents=sub_agents,
        )


def find_cycle(start: str, ctx: Context) -> list[str]:
    """Return the sub-agent path from `start` back to itself, or [] when there is no cycle."""
    path: list[str] = [start]

    def visit(name: str) -> list[str]:
        loaded = ctx.state.desired(Kind.Agent, name)
        if loaded is None or not isinstance(loaded.resource, Agent):
            return []
        for ref in loaded.resource.spec.sub_agents:
            if ref.name == start:
                return [*path, start]
            if ref.name in path:
                continue  # a cycle that does not pass through `start` is reported by its own members
            path.append(ref.name)
            found = visit(ref.name)
            if found:
                return found
            path.pop()
        return []

    return visit(start)


def _status(condition: Condition, detail: str) -> AgentStatus:
    return AgentStatus(ready=False, status=condition, status_detail=detail)


def _why(obj: AnyResource | None) -> str:
    """Say what the dependency itself reports, so one `get agents` shows the root cause."""
    status = getattr(obj, "status", None)
    if status is None or not getattr(status, "status_detail", None):
        return ""
    return f" ({status.status}: {status.status_detail})"
