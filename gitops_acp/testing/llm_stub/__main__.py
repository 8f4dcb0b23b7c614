"""`python -m gitops_acp.testing.llm_stub ARGS` is `gitops-acp llm-stub ARGS`: one parser, in the CLI."""

from __future__ import annotations

import sys

from gitops_acp.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["llm-stub", *sys.argv[1:]]))
