"""The `MCPServer` kind: how to reach an MCP server, and which of its tools need approval.

`headers`, `approval` and `timeout` are ours. The status records the tool list, so the catalog an
agent sees is reproducible after a restart and visible in git.
"""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gitops_acp.resources import secretscan
from gitops_acp.resources.common import (
    Duration,
    LocalObjectReference,
    Resource,
    SecretKeyRef,
    SpecModel,
    StatusModel,
    duration_seconds,
)
from gitops_acp.resources.meta import Condition

__all__ = [
    "EnvVar",
    "EnvVarSource",
    "MCPApproval",
    "MCPServer",
    "MCPServerSpec",
    "MCPServerStatus",
    "MCPTool",
    "ResourceRequirements",
    "Transport",
]


class Transport(StrEnum):
    """How the reconciler talks to an MCP server."""

    STDIO = "stdio"  # a child process speaking MCP on stdin/stdout
    HTTP = "http"  # Streamable HTTP (ACP's `http` was the older SSE transport)


class EnvVarSource(SpecModel):
    """Where a value comes from when it is a secret."""

    secret_key_ref: SecretKeyRef
    """The secret: `<secrets-dir>/<name>/<key>`, or the environment variable `<key>`."""


class EnvVar(SpecModel):
    """A name with a literal value or a secret reference (an env var, or an HTTP header)."""

    name: str = Field(min_length=1)
    """The variable or header name."""
    value: str | None = None
    """A literal value; refused when the name says it is a secret."""
    value_from: EnvVarSource | None = None
    """A secret reference, resolved when the server is started."""

    @field_validator("value")
    @classmethod
    def _no_literal_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name", "")
        if value and secretscan.is_secret_name(name):
            raise ValueError(
                f"{name} looks like a secret, and literal secrets are refused: use valueFrom.secretKeyRef "
                "(the value goes in --secrets-dir or the environment)"
            )
        return value

    @model_validator(mode="after")
    def _value_or_secret(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"{self.name}: set exactly one of value or valueFrom")
        return self


class ResourceRequirements(SpecModel):
    """ACP's container-style resource requests; accepted so ACP manifests load, not enforced."""

    limits: dict[str, str | int | float] = Field(default_factory=dict)
    """Upper bounds, e.g. `{cpu: 500m, memory: 512Mi}` (unused)."""
    requests: dict[str, str | int | float] = Field(default_factory=dict)
    """Reservations (unused)."""


class MCPApproval(SpecModel):
    """Which of the server's tools need a human's approval (glob patterns on bare tool names)."""

    tools: list[str] = Field(default_factory=list)
    """Tools that need approval; empty means all of them."""
    except_: list[str] = Field(default_factory=list, alias="except")
    """Tools that never need approval, even when `tools` matches them."""


class MCPServerSpec(SpecModel):
    """An MCP server: how to reach it, and which of its tools need approval."""

    transport: Transport
    """stdio (a child process) or http (Streamable HTTP)."""
    command: str | None = None
    """The program to start (stdio)."""
    args: list[str] = Field(default_factory=list)
    """Its arguments (stdio)."""
    env: list[EnvVar] = Field(default_factory=list)
    """Environment of the child process (stdio); secrets through valueFrom."""
    headers: list[EnvVar] = Field(default_factory=list)
    """HTTP headers sent with each request (http); secrets through valueFrom."""
    url: str | None = None
    """The endpoint (http), e.g. `http://localhost:8000/mcp`."""
    resources: ResourceRequirements | None = None
    """ACP's resource requests; accepted, not enforced."""
    approval_contact_channel: LocalObjectReference | None = None
    """The ContactChannel that approves calls to this server's tools."""
    approval: MCPApproval | None = None
    """Which tools need approval; without it, all do when a channel is set."""
    timeout: Duration | None = None
    """Longest one tool call may take ("30s", or seconds); kept as written."""
    max_concurrent_calls: int | None = Field(default=None, ge=1, le=1024)
    """Calls sent to the server at once; the others wait, still Pending. Unset: learned (docs/tools.md)."""

    @model_validator(mode="after")
    def _transport_needs(self) -> MCPServerSpec:
        if self.transport is Transport.STDIO and not self.command:
            raise ValueError("transport stdio needs command")
        if self.transport is Transport.HTTP and not self.url:
            raise ValueError("transport http needs url")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.approval is not None and self.approval_contact_channel is None:
            raise ValueError("approval needs approvalContactChannel: name the ContactChannel that decides")
        return self

    @property
    def timeout_seconds(self) -> float | None:
        """Return `timeout` in seconds, or None when unset."""
        return duration_seconds(self.timeout)

    def needs_approval(self, tool: str) -> bool:
        """Return whether a call to `tool` (the bare MCP tool name) waits for a human."""
        if self.approval_contact_channel is None:
            return False
        if self.approval is None:
            return True
        listed = not self.approval.tools or any(fnmatch.fnmatchcase(tool, p) for p in self.approval.tools)
        return listed and not any(fnmatch.fnmatchcase(tool, p) for p in self.approval.except_)


class MCPTool(StatusModel):
    """A tool the server offered, as `tools/list` described it."""

    name: str
    """The tool's name on the server (without the `<server>__` prefix)."""
    description: str | None = None
    """The server's description, shown to the LLM."""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    """JSON schema of the arguments."""
    annotations: dict[str, Any] | None = None
    """MCP hints (readOnlyHint, idempotentHint, ...): decide whether a call may be repeated."""


class MCPServerStatus(StatusModel):
    """What the reconciler found when it connected."""

    connected: bool = False
    """Whether the last connection attempt succeeded."""
    status: Condition | None = None
    """Ready, Error or Pending."""
    status_detail: str | None = None
    """Why, in words."""
    tools: list[MCPTool] = Field(default_factory=list)
    """The tools listed at the last connection."""
    max_concurrent_calls: int | None = None
    """Calls sent to it at once: spec.maxConcurrentCalls, or as learned from its latencies."""


class MCPServer(Resource):
    """An `MCPServer` resource."""

    kind: Literal["MCPServer"] = "MCPServer"
    spec: MCPServerSpec
    status: MCPServerStatus | None = None
