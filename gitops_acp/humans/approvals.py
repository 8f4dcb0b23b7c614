"""Approvals as branches: what the reconciler proposes, and how a decision on `main` is read.

    tool call needs approval ──► branch acp/approvals/<toolcall> = tip of main + approvals/<toolcall>.yaml
                                 (kind Approval: tool, arguments, argumentsDigest, decision: approved)
    a person merges it (or edits decision: rejected + comment, and merges; or deletes the branch)
    the reconciler reads approvals/<toolcall>.yaml on main ──► run the tool, or ToolCallRejected

Building the branch writes objects and one new ref (compare-and-swap, "must not exist"); it never
touches `main`, the index or a work tree (humans/branches.py, shared with questions). Everything
here is blocking and runs on the reconciler's git thread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from gitops_acp.humans import branches
from gitops_acp.humans.branches import Decision
from gitops_acp.store.git import GitRepo
from gitops_acp.store.git.signatures import Signers

__all__ = ["APPROVALS_DIR", "Decision", "approval_path", "branch_name", "digest", "propose", "read_decision"]

APPROVALS_DIR = "approvals"


def branch_name(toolcall: str) -> str:
    """The approval branch of a tool call."""
    return f"acp/approvals/{toolcall}"


def approval_path(toolcall: str) -> str:
    """Where the approval file lives on `main` once merged."""
    return f"{APPROVALS_DIR}/{toolcall}.yaml"


def digest(arguments: Any) -> str:
    """`sha256:` of the canonical JSON of the arguments (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def propose(
    repo: GitRepo,
    *,
    main: str,
    toolcall: str,
    document: dict[str, Any],
    message: str,
    identity: tuple[str, str],
    at: str | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> str:
    """Create `acp/approvals/<toolcall>` from `main` plus the approval file; reuse it if it exists."""
    return branches.propose(
        repo,
        main=main,
        branch=branch_name(toolcall),
        path=approval_path(toolcall),
        document=document,
        message=message,
        identity=identity,
        at=at,
        sign=sign,
    )


def read_decision(
    repo: GitRepo,
    *,
    main: str,
    toolcall: str,
    reconciler: tuple[str, str],
    at: str | None = None,
    signers: Signers | None = None,
) -> Decision | None:
    """The approval file on the tip of `main`, with the identity of the commit that put it there.

    `at`: the commit of main that is applied (signed main); `signers`: who may have signed it."""
    return branches.read(
        repo, main=main, path=approval_path(toolcall), reconciler=reconciler, at=at, signers=signers
    )
