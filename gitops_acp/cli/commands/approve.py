"""`gitops-acp approve TOOLCALL [--comment C]` and `reject TOOLCALL --reason R`: decide as the local git user.

The pending approval's file is taken from its branch (`acp/approvals/<toolcall>`), its decision and
comment set, and committed to `main` as you, through the work tree where `main` is checked out (or
a temporary clone of a bare repository): the same record a merge of the branch leaves, with you as
the one who decided.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    approving = name == "approve"
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="approve a pending tool call as the local git user"
        if approving
        else "reject a pending tool call",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("toolcall", help="the ToolCall's name (see `gitops-acp get toolcalls`)")
    if approving:
        parser.add_argument("--comment", default="", help="a note recorded with the decision")
    else:
        parser.add_argument("--reason", required=True, help="why: the model reads it as the tool's result")
    parser.add_argument("--branch", default="main", help="the branch holding decisions (default: main)")
    parser.set_defaults(run=run_approve if approving else run_reject)


def _decide(args: argparse.Namespace, decision: str, comment: str) -> int:
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli import views
    from gitops_acp.cli.commits import commit_as_user
    from gitops_acp.humans import records

    repo = views.open_repo(args.repo)
    try:
        main = repo.resolve(f"refs/heads/{args.branch}")
        record = records.decision(
            repo, args.toolcall, decision=decision, comment=comment, main=main, branch=args.branch
        )
    finally:
        repo.close()
    path, message = record.path, record.message
    sha = commit_as_user(args.repo, files={path: record.data}, message=message, branch=args.branch)
    print(f"{args.toolcall} {decision} ({path} on {args.branch}, {sha[:10]})")
    return 0


def run_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approved", args.comment)


def run_reject(args: argparse.Namespace) -> int:
    return _decide(args, "rejected", args.reason)
