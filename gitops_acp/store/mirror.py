"""A remote repository served through a local mirror: what `serve` fetches and pushes (DESIGN §1, §3).

    the remote (a forge, a git daemon)        the mirror (bare, in the cache dir: durable state)
    refs/heads/main ─────── fetch ──────────► refs/remotes/origin/main ──► refs/heads/main (follows)
    refs/heads/acp/* ────── fetch --prune ──► refs/remotes/origin/acp/*   (the remote as last seen)
    refs/heads/acp/status ◄─ push, lease ──── refs/heads/acp/status       (the writer's; ahead until pushed)
    refs/heads/acp/<x>/<y> ◄─ push once ───── refs/heads/acp/<x>/<y>      (a branch the reconciler made)
    refs/heads/acp/status-<j>-of-<n> ─ fetch ─► (followed, never pushed: another shard's, docs/scale.md)

The reconciler works on the mirror exactly as on a local repository: it reads `refs/heads/main`
and moves its own `refs/heads/acp/...` refs. This module keeps the mirror and the remote in step:

- Fetch writes only remote-tracking refs (`refs/remotes/origin/...`), so it can never clobber a
  reconciler ref that is ahead of the remote (unpushed checkpoints). Local `main` then follows the
  remote's, whatever it did (humans own `main`, force-pushes included).
- The reconciler's namespaces are fetched with `--prune`: a branch the remote deleted (a person
  deleting an approval branch: a rejection) is deleted in the mirror too, unless it is the status
  branch, which is simply pushed again. A branch the reconciler created and never pushed has no
  remote-tracking ref, so it is pushed, never mistaken for a deleted one.
- A branch of the namespaces moved by someone else on the remote (a decision edited on an approval
  branch) is followed: after its first push a proposal belongs to the people deciding it.
- At start only, a remote status branch that contains ours is taken as it is (our mirror is an
  older copy: merging would roll tasks back).
- The status branch is pushed with `--force-with-lease=<ref>:<last value seen on the remote>`. If
  the remote's status branch is not an ancestor of ours (someone pushed to it), ours is first merged
  with theirs: parents (ours, theirs), tree ours (the reconciler is the single writer of status
  files), so neither side's commits are lost and the lease is on theirs.

Blocking, like everything in `store/`: the reactor runs it on its own thread with its own GitRepo.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gitops_acp.errors import ConflictError, StoreError
from gitops_acp.store import recovery, shards
from gitops_acp.store.git import GitRepo, PushUpdate, RefConflictError, init_bare, redact_url

__all__ = ["ORIGIN", "FetchResult", "Mirror", "PushResult", "cache_dir", "prepare_mirror", "refresh_view"]

ORIGIN = "origin"
HEADS = "refs/heads/"
TRACKING = f"refs/remotes/{ORIGIN}/"
#: Where the reconciler's own branches live (approvals, questions, and the default status branch).
NAMESPACE = "acp/"


def cache_dir(url: str) -> Path:
    """`$XDG_CACHE_HOME/gitops-acp/<name>-<digest of the URL>`: one folder per remote."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gitops-acp"
    name = re.sub(r"[^A-Za-z0-9._-]", "-", url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")) or "repo"
    return root / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def prepare_mirror(path: Path, url: str) -> None:
    """Create the bare mirror at `path` for `url`, or check that the one there mirrors `url`."""
    if not (path / "HEAD").exists():
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"{path} exists and is not a git mirror: pass another --cache-dir")
        init_bare(path)
    with GitRepo.open(path) as repo:
        current = repo.config(f"remote.{ORIGIN}.url")
        if current is None:
            repo.set_config(f"remote.{ORIGIN}.url", url)
        elif current != url:
            raise StoreError(
                f"{path} mirrors {redact_url(current)}, not {redact_url(url)}: pass another --cache-dir"
            )


