"""`gitops-acp llm-stub`: the scripted OpenAI-compatible server, for offline runs and benchmarks."""

from __future__ import annotations

import argparse
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
    from gitops_acp.llm import stub  # uvicorn and starlette load only when the stub runs

    argv = ["--port", str(args.port)]
    if args.script:
        argv += ["--script", args.script]
    if args.max_seconds is not None:
        argv += ["--max-seconds", str(args.max_seconds)]
    return stub.main(argv)
