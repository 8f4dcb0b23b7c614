"""`MCPManager`: the MCP servers the reconciler needs, kept running, and tool calls onto them.

The MCPServer controller calls `ensure(config)` on every reconcile (cheap: it only compares a
fingerprint) and reads `state(name)` for the status it commits; `on_change` tells it when to look
again (connected, crashed, tools changed, a new learned call limit). The ToolCall controller
takes room on the server's `gate` (mcp/gate.py) and then calls `call_tool`. Each server is a
`connection.Connection` with its own owner task; this module is the registry around them.

Importing this module does not import the SDK: `gitops_acp.mcp.connection` (and with it `mcp`,
close to a second of imports) is loaded on the first `ensure`, so commands that never start an
MCP server do not pay for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gitops_acp.errors import MCPError
from gitops_acp.mcp.gate import CallGate
from gitops_acp.mcp.models import ServerConfig, ServerState, TaskState, ToolResult

if TYPE_CHECKING:
    from gitops_acp.mcp.connection import Connection

__all__ = ["MCPManager"]


class MCPManager:
    """Start, watch, restart and stop MCP servers; route tool calls to their sessions."""

    def __init__(
        self,
        *,
        on_change: Callable[[str], None] = lambda name: None,
        restart_backoff: tuple[float, float] = (0.5, 30.0),
        connect_timeout: float = 30.0,
    ) -> None:
        first, cap = restart_backoff
        if not 0 < first <= cap:
            raise ValueError(
                f"restart_backoff must be (first, cap) with 0 < first <= cap, got {restart_backoff}"
            )
        self._on_change = on_change
        self._backoff = restart_backoff
        self._connect_timeout = connect_timeout
        self._servers: dict[str, Connection] = {}
        self._gates: dict[str, CallGate] = {}  # kept across restarts of a server: what was learned

    def ensure(self, config: ServerConfig, *, learned_limit: int | None = None) -> None:
        """Start the server if new, restart it if its config changed, else do nothing; never waits.

        Must be called from the event loop: the server's owner task is created on it.
        `learned_limit`: the call limit an earlier run learned (from status), for a new gate.
        """
        gate = self._gates.get(config.name)
        if gate is None:
            name = config.name
            gate = self._gates[name] = CallGate(on_learned=lambda: self._on_change(name))
            if learned_limit is not None:
                gate.seed(learned_limit)
        gate.fixed = config.max_concurrent_calls
        current = self._servers.get(config.name)
        if current is None:
            from gitops_acp.mcp.connection import Connection

            self._servers[config.name] = Connection(
                config,
                on_change=self._on_change,
                restart_backoff=self._backoff,
                connect_timeout=self._connect_timeout,
            )
        elif current.fingerprint != config.fingerprint():
            current.reconfigure(config)

    def state(self, name: str) -> ServerState | None:
        """Return the server's state, or None when it was never ensured (or was stopped)."""
        connection = self._servers.get(name)
        if connection is None:
            return None
        return dataclasses.replace(connection.state(), call_limit=self._gates[name].limit)

    def gate(self, name: str) -> CallGate:
        """The admission line of server `name` (one at a time for a server not ensured yet: kept, so
        every caller waits in the same line)."""
        return self._gates.setdefault(name, CallGate(1))

    def names(self) -> list[str]:
        """Return the names of the servers this manager runs."""
        return sorted(self._servers)

    async def call_tool(
        self, server: str, tool: str, arguments: dict[str, Any], *, timeout: float
    ) -> ToolResult:
        """Call `tool` on `server` and return its result (is_error when the tool failed).

        Raises MCPError, with a message for the model, when the server is unknown or not
        connected, on a JSON-RPC error, on timeout, or when the server dies during the call.
        """
        connection = self._servers.get(server)
        if connection is None:
            raise MCPError(f'MCP server "{server}" is not connected: no such MCP server is running')
        return await connection.call_tool(tool, arguments, timeout=timeout)

    async def get_task(
        self, server: str, task_id: str, *, timeout: float, session: str | None = None
    ) -> TaskState:
        """Ask `server` how its MCP task `task_id` is doing (`tasks/get`).

        Raises MCPRefusedError when the server answers with an error (it does not know the task),
        MCPError when it cannot be asked now (not connected, a timeout, the connection lost).
        `session`: the task's `TaskState.session`, when it has one (2025-11-25 over HTTP).
        """
        connection = self._connection(server)
        state = await connection.task_request("tasks/get", task_id, timeout=timeout, session=session)
        assert state is not None
        return state

    async def answer_task(
        self,
        server: str,
        task_id: str,
        responses: dict[str, Any],
        *,
        timeout: float,
        session: str | None = None,
    ) -> None:
        """Send the answers to a task's input requests (`tasks/update`; for a 2025-11-25 task, the
        replies to its pending elicitations); errors as get_task's."""
        await self._connection(server).task_request(
            "tasks/update", task_id, timeout=timeout, responses=responses, session=session
        )

    async def cancel_task(
        self, server: str, task_id: str, *, timeout: float, session: str | None = None
    ) -> None:
        """Ask `server` to cancel its MCP task `task_id` (`tasks/cancel`); errors as get_task's."""
        await self._connection(server).task_request("tasks/cancel", task_id, timeout=timeout, session=session)

    def _connection(self, server: str) -> Connection:
        connection = self._servers.get(server)
        if connection is None:
            raise MCPError(f'MCP server "{server}" is not connected: no such MCP server is running')
        return connection

    async def wait_connected(self, name: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for `name` to be connected; return whether it is."""
        connection = self._servers.get(name)
        if connection is None:
            return False
        return await connection.wait_connected(timeout)

    async def stop(self, name: str) -> None:
        """Stop the server and forget it; its process and the children it left are gone on return."""
        connection = self._servers.pop(name, None)
        self._gates.pop(name, None)
        if connection is not None:
            await connection.close()

    async def aclose(self) -> None:
        """Stop every server (concurrently); afterwards no process started here is alive."""
        connections = list(self._servers.values())
        self._servers.clear()
        await asyncio.gather(*(connection.close() for connection in connections))
