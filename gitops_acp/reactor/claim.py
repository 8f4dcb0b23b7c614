"""Start-up, step one: take the status branch for this process, and clear what a kill left.

Before anything is read or written: a second serve of the same branch stops here with one line
instead of fighting the first, and a stale lock never stalls the first checkpoint. With a remote,
the locks live in the cache directory beside the mirror, and the whole mirror is cleared when no
other serve uses it (store/recovery.py has the rules).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gitops_acp.store import recovery
from gitops_acp.store.git import GitRepo

__all__ = ["RECONCILER_NAMESPACES", "Claim", "claim"]

log = logging.getLogger("gitops_acp")

#: Where reconcilers create branches for people: a lock left there by a kill is ours to clear.
RECONCILER_NAMESPACES = ("refs/heads/acp/approvals/", "refs/heads/acp/questions/")


@dataclass
class Claim:
    """The locks this process holds while it serves; `release` at the very end of shutdown."""

    serve: recovery.ServeLock
    mirror: recovery.MirrorLock | None

    def release(self) -> None:
        """Record a clean stop and drop the locks."""
        if self.mirror is not None:
            self.mirror.release()
        self.serve.release()


def claim(repo: Path, branch: str, *, mirror: Path | None, where: str) -> Claim:
    """Take `branch`'s ServeLock and recover the repository (blocking: run it on the git thread).

    `repo`: the served local repository (locks in its git dir); `mirror`: with a remote, its mirror
    instead (locks in the cache directory beside it); `where` names the repository in errors.
    """
    if mirror is not None:
        git_dir, directory = mirror, mirror.parent
    else:
        with GitRepo.open(repo) as opened:
            git_dir = opened.common_dir
        directory = recovery.lock_dir(git_dir)
    serve = recovery.ServeLock.acquire(directory, branch, where=where)
    predecessor = serve.predecessor
    if predecessor is not None:
        log.warning("the last serve of %s (%s) was killed: recovering what it left", branch, predecessor)
    mirror_lock = recovery.MirrorLock(directory) if mirror is not None else None
    if (git_dir / "HEAD").exists():
        recovery.recover(
            git_dir,
            branches=[f"refs/heads/{branch}"],
            namespaces=RECONCILER_NAMESPACES,
            predecessor=predecessor,
            whole=mirror_lock is not None and mirror_lock.exclusive,
        )
    if mirror_lock is not None:
        mirror_lock.share()
    return Claim(serve, mirror_lock)
