"""Talking to another repository: fetch, push with leases, and the URL helpers around them.

Used by the remote mirror (``store/mirror.py``, driven by ``reactor/remote.py``) through
``GitRepo.fetch`` / ``GitRepo.push``, and by the command line to tell a URL from a path. These are
the only git commands that touch the network, so they run with `process.run(network=True)`: no
password prompt, a timeout, and every URL redacted before it reaches a message (it may hold a
token).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gitops_acp.errors import RemoteError
from gitops_acp.store.git import process

__all__ = ["PushUpdate", "fetch", "init_bare", "is_url", "push", "redact_url"]

# The user:password@ part of a URL: never printed (it may hold a token).
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


@dataclass(frozen=True)
class PushUpdate:
    """One ref to push: set `ref` on the remote to `sha` if it is at `expected` (None: absent)."""

    ref: str  # the full ref name, the same locally and on the remote (refs/heads/...)
    sha: str
    expected: str | None


def is_url(target: str) -> bool:
    """Whether `target` names a remote repository rather than a local path.

    "https://...", "git://...", "ssh://...", "file://..." and scp-like "user@host:path".
    """
    return "://" in target or bool(re.match(r"^[^/:]+@[^/:]+:", target))


def redact_url(text: str) -> str:
    """Drop the `user:password@` part of any URL in `text` (it may hold a token)."""
    return _USERINFO.sub("***@", text)


def init_bare(path: Path) -> None:
    """Create an empty bare repository at `path` (its parents too)."""
    path.mkdir(parents=True, exist_ok=True)
    process.run(["init", "-q", "--bare", str(path)], cwd=path)


def fetch(git_dir: Path, remote: str, refspecs: Sequence[str], *, prune: bool) -> None:
    """Fetch `refspecs` from the remote named `remote` into `git_dir`; raise RemoteError when it fails."""
    args = ["fetch", "-q", "--no-tags", "--no-write-fetch-head", *(["--prune"] if prune else [])]
    proc = process.in_repo(git_dir, *args, remote, *refspecs, check=False, network=True)
    if proc.returncode != 0:
        raise RemoteError(f"git fetch from {_remote_name(git_dir, remote)} failed: {_redacted(proc)}")


def push(git_dir: Path, remote: str, updates: Sequence[PushUpdate]) -> dict[str, str | None]:
    """Push each update with `--force-with-lease` (its expected value); return ref -> None or why refused.

    A ref whose remote value is not the expected one is rejected (nothing is overwritten); the
    others go through. Raises RemoteError when the push failed as a whole (unreachable, refused).
    """
    if not updates:
        return {}
    args = ["push", "--porcelain", "--no-verify"]
    args += [f"--force-with-lease={u.ref}:{u.expected or ''}" for u in updates]
    args += [remote, *(f"{u.sha}:{u.ref}" for u in updates)]
    proc = process.in_repo(git_dir, *args, check=False, network=True)
    results: dict[str, str | None] = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        flag, _tab, rest = line.partition("\t")
        refspec, _tab, summary = rest.partition("\t")
        if len(flag) != 1 or ":" not in refspec:
            continue
        ref = refspec.rpartition(":")[2]
        results[ref] = (summary.strip() or "rejected") if flag == "!" else None
    missing = [u.ref for u in updates if u.ref not in results]
    if missing:
        raise RemoteError(f"git push to {_remote_name(git_dir, remote)} failed: {_redacted(proc)}")
    return results


def _remote_name(git_dir: Path, remote: str) -> str:
    """Return the remote's URL, redacted, for a message (its name when it has no URL)."""
    proc = process.in_repo(git_dir, "config", "--get", f"remote.{remote}.url", check=False)
    return redact_url(proc.stdout.decode("utf-8", "replace").strip() or remote)


def _redacted(proc: process.Finished) -> str:
    return redact_url(process.tail(proc))
