"""`gitops-acp llm-stub`: the scripted OpenAI-compatible server, for offline runs and benchmarks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="run the scripted OpenAI-compatible stub on 127.0.0.1 (prints its URL)",
        description="Serve /v1/chat/completions on 127.0.0.1 from a script (see docs/llm-stub.md).",
    )
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default: 8765)")
    parser.add_argument("--script", help="a YAML or JSON script of replies and errors")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until told to stop: print the URL on the first line of stdout; exit with the parent."""
    parent = os.getppid()  # first thing: the later we look, the likelier a dead parent goes unnoticed
    import yaml

    from gitops_acp.testing import llm_stub  # uvicorn and starlette load only when the stub runs

    script = Path(args.script) if args.script else None
    try:
        stub = llm_stub.StubServer(script, port=args.port, max_seconds=args.max_seconds)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        where = f"--script {script}: " if script else ""
        print(f"error: {where}{' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        stub.serve_forever(parent=parent)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
