"""One file proposed on a branch, and the file read back from `main`: what approvals and questions share.

    propose ──► refs/heads/<branch> = tip of main + <folder>/<toolcall>.yaml   (CAS: "must not exist")
    a person edits the file on the branch (or not), and merges it into main
    read ──► the file at the tip of main, with the first-parent commit that brought it there

Building the branch writes objects and one new ref; it never touches `main`, the index or a work
tree. Everything here is blocking and runs on the reconciler's git thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitops_acp.errors import ConflictError
from gitops_acp.store import yamlio
from gitops_acp.store.git import TREE_MODE, GitRepo, TreeBuilder, signatures
from gitops_acp.store.git.signatures import Signers

__all__ = ["Decision", "propose", "read"]

BLOB_MODE = "100644"


@dataclass(frozen=True)
class Decision:
    """A record file found on `main` (an approval, a response), and who put it there."""

    spec: dict[str, Any]
    decided_by: str  # "Name <email>" of the first-parent commit that added or changed the file
    decided_at: float  # that commit's commit time
    fast_forward: bool  # the file came with the reconciler's own commit: who merged is unknown
    commit: str = ""  # the first-parent commit that added or changed the file
    # With allowed signers configured: the principal whose good signature that commit carries
    # (None: unsigned, or not signed by an allowed signer: the author then proves nothing).
    signed_by: str | None = None
    signed_via: str | None = None  # "ssh signature" or "gpg signature", with signed_by
    signers_checked: bool = False  # allowed signers are configured: the author alone proves nothing


def propose(
    repo: GitRepo,
    *,
    main: str,
    branch: str,
    path: str,
    document: dict[str, Any],
    message: str,
    identity: tuple[str, str],
    at: str | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> str:
    """Create `branch` from `main` (or from its commit `at`: the one applied) plus `path` holding
    `document`; reuse the branch if it exists. `sign` signs the commit (signers.signingKey)."""
    ref = f"refs/heads/{branch}"
    if repo.resolve(ref) is not None:
        return branch  # proposed before a restart: the same proposal
    tip = at or repo.resolve(f"refs/heads/{main}")
    if tip is None:
        raise ConflictError(f"cannot create {branch}: branch {main} does not exist")
    folder_name, _, file_name = path.rpartition("/")
    root = TreeBuilder(repo.read_tree(tip) or {})
    folder = TreeBuilder(repo.read_tree(tip, folder_name) or {})
    folder.set(file_name, BLOB_MODE, repo.write_blob(yamlio.dump(document)))
    root.set(folder_name, TREE_MODE, repo.write_tree(folder))
    commit = repo.write_commit(
        tree=repo.write_tree(root),
        parents=[tip],
        message=message,
        author=identity,
        committer=identity,
        sign=sign,
    )
    try:
        repo.update_ref(ref, commit, None, message=f"gitops-acp: propose {path}")
    except ConflictError:
        if repo.resolve(ref) is None:
            raise
    return branch


def read(
    repo: GitRepo,
    *,
    main: str,
    path: str,
    reconciler: tuple[str, str],
    at: str | None = None,
    signers: Signers | None = None,
) -> Decision | None:
    """The file at `path` on the tip of `main` (or at its commit `at`: the one applied), with the
    identity of the commit that put it there, and with `signers` the principal who signed it."""
    tip = at or repo.resolve(f"refs/heads/{main}")
    if tip is None:
        return None
    data = repo.read_file(tip, path)
    if data is None:
        return None
    spec = yamlio.load(data).get("spec")
    commits = repo.log(tip, path=path, n=1, first_parent=True)
    author = commits[0].author if commits else ""
    when = commits[0].timestamp if commits else 0.0
    reconciler_text = f"{reconciler[0]} <{reconciler[1]}>"
    sha = commits[0].sha if commits else ""
    signed_by: str | None = None
    signed_via: str | None = None
    if signers is not None and sha:
        verdict = signatures.verdict_of(repo.git_dir, sha, signers=signers)
        if verdict.good and verdict.signer:
            signed_by = verdict.signer
            signed_via = "ssh signature" if verdict.key.startswith("SHA256:") else "gpg signature"
    return Decision(
        spec=spec if isinstance(spec, dict) else {},
        decided_by=author,
        decided_at=when,
        fast_forward=author == reconciler_text,
        commit=sha,
        signed_by=signed_by,
        signed_via=signed_via,
        signers_checked=signers is not None,
    )
