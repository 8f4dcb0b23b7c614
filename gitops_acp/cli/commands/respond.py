"""`gitops-acp respond TOOLCALL --message M`: answer an agent's question as the local git user.

The pending question's file is taken from its branch (`acp/questions/<toolcall>`), its `response`
set, and committed to `main` as you, through the work tree where `main` is checked out (or a
temporary clone of a bare repository): the same record a merge of the answered branch leaves,
with you as the one who answered.
"""

from __future__ import annotations

import argparse
from typing import Any

from gitops_acp.errors import UserError


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="answer a pending question to a human as the local git user",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("toolcall", help="the ToolCall's name (see `gitops-acp get toolcalls`)")
    parser.add_argument(
        "--message", "-m", required=True, help="your answer: the model reads it as the result"
    )
    parser.add_argument("--branch", default="main", help="the branch holding answers (default: main)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.message.strip():
        raise UserError("--message is empty: write an answer (delete the question's branch to decline)")
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli import views
    from gitops_acp.cli.commits import commit_as_user
    from gitops_acp.humans import records

    repo = views.open_repo(args.repo)
    try:
        main = repo.resolve(f"refs/heads/{args.branch}")
        record = records.answer(repo, args.toolcall, response=args.message, main=main, branch=args.branch)
    finally:
        repo.close()
    path, message = record.path, record.message
    sha = commit_as_user(args.repo, files={path: record.data}, message=message, branch=args.branch)
    print(f"{args.toolcall} answered ({path} on {args.branch}, {sha[:10]})")
    return 0
