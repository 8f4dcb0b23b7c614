"""The plain values the MCP layer hands to the controllers, and what it takes from them.

Frozen dataclasses, no SDK types: controllers read tools and results without importing `mcp`
(DESIGN §8 keeps the SDK inside this package), and a `ServerConfig` is a value the MCPServer
controller builds from the resource and can compare. Values resolved from secrets sit in
`env` and `headers`; they are left out of `repr` and `fingerprint()` is a salted digest, so neither
a log line nor a status file can carry one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["InputRequest", "ServerConfig", "ServerState", "TaskState", "ToolInfo", "ToolResult"]

# Per-process salt, as in gitops_acp/secrets.py: a fingerprint says "changed or not" within one run
# and cannot be matched against a guess of a secret offline.
_SALT = os.urandom(32)

# Secret values shorter than this are not scrubbed from error text: "1" or "true" would otherwise
# blank out exit codes and words; real credentials are much longer.
_MIN_SCRUB_LENGTH = 6


@dataclass(frozen=True)
class ServerConfig:
    """How to reach one MCP server: the MCPServer resource with its secrets resolved."""

    name: str
    transport: str  # "stdio" | "http" (Streamable HTTP)
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    log_path: Path | None = None
    # Calls the server takes at once (spec.maxConcurrentCalls); None: learned (mcp/gate.py). Not
    # part of the fingerprint: changing it never restarts the server.
    max_concurrent_calls: int | None = None

    def fingerprint(self) -> str:
        """Return a salted digest of every field, to notice a changed spec or a rotated secret."""
        material = json.dumps(
            [
                self.name,
                self.transport,
                self.command,
                list(self.args),
                [list(pair) for pair in self.env],
                self.url,
                [list(pair) for pair in self.headers],
                str(self.log_path) if self.log_path is not None else None,
            ]
        )
        return hmac.new(_SALT, material.encode(), hashlib.sha256).hexdigest()[:16]

    def scrub(self, text: str) -> str:
        """Return `text` with every env and header value of this config replaced by `***`.

        Each whitespace-separated word of a value counts too: "Bearer <token>" must not leak the
        token when an error quotes only the token.
        """
        secrets: set[str] = set()
        for _, value in (*self.env, *self.headers):
            secrets.update(part for part in (value, *value.split()) if len(part) >= _MIN_SCRUB_LENGTH)
        # Longest first, so a value is replaced whole before any of its words.
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class ToolInfo:
    """One tool as the server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]  # the JSON Schema as sent: arrays, anyOf, nested objects, $defs
    # camelCase keys as in the MCP spec (title, readOnlyHint, destructiveHint, idempotentHint,
    # openWorldHint); None when the server sent none. Hints only: trust them from trusted servers.
    annotations: dict[str, Any] | None


@dataclass(frozen=True)
class ServerState:
    """What the MCPServer controller writes to status: a snapshot, taken whenever asked."""

    connected: bool
    tools: tuple[ToolInfo, ...]  # the last listing; kept while disconnected (check `connected`)
    error: str | None  # why it is not connected (the last failure); None when connected
    restarts: int  # starts after the first one for this config (crashes, failed connects)
    protocol_version: str | None  # as negotiated, e.g. "2026-07-28" or "2025-11-25"
    call_limit: int = 1  # calls it is sent at once (configured or learned: mcp/gate.py)


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer, as text for the model."""

    text: str
    is_error: bool  # the tool reported a failure (isError); `text` says what
    # Set when the server ran the call as an MCP task (the tasks extension, or a 2025-11-25
    # task-augmented call: mcp/tasks2025.py) instead of answering:
    # the result comes later, from get_task(task.task_id). `text` is then empty.
    task: TaskState | None = None


@dataclass(frozen=True)
class InputRequest:
    """One request for input a server made during a task (an elicitation, as the spec calls it)."""

    key: str  # the server's key for it, unique over the task's lifetime
    method: str  # "elicitation/create" (what the reconciler answers); anything else is declined
    message: str  # what the server asks, for a person
    schema: dict[str, Any] | None  # `requestedSchema`: the form's JSON Schema (flat object)


@dataclass(frozen=True)
class TaskState:
    """An MCP task as the server last described it (`tasks/get`, or the handle `tools/call` returned)."""

    task_id: str
    status: str  # working, input_required, completed, failed, cancelled
    status_message: str | None = None
    poll_interval: float | None = None  # seconds the server suggests between looks
    result: ToolResult | None = None  # completed: the tool's result
    error: str | None = None  # failed: the JSON-RPC error, as text
    input_requests: tuple[InputRequest, ...] = ()  # input_required: what it waits for
    # The Streamable HTTP session the task lives in, for a server that keeps tasks per session
    # (2025-11-25 task-augmented calls): a restarted serve asks in that session. None otherwise.
    session: str | None = None

    @property
    def terminal(self) -> bool:
        """Whether the task has ended (completed, failed or cancelled)."""
        return self.status in ("completed", "failed", "cancelled")
