"""The `Agent` kind: an LLM, a system prompt, the tools it may call, and its budgets.

`limits` is ours (ACP has no budget); the status lists which dependencies were usable at the last
check, which is what the tool catalog is built from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gitops_acp.resources.common import (
    Duration,
    Int,
    LocalObjectReference,
    Resource,
    SpecModel,
    StatusModel,
    duration_seconds,
)
from gitops_acp.resources.meta import Condition

__all__ = [
    "Agent",
    "AgentLimits",
    "AgentSpec",
    "AgentStatus",
    "ValidContactChannel",
    "ValidMCPServer",
    "ValidSubAgent",
]


class AgentLimits(SpecModel):
    """Budgets that end a task with `Cancelled` when exceeded (ACP has none)."""

    max_turns: Int | None = Field(default=None, ge=1)
    """Most LLM calls one task may make."""
    max_tokens: Int | None = Field(default=None, ge=1)
    """Most tokens (prompt + completion, summed over turns) one task may use."""
    timeout: Duration | None = None
    """Longest wall-clock time from a task's start to its end: "30m", or seconds; kept as written."""

    @property
    def timeout_seconds(self) -> float | None:
        """Return `timeout` in seconds, or None when unset."""
        return duration_seconds(self.timeout)


class AgentSpec(SpecModel):
    """An agent: an LLM, a system prompt, and the tools it may call."""

    llm_ref: LocalObjectReference
    """The LLM the agent talks to."""
    system: str = Field(min_length=1)
    """The system prompt."""
    mcp_servers: list[LocalObjectReference] = Field(default_factory=list)
    """MCP servers whose tools the agent may call (`<server>__<tool>`)."""
    human_contact_channels: list[LocalObjectReference] = Field(default_factory=list)
    """ContactChannels the agent may ask questions through (`<channel>__human_contact`)."""
    sub_agents: list[LocalObjectReference] = Field(default_factory=list)
    """Agents it may delegate to (`delegate_to_agent__<agent>`)."""
    description: str | None = None
    """What this agent does; the tool description when another agent delegates to it."""
    limits: AgentLimits = Field(default_factory=AgentLimits)
    """Per-task budgets."""


class ValidMCPServer(StatusModel):
    """An MCP server the agent can use, with the tools it offered."""

    name: str
    """The MCPServer's name."""
    tools: list[str] = Field(default_factory=list)
    """Its tool names (without the server prefix)."""


class ValidContactChannel(StatusModel):
    """A contact channel the agent can use."""

    name: str
    """The ContactChannel's name."""
    type: str | None = None
    """Its type: git, slack or email."""


class ValidSubAgent(StatusModel):
    """A sub-agent the agent can delegate to."""

    name: str
    """The Agent's name."""


class AgentStatus(StatusModel):
    """What the reconciler found when it checked the agent's dependencies."""

    ready: bool = False
    """Whether tasks can run on this agent."""
    status: Condition | None = None
    """Ready, Error or Pending."""
    status_detail: str | None = None
    """Why, in words (e.g. which dependency is missing)."""
    valid_mcp_servers: list[ValidMCPServer] = Field(default_factory=list, alias="validMCPServers")
    """MCP servers that were connected at the last check, with their tools."""
    valid_human_contact_channels: list[ValidContactChannel] = Field(default_factory=list)
    """Contact channels that were ready at the last check."""
    valid_sub_agents: list[ValidSubAgent] = Field(default_factory=list)
    """Sub-agents that were ready at the last check."""


class Agent(Resource):
    """An `Agent` resource."""

    kind: Literal["Agent"] = "Agent"
    spec: AgentSpec
    status: AgentStatus | None = None
