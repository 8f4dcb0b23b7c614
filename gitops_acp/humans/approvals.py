"""Approvals as branches: what the reconciler proposes, and how a decision on `main` is read.

    tool call needs approval ──► branch acp/approvals/<toolcall> = tip of main + approvals/<toolcall>.yaml
                                 (kind Approval: tool, arguments, argumentsDigest, decision: approved)
    a person merges it (or edits decision: rejected + comment, and merges; or deletes the branch)
    the reconciler reads approvals/<toolcall>.yaml on main ──► run the tool, or ToolCallRejected

Building the branch writes objects and one new ref (compare-and-swap, "must not exist"); it never
touches `main`, the index or a work tree. Everything here is blocking and runs on the reconciler's
git thread.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gitops_acp.errors import ConflictError
from gitops_acp.store import yamlio
from gitops_acp.store.gitrepo import TREE_MODE, GitRepo, TreeBuilder

__all__ = ["APPROVALS_DIR", "Decision", "approval_path", "branch_name", "digest", "propose", "read_decision"]

APPROVALS_DIR = "approvals"
BLOB_MODE = "100644"


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


@dataclass(frozen=True)
class Decision:
    """An approval file found on `main`, and who put it there."""

    spec: dict[str, Any]
    decided_by: str  # "Name <email>" of the first-parent commit that added or changed the file
    decided_at: float  # that commit's commit time
    fast_forward: bool  # the file came with the reconciler's own commit: who merged is unknown


def propose(
    repo: GitRepo,
    *,
    main: str,
    toolcall: str,
    document: dict[str, Any],
    message: str,
    identity: tuple[str, str],
) -> str:
    """Create `acp/approvals/<toolcall>` from `main` plus the approval file; reuse it if it exists."""
    ref = f"refs/heads/{branch_name(toolcall)}"
    if repo.resolve(ref) is not None:
        return branch_name(toolcall)  # proposed before a restart: the same proposal
    tip = repo.resolve(f"refs/heads/{main}")
    if tip is None:
        raise ConflictError(f"cannot propose an approval: branch {main} does not exist")
    root = TreeBuilder(repo.read_tree(tip) or {})
    folder = TreeBuilder(repo.read_tree(tip, APPROVALS_DIR) or {})
    folder.set(f"{toolcall}.yaml", BLOB_MODE, repo.write_blob(yamlio.dump(document)))
    root.set(APPROVALS_DIR, TREE_MODE, repo.write_tree(folder))
    commit = repo.write_commit(
        tree=repo.write_tree(root), parents=[tip], message=message, author=identity, committer=identity
    )
    try:
        repo.update_ref(ref, commit, None, message=f"gitops-acp: propose {toolcall}")
    except ConflictError:
        if repo.resolve(ref) is None:
            raise
    return branch_name(toolcall)


def read_decision(repo: GitRepo, *, main: str, toolcall: str, reconciler: tuple[str, str]) -> Decision | None:
    """The approval file on the tip of `main`, with the identity of the commit that put it there."""
    tip = repo.resolve(f"refs/heads/{main}")
    if tip is None:
        return None
    path = approval_path(toolcall)
    data = repo.read_file(tip, path)
    if data is None:
        return None
    spec = yamlio.load(data).get("spec")
    commits = repo.log(tip, path=path, n=1, first_parent=True)
    author = commits[0].author if commits else ""
    when = commits[0].timestamp if commits else 0.0
    reconciler_text = f"{reconciler[0]} <{reconciler[1]}>"
    return Decision(
        spec=spec if isinstance(spec, dict) else {},
        decided_by=author,
        decided_at=when,
        fast_forward=author == reconciler_text,
    )
