"""`gitops-acp approve TOOLCALL [--comment C]` and `reject TOOLCALL --reason R`: decide as the local git user.

The pending approval's file is taken from its branch (`acp/approvals/<toolcall>`), its decision and
comment set, and committed to `main` as you, through the work tree where `main` is checked out (or
a temporary clone of a bare repository): the same record a merge of the branch leaves, with you as
the one who decided.
"""

from __future__ import annotations

import argparse
from typing import Any

from gitops_acp.errors import UserError


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
    from gitops_acp.humans.approvals import approval_path, branch_name
    from gitops_acp.store import yamlio

    repo = views.open_repo(args.repo)
    path = approval_path(args.toolcall)
    try:
        main = repo.resolve(f"refs/heads/{args.branch}")
        if main is not None and repo.read_file(main, path) is not None:
            raise UserError(f"{args.toolcall} is already decided: {path} is on {args.branch}")
        proposal = repo.resolve(f"refs/heads/{branch_name(args.toolcall)}")
        data = repo.read_file(proposal, path) if proposal is not None else None
    finally:
        repo.close()
    if data is None:
        raise UserError(f"no pending approval named {args.toolcall} (no branch {branch_name(args.toolcall)})")
    document = yamlio.load(data)
    spec = document.setdefault("spec", {})
    spec["decision"] = decision
    spec["comment"] = comment
    verb = "Approve" if decision == "approved" else "Reject"
    message = f"{verb} {spec.get('tool', '?')} for task {spec.get('task', '?')}" + (
        f"\n\n{comment}" if comment else ""
    )
    sha = commit_as_user(args.repo, files={path: yamlio.dump(document)}, message=message, branch=args.branch)
    print(f"{args.toolcall} {decision} ({path} on {args.branch}, {sha[:10]})")
    return 0


def run_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approved", args.comment)


def run_reject(args: argparse.Namespace) -> int:
    return _decide(args, "rejected", args.reason)
