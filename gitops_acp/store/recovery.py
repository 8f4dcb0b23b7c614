"""Who serves a status branch, and what a killed predecessor left in the repository.

A reconciler is killed without warning (Kubernetes after its grace period, the OOM killer), and
git's own crash safety is lock files: a process killed inside `git update-ref` leaves
`<ref>.lock`, and every later writer of that ref fails until someone removes it. Start-up clears
such leftovers, but only those that are provably nobody's:

    serve ──► ServeLock.acquire(dir, branch)    flock(LOCK_EX | LOCK_NB) on serve-<branch>.flock, held
              │                                 until the process ends (the kernel drops it on a
              │                                 kill); already held: a one-line error naming the pid
              ├─ the file's last record is "running": the predecessor was killed (`predecessor`)
              ▼
          recover(git_dir, ...)                 candidates, each attributed or reported:
              <ref>.lock of our branches            the status branch, acp/approvals/*, acp/questions/*
              packed-refs.lock, commit-graph        only when the predecessor was killed and the file
                locks, git's temporary packs          dates from its lifetime
              tmp_obj_<pid>_*, tmp_pack_<pid>_*     our own temporary names, when <pid> is dead
              pack-<sha>.pack without its .idx      a pack whose index never landed (nothing refers
                                                    to its objects: the ref moves after both)
              everything git leaves, in a mirror    when no other serve uses the mirror (MirrorLock)
              that no other serve uses
          Every candidate must stay unchanged for `settle` seconds before it is removed: a live git
          process holds a lock for milliseconds, so one that is still changing is someone's.
          A lock that cannot be attributed is logged with its path and what to do, never removed.

The status writer applies the same rule at run time to its own branch (`stale`): a ref lock that
stays unchanged while the writer waits is removed, because nobody else writes that branch while
this process holds its ServeLock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gitops_acp.errors import UserError

__all__ = [
    "MirrorLock",
    "Predecessor",
    "Recovery",
    "ServeLock",
    "exclusive",
    "lock_dir",
    "recover",
    "stale",
    "stamp",
]

log = logging.getLogger("gitops_acp")

#: Seconds a leftover must stay unchanged before it is taken for abandoned.
SETTLE = 1.0
#: Temporary files named with the pid of their writer: ours (store/git/objects.py:
#: tmp_<kind>_<pid>_<thread>_<n>) and git repack's (.tmp-<pid>-pack-*).
_BY_PID = re.compile(r"tmp_(?:obj|pack|idx)_(\d+)_\d+_\d+|\.tmp-(\d+)-.*")
#: git's other temporary files in objects/: a fetch's index-pack (tmp_pack_XXXXXX), commit-graph.
_GITS_TEMPORARY = re.compile(r"tmp_(?:pack|idx|rev|mtimes|graph)_[A-Za-z0-9]{6}")

Stamp = tuple[int, int, int]  # (inode, mtime in ns, size): unchanged means nobody is working on it


def lock_dir(git_dir: Path) -> Path:
    """Where serve's own lock files live in a repository: `<git dir>/gitops-acp/` (git ignores it)."""
    return git_dir / "gitops-acp"


@dataclass(frozen=True)
class Predecessor:
    """The serve process that held a ServeLock before us and did not stop cleanly."""

    pid: int
    host: str
    started: float  # seconds since the epoch

    def __str__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"


class ServeLock:
    """The exclusive right to serve one status branch, held for the life of the process."""

    def __init__(self, path: Path, fd: int, predecessor: Predecessor | None) -> None:
        """Wrap a held lock; use `ServeLock.acquire`."""
        self.path = path
        self.predecessor = predecessor  # the killed process that held it before, if any
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path, branch: str, *, where: str) -> ServeLock:
        """Take the lock of `branch` in `directory`, or raise UserError naming who holds it.

        `where` names the repository in the error. The file keeps one JSON record: who holds the
        lock and whether it stopped cleanly, so the next holder knows a kill happened.
        """
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"serve-{quote(branch, safe='')}.flock"
        fd = _lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            who = f" (pid {holder.get('pid')} on {holder.get('host')})" if holder.get("pid") else ""
            raise UserError(
                f"another gitops-acp serve{who} is already serving {branch} of {where}: "
                "stop it first, or serve another --status-branch or --shard"
            ) from None
        except OSError:
            os.close(fd)
            raise
        last = _read_record(fd)
        predecessor = None
        if last.get("state") == "running":
            with contextlib.suppress(KeyError, TypeError, ValueError):
                predecessor = Predecessor(int(last["pid"]), str(last["host"]), float(last["started"]))
        _write_record(fd, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        return cls(path, fd, predecessor)

    def release(self) -> None:
        """Record a clean stop and drop the lock (the kernel drops it anyway when the process dies)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            record = _read_record(fd)
            _write_record(fd, {**record, "state": "stopped"})
        finally:
            os.close(fd)


def _lock_file(path: Path) -> int:
    """Open (creating it) a file to flock; not inherited by the processes we start."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _read_record(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(fd: int, record: dict[str, Any]) -> None:
    record.setdefault("state", "running")
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if need be) for the block; wait for it if taken."""
    fd = _lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


class MirrorLock:
    """A shared flock held by every serve using a mirror; exclusive for a moment at start-up.

    Shards on one machine may share the mirror of one URL. Whoever gets it exclusively at start
    knows that no other serve is using the mirror, so every lock and temporary file in it is a
    leftover (`exclusive`); then it keeps the lock shared, like the others.
    """

    def __init__(self, directory: Path) -> None:
        """Take the lock in `directory` (the cache dir beside the mirror)."""
        directory.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = _lock_file(directory / "mirror.flock")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.exclusive = True
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            self.exclusive = False

    def share(self) -> None:
        """Let other serves in (after recovery)."""
        if self._fd is not None and self.exclusive:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            self.exclusive = False

    def release(self) -> None:
        """Drop the lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


