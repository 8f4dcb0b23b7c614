"""Compatibility: `python -m gitops_acp.mcp.testserver` runs `python -m gitops_acp.testing.mcp_server`.

The project's MCP test server moved to `gitops_acp.testing` (what users run offline, which no
product layer imports). Repositories that `gitops-acp init --offline` made before the move name this
module in their MCPServer (`args: ["-m", "gitops_acp.mcp.testserver"]`), so it stays, as this shim
only; pyproject.toml's import-linter contract allows exactly this one import of testing.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from gitops_acp.testing.mcp_server import main

    sys.exit(main())
