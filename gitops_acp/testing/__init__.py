"""What users run to try gitops-acp offline, and what tests and benchmarks run over real protocols.

- ``llm_stub``: a scripted OpenAI-compatible HTTP server (``gitops-acp llm-stub``; ``gitops-acp
  demo`` runs it in a thread);
- ``mcp_server``: the project's own MCP server (``python -m gitops_acp.testing.mcp_server``), the
  tools of the offline example and the demo.

No product layer imports this package (an import-linter contract in pyproject.toml, like kopf's
toolkits): only the CLI's ``demo`` and ``llm-stub`` commands start these servers. Test-only doubles
(a fake forge, a fake HumanLayer) live in ``tests/fakes/`` and are not shipped.
"""
