"""MCP servers behind one small interface: the only package that imports the `mcp` SDK.

- ``models``: ``ServerConfig``, ``ToolInfo``, ``ServerState``, ``ToolResult`` (plain values, what
  controllers depend on);
- ``manager``: ``MCPManager``, the registry of running servers and the tool-call entry point;
- ``connection``: one server's owner task (connect, watch, restart) and its call path;
- ``_stdio``: the stdio transport that owns the process group;
- ``convert``: SDK tools and results to the plain values;
- ``testserver``: only a shim, so ``python -m gitops_acp.mcp.testserver`` still runs the project's
  own MCP server, now ``gitops_acp.testing.mcp_server`` (the server that tests, ``demo`` and
  benchmarks talk to over the real protocol).

Importing this package does not import the SDK; the first ``MCPManager.ensure`` does.
"""

from __future__ import annotations

from gitops_acp.mcp.manager import MCPManager
from gitops_acp.mcp.models import ServerConfig, ServerState, TaskState, ToolInfo, ToolResult

__all__ = ["MCPManager", "ServerConfig", "ServerState", "TaskState", "ToolInfo", "ToolResult"]
