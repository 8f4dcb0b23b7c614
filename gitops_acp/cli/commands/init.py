"""`gitops-acp init DIR`: a new repository with the example resources committed on `main`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="create a repository with the example resources committed on main",
        description="Create a new git repository with ACP's getting-started resources committed on main.",
    )
    parser.add_argument("dir", type=Path, help="where to create it (must not exist or be empty)")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use an LLM on 127.0.0.1:8765 (`gitops-acp llm-stub --port 8765`) instead of OpenAI",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli.commits import init_repository
    from gitops_acp.cli.examples import example_files

    variant = "offline" if args.offline else "getting-started"
    files = example_files(variant)
    sha = init_repository(args.dir, files=files, message=f"Add the {variant} example resources")
    print(f"initialized {args.dir} with {len(files)} resource files on main ({sha[:10]})")
    if args.offline:
        print(
            "next: gitops-acp llm-stub --port 8765 &  and  LOCAL_STUB_API_KEY=x gitops-acp --repo "
            f"{args.dir} serve"
        )
    else:
        print(f"next: OPENAI_API_KEY=... gitops-acp --repo {args.dir} serve")
    return 0