def refresh_view(url: str) -> Path:
    """Fetch every branch of `url` into a read-only copy in the cache directory; return its path.

    For `get`, `describe` and `history` with a URL: they read what the remote has now. A separate
    copy from serve's mirror, whose branches may be ahead of the remote (and which it owns).
    """
    path = cache_dir(url) / "view.git"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Readers take turns on the view (a second `get` waits for the first one's fetch), so whatever
    # lock or temporary file is in it now was left by a reader that was killed: cleared, or every
    # later fetch would fail on it.
    with recovery.exclusive(path.parent / "view.flock"):
        if (path / "HEAD").exists():
            recovery.recover(path, branches=[], whole=True, settle=0.0)
        prepare_mirror(path, url)
        with GitRepo.open(path) as repo:
            repo.fetch(ORIGIN, [f"+{HEADS}*:{HEADS}*"], prune=True)
    return path


@dataclass(frozen=True)
class FetchResult:
    """What a fetch changed in the mirror."""

    main_moved: bool  # local main now points somewhere else
    deleted: tuple[str, ...]  # the reconciler's branches deleted because the remote deleted them


@dataclass(frozen=True)
class PushResult:
    """What a push did."""

    pushed: dict[str, str]  # ref -> the sha the remote now has
    rejected: dict[str, str]  # ref -> why the remote refused it (someone moved it first)
    merged: str | None  # the merge commit made on the status branch before pushing, if any


def _tracking(ref: str) -> str:
    return TRACKING + ref.removeprefix(HEADS)


def _local(tracking: str) -> str:
    return HEADS + tracking.removeprefix(TRACKING)


def _foreign_status(ref: str) -> bool:
    """Whether `ref` is a status branch (another shard's, when not ours): never pushed from here.

    The mirror follows other shards' branches for the start-up layout check; each is pushed by its
    own shard alone (docs/scale.md).
    """
    return shards.layout_of(ref.removeprefix(HEADS)) is not None


class Mirror:
    """The mirror of one remote, kept in step with it (see the module docstring); one thread at a time."""

    def __init__(self, repo: GitRepo, *, main: str, status_branch: str, identity: tuple[str, str]) -> None:
        """Wrap an opened mirror; `main` and `status_branch` are short branch names."""
        folder, _slash, _name = status_branch.rpartition("/")
        if not folder:
            raise StoreError(
                f"--status-branch {status_branch}: with a remote it must be inside a folder (e.g. acp/status)"
            )
        self._repo = repo
        self._identity = identity
        self.main = HEADS + main
        self.status = HEADS + status_branch
        namespaces = sorted({NAMESPACE, folder + "/"})
        self._owned = tuple(HEADS + ns for ns in namespaces)
        self._tracked = tuple(_tracking(prefix) for prefix in self._owned)
        self._refspecs = [f"+{self.main}:{_tracking(self.main)}"]
        self._refspecs += [f"+{HEADS}{ns}*:{TRACKING}{ns}*" for ns in namespaces]

    def has_main(self) -> bool:
        """Whether the mirror has ever fetched `main`."""
        return self._repo.resolve(self.main) is not None

    def fetch(self, *, catch_up: bool = False) -> FetchResult:
        """Fetch main and the reconciler's namespaces; follow main, deletions and others' moves.

        `catch_up` (at start, before the status writer reads the branch): a remote status branch
        that contains ours is taken as it is. Ours is then an older copy (a mirror restored from a
        backup, a new one); merging it with "tree: ours" would roll the tasks back and run their
        steps, tools included, again. While serving, the writer's tree is the truth: a merge.
        """
        before = self._repo.refs(*self._tracked)
        self._repo.fetch(ORIGIN, self._refspecs, prune=True)
        after = self._repo.refs(*self._tracked)
        their_main = self._repo.resolve(_tracking(self.main))
        our_main = self._repo.resolve(self.main)
        moved = their_main is not None and their_main != our_main
        if their_main is not None and moved:
            self._repo.update_ref(self.main, their_main, our_main, message="gitops-acp: fetch")
        local = self._repo.refs(*self._owned)
        deleted: list[str] = []
        for tracking, old in before.items():
            ref = _local(tracking)
            # Deleted on the remote. The status branch is pushed again instead (it is ours).
            if tracking not in after and ref != self.status and local.get(ref) == old:
                self._repo.delete_ref(ref, old)
                deleted.append(ref)
        for tracking, sha in after.items():
            ref = _local(tracking)
            mine = local.get(ref)
            if mine == sha:
                continue
            if ref == self.status and mine and not (catch_up and self._repo.is_ancestor(mine, sha)):
                continue  # ours: pushed (merged with theirs first), never replaced
            # The remote has it and we don't (a new mirror of a served remote), has more of it (a
            # mirror restored from an old copy), or someone moved a branch after we proposed it:
            # the remote's is the one that counts.
            with contextlib.suppress(RefConflictError):  # the writer moved it: the next push sorts it out
                self._repo.update_ref(ref, sha, mine, message="gitops-acp: fetch")
        return FetchResult(moved, tuple(deleted))

    def push(self) -> PushResult:
        """Push the status branch (merged with the remote's first if needed) and never-pushed branches.

        Raises ConflictError when the writer moved the status branch while a merge was being made
        (call again), RemoteError when the remote cannot be reached.
        """
        tracking = self._repo.refs(*self._tracked)
        local = self._repo.refs(*self._owned)
        updates: list[PushUpdate] = []
        merged = None
        ours = local.get(self.status)
        theirs = tracking.get(_tracking(self.status))
        if ours is not None and ours != theirs:
            if theirs is not None and not self._repo.is_ancestor(theirs, ours):
                ours = merged = self._merge(ours, theirs)
            updates.append(PushUpdate(self.status, ours, theirs))
        for ref, sha in sorted(local.items()):
            if ref != self.status and _tracking(ref) not in tracking and not _foreign_status(ref):
                updates.append(PushUpdate(ref, sha, None))
        results = self._repo.push(ORIGIN, updates)
        pushed: dict[str, str] = {}
        rejected: dict[str, str] = {}
        for update in updates:
            why = results.get(update.ref)
            if why is not None:
                rejected[update.ref] = why
                continue
            pushed[update.ref] = update.sha
            track = _tracking(update.ref)
            with contextlib.suppress(RefConflictError):  # a fetch saw it first: the same value or newer
                self._repo.update_ref(track, update.sha, tracking.get(track), message="gitops-acp: push")
        return PushResult(pushed, rejected, merged)

    def delete_branch(self, ref: str) -> str | None:
        """Delete a reconciler branch on the remote (lease: the value last seen there), then here.

        Returns why the remote refused (someone moved the branch since the last fetch), or None
        once it is gone from both. A branch never pushed is only deleted here. Never `main` or a
        status branch. Raises RemoteError when the remote cannot be reached.
        """
        if not ref.startswith(self._owned) or ref == self.status or _foreign_status(ref):
            raise StoreError(f"refusing to delete {ref}: not one of the reconciler's proposal branches")
        track = _tracking(ref)
        theirs = self._repo.resolve(track)
        if theirs is not None:
            why = self._repo.push(ORIGIN, [PushUpdate(ref, "", theirs)]).get(ref)
            if why is not None:
                return why
            with contextlib.suppress(RefConflictError):
                self._repo.delete_ref(track, theirs)
        ours = self._repo.resolve(ref)
        if ours is not None:
            self._repo.delete_ref(ref, ours)
        return None

    def unpushed(self) -> int:
        """How many commits of the status branch the remote does not have (for logs)."""
        ours = self._repo.resolve(self.status)
        if ours is None:
            return 0
        theirs = self._repo.resolve(_tracking(self.status))
        return self._repo.count(ours, exclude=theirs)

    def _merge(self, ours: str, theirs: str) -> str:
        """Merge the remote's status branch into ours (tree: ours) and move our ref to the merge."""
        message = (
            f"Merge {self.status.removeprefix(HEADS)} from the remote\n\n"
            "Someone else moved the status branch on the remote. The reconciler is the single writer of\n"
            "status files, so this merge keeps its files (the first parent's tree) and both histories.\n"
        )
        merge = self._repo.write_commit(
            tree=self._repo.tree_of(ours),
            parents=[ours, theirs],
            message=message,
            author=self._identity,
            committer=self._identity,
        )
        try:
            self._repo.update_ref(self.status, merge, ours, message="gitops-acp: merge the remote's status")
        except RefConflictError as exc:
            raise ConflictError(f"{self.status} moved while merging the remote's: merge again") from exc
        return merge
