"""The tools an agent offers its LLM, under ACP's names, built from committed status.

    <mcpserver>__<tool>           every tool of each connected MCP server the agent lists
    <channel>__human_contact      each ready human contact channel, described by its context text
    delegate_to_agent__<agent>    each ready sub-agent, described by its `description`

The catalog is read from the status branch (the MCPServer's recorded tool list, the agent's
valid* lists), never from live connections: after a restart the model sees the same tools, and the
catalog that produced an answer is in git. Schemas pass through untouched (arrays, anyOf, nested
objects). Names are checked against the providers' rule (`^[a-zA-Z0-9_-]{1,64}$`) when the agent is
validated, so a bad name is an agent error, not a 400 in the middle of a task.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gitops_acp.controllers.base import Context
from gitops_acp.llm.client import ToolSpec
from gitops_acp.resources.meta import Kind, ToolType
from gitops_acp.resources.models import Agent, ContactChannel, MCPServer, MCPTool, Task

__all__ = [
    "DELEGATE_PREFIX",
    "HUMAN_CONTACT_SUFFIX",
    "Catalog",
    "Entry",
    "agent_catalog",
    "catalog_of",
    "entry_for_call",
    "name_problem",
    "split_mcp_name",
]

DELEGATE_PREFIX = "delegate_to_agent__"
HUMAN_CONTACT_SUFFIX = "__human_contact"
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"type": "string", "description": "What to ask or tell the agent."}},
    "required": ["message"],
}
_QUESTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"type": "string", "description": "The message or question for the human."}},
    "required": ["message"],
}
#: ACP's default descriptions, and ours for git channels.
_CONTACT_DEFAULTS = {
    "slack": "Contact a human via Slack",
    "email": "Contact a human via email",
    "git": "Ask a human a question: a person reads it in the repository and writes the answer",
}


@dataclass(frozen=True)
class Entry:
    """One function the LLM may call, and where it leads."""

    function: str  # the name the LLM sees
    type: ToolType
    description: str
    parameters: dict[str, Any] = field(hash=False, compare=False)
    target: str  # the MCP server, or the sub-agent
    tool: str = ""  # the MCP tool's own name
    annotations: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    def spec(self) -> ToolSpec:
        """The tool as the LLM client sends it."""
        return ToolSpec(name=self.function, description=self.description, parameters=self.parameters)

    @property
    def idempotent(self) -> bool:
        """Whether running it twice is harmless (MCP's readOnlyHint or idempotentHint)."""
        hints = self.annotations or {}
        return bool(hints.get("readOnlyHint") or hints.get("idempotentHint"))


def split_mcp_name(function: str) -> tuple[str, str]:
    """`server__tool` → (server, tool); resource names cannot contain `_`, so the first `__` splits."""
    server, _, tool = function.partition("__")
    return server, tool


def name_problem(function: str) -> str | None:
    """Why providers would refuse this function name, or None."""
    if len(function) > 64:
        return f'tool name "{function}" is {len(function)} characters long; LLM providers allow 64'
    if not _FUNCTION_NAME.fullmatch(function):
        return (
            f'tool name "{function}" has characters LLM providers refuse (allowed: letters, digits, _ and -)'
        )
    return None


def mcp_entries(server: MCPServer) -> list[Entry]:
    """The functions one MCP server contributes, from its recorded tool list."""
    tools: list[MCPTool] = server.status.tools if server.status else []
    name = server.metadata.name
    return [
        Entry(
            function=f"{name}__{tool.name}",
            type=ToolType.MCP,
            description=tool.description or "",
            parameters=tool.input_schema or {"type": "object", "properties": {}},
            target=name,
            tool=tool.name,
            annotations=tool.annotations,
        )
        for tool in tools
    ]


@dataclass(frozen=True)
class Catalog:
    """An agent's functions by name, and the same as the LLM client sends them (in the same order)."""

    entries: Mapping[str, Entry]
    tools: tuple[ToolSpec, ...]


# agent name -> (the objects the catalog was built from, the catalog). Resources are never changed
# in place (a checkpoint or a new commit of main replaces the object), so the same objects, by
# identity, give the same catalog; holding them also keeps their ids from being reused. Two LLM
# turns a task asked for it twice each, at ~0.3 ms a build with a dozen MCP tools.
_CATALOGS: dict[str, tuple[tuple[object, ...], Catalog]] = {}


def agent_catalog(agent: Agent, ctx: Context) -> Mapping[str, Entry]:
    """Every function `agent` offers, by name (in a stable order: servers, then sub-agents)."""
    return catalog_of(agent, ctx).entries


def catalog_of(agent: Agent, ctx: Context) -> Catalog:
    """`agent`'s catalog, rebuilt only when something it is built from changed."""
    spec = agent.spec
    inputs = (
        agent,
        ctx.state.observed(Kind.Agent, agent.metadata.name),
        *(ctx.state.observed(Kind.MCPServer, ref.name) for ref in spec.mcp_servers),
        *(ctx.state.desired(Kind.ContactChannel, ref.name) for ref in spec.human_contact_channels),
        *(ctx.state.desired(Kind.Agent, ref.name) for ref in spec.sub_agents),
    )
    cached = _CATALOGS.get(agent.metadata.name)
    if cached is not None and len(cached[0]) == len(inputs) and all(map(operator.is_, cached[0], inputs)):
        return cached[1]
    entries = _build(agent, ctx)
    catalog = Catalog(entries=MappingProxyType(entries), tools=tuple(e.spec() for e in entries.values()))
    _CATALOGS[agent.metadata.name] = (inputs, catalog)
    return catalog


def _build(agent: Agent, ctx: Context) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    observed = ctx.state.observed(Kind.Agent, agent.metadata.name)
    status = observed.status if isinstance(observed, Agent) and observed.status else None
    valid_servers = {v.name for v in status.valid_mcp_servers} if status else set()
    valid_agents = {v.name for v in status.valid_sub_agents} if status else set()
    valid_channels = {v.name for v in status.valid_human_contact_channels} if status else set()
    for ref in agent.spec.mcp_servers:
        server = ctx.state.observed(Kind.MCPServer, ref.name)
        if ref.name in valid_servers and isinstance(server, MCPServer):
            entries.update((e.function, e) for e in mcp_entries(server))
    for ref in agent.spec.human_contact_channels:
        channel = ctx.state.desired(Kind.ContactChannel, ref.name)
        if (
            ref.name not in valid_channels
            or channel is None
            or not isinstance(channel.resource, ContactChannel)
        ):
            continue
        function = ref.name + HUMAN_CONTACT_SUFFIX
        entries[function] = Entry(
            function=function,
            type=ToolType.HumanContact,
            description=contact_description(channel.resource),
            parameters=_QUESTION_SCHEMA,
            target=ref.name,
        )
    for ref in agent.spec.sub_agents:
        sub = ctx.state.desired(Kind.Agent, ref.name)
        if ref.name not in valid_agents or sub is None or not isinstance(sub.resource, Agent):
            continue
        function = DELEGATE_PREFIX + ref.name
        description = sub.resource.spec.description or f'Delegate a task to the agent "{ref.name}".'
        entries[function] = Entry(
            function=function,
            type=ToolType.DelegateToAgent,
            description=description,
            parameters=_MESSAGE_SCHEMA,
            target=ref.name,
        )
    return entries


def contact_description(channel: ContactChannel) -> str:
    """The human contact tool's description: the channel's context text (ACP's fields), or a default."""
    spec = channel.spec
    context = None
    if spec.slack is not None:
        context = spec.slack.context_about_channel_or_user
    if spec.email is not None:
        context = context or spec.email.context_about_user
    return context or _CONTACT_DEFAULTS.get(str(spec.type), _CONTACT_DEFAULTS["git"])


def entry_for_call(task_name: str, function: str, ctx: Context) -> Entry | None:
    """The catalog entry a tool call of `task_name` names, or None when its agent offers no such tool."""
    loaded = ctx.state.desired(Kind.Task, task_name)
    task = loaded.resource if loaded is not None else ctx.state.observed(Kind.Task, task_name)
    if not isinstance(task, Task):
        return None
    agent = ctx.state.desired(Kind.Agent, task.spec.agent_ref.name)
    if agent is None or not isinstance(agent.resource, Agent):
        return None
    return agent_catalog(agent.resource, ctx).get(function)