@dataclass
class Recovery:
    """What `recover` found: removed as a leftover, or reported as someone else's."""

    removed: list[str] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)


def recover(
    git_dir: Path,
    *,
    branches: Sequence[str],
    namespaces: Sequence[str] = (),
    predecessor: Predecessor | None = None,
    whole: bool = False,
    settle: float = SETTLE,
) -> Recovery:
    """Remove what a killed writer left in the repository at `git_dir`; log and return what was done.

    `branches`: full ref names this process alone writes (its status branch); `namespaces`: ref
    prefixes of the branches reconcilers create (`refs/heads/acp/approvals/`); `predecessor`: the
    killed serve, whose lifetime dates its other leftovers; `whole`: the repository is a mirror
    nobody else uses, so everything git leaves there is ours.
    """
    since = predecessor.started - 1.0 if predecessor is not None else None
    candidates: dict[Path, str] = {}  # path -> why it is a leftover
    report = Recovery()

    def ours_by_time(path: Path) -> bool:
        return whole or (since is not None and _mtime(path) >= since)

    refs = git_dir / "refs"
    for lock in sorted(refs.rglob("*.lock")) if refs.is_dir() else []:
        ref = lock.relative_to(git_dir).as_posix().removesuffix(".lock")
        if whole or ref in branches or ref.startswith(tuple(namespaces)):
            candidates[lock] = f"a lock on {ref}"
        else:
            report.reported.append(str(lock))
    shared = [git_dir / "packed-refs.lock", git_dir / "objects/info/commit-graph.lock"]
    graphs = git_dir / "objects/info/commit-graphs"
    shared += sorted(graphs.glob("*.lock")) if graphs.is_dir() else []
    if whole:
        shared += sorted(git_dir.glob("*.lock"))
    for path in shared:
        if not path.exists():
            continue
        if ours_by_time(path):
            candidates[path] = "left by the killed serve" if not whole else "left in the mirror"
        else:
            report.reported.append(str(path))
    objects = git_dir / "objects"
    for path in _temporaries(objects):
        if match := _BY_PID.fullmatch(path.name):
            pid = int(match.group(1) or match.group(2))
            if not _alive(pid):
                candidates[path] = f"written by pid {pid}, which is gone"
        elif whole or (path.name.startswith("tmp_graph_") and ours_by_time(path)):
            candidates[path] = "a temporary file of a killed git process"
    packs = objects / "pack"
    for pack in sorted(packs.glob("pack-*.pack")) if packs.is_dir() else []:
        if not pack.with_suffix(".idx").exists():
            candidates[pack] = "a pack whose index never landed"

    if candidates:
        before = {path: stamp(path) for path in candidates}
        time.sleep(settle)
        for path, why in candidates.items():
            if before[path] is None or stamp(path) != before[path]:
                continue  # gone or changed meanwhile: a live process is working on it
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                report.removed.append(str(path))
                log.warning("removed %s (%s)", path, why)
    for reported in report.reported:
        log.warning(
            "%s exists and is not this reconciler's to remove: another program holds it, or one that "
            "crashed left it; if no git command is running in %s, remove it",
            reported,
            git_dir,
        )
    return report


def stale(path: Path, since: Stamp | None) -> bool:
    """Whether the lock at `path` is still the very file first seen as `since` (nobody touched it)."""
    return since is not None and stamp(path) == since


def _temporaries(objects: Path) -> list[Path]:
    """Temporary files in the object folders (`xx/`, `pack/`, `info/commit-graphs/`)."""
    if not objects.is_dir():
        return []
    folders = [f for f in objects.iterdir() if f.is_dir() and (len(f.name) == 2 or f.name == "pack")]
    folders.append(objects / "info" / "commit-graphs")
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found += [
                p for p in folder.iterdir() if _BY_PID.fullmatch(p.name) or _GITS_TEMPORARY.fullmatch(p.name)
            ]
    return sorted(found)


def _temporary(name: str) -> bool:
    return bool(_BY_PID.fullmatch(name) or _GITS_TEMPORARY.fullmatch(name))


def stamp(path: Path) -> Stamp | None:
    """The identity of a file now, (inode, mtime, size); None when it is gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
