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
    from gitops_acp.humans.questions import branch_name, response_path
    from gitops_acp.store import yamlio

    repo = views.open_repo(args.repo)
    path = response_path(args.toolcall)
    try:
        main = repo.resolve(f"refs/heads/{args.branch}")
        if main is not None and repo.read_file(main, path) is not None:
            raise UserError(f"{args.toolcall} is already answered: {path} is on {args.branch}")
        question = repo.resolve(f"refs/heads/{branch_name(args.toolcall)}")
        data = repo.read_file(question, path) if question is not None else None
    finally:
        repo.close()
    if data is None:
        raise UserError(f"no pending question named {args.toolcall} (no branch {branch_name(args.toolcall)})")
    document = yamlio.load(data)
    spec = document.setdefault("spec", {})
    spec["response"] = args.message
    message = f"Answer the question of task {spec.get('task', '?')}\n\n{args.message}"
    sha = commit_as_user(args.repo, files={path: yamlio.dump(document)}, message=message, branch=args.branch)
    print(f"{args.toolcall} answered ({path} on {args.branch}, {sha[:10]})")
    return 0
