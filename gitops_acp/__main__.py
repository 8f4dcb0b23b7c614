"""`python -m gitops_acp` runs the command line."""

from gitops_acp.cli.main import run

run()
