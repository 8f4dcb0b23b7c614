"""Start-up recovery (gitops_acp/store/recovery.py): the ServeLock, and which leftovers are removed.

Real repositories in temp dirs; the leftovers are the files git and the status writer really leave
(a `<ref>.lock` with a sha in it, temporary pack files named by a dead pid, a pack without its
index). What is not provably a killed reconciler's must survive, and be reported.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gitops_acp.errors import UserError
from gitops_acp.store import recovery
from tests.conftest import git

STATUS = "refs/heads/acp/status"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _touch(path: Path, content: str = "0" * 40 + "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_a_second_holder_of_a_branch_is_refused_by_name(tmp_path: Path) -> None:
    first = recovery.ServeLock.acquire(tmp_path, "acp/status", where="repo")
    try:
        with pytest.raises(
            UserError, match=rf"pid {os.getpid()} on .* is already serving acp/status of repo"
        ):
            recovery.ServeLock.acquire(tmp_path, "acp/status", where="repo")
        other = recovery.ServeLock.acquire(tmp_path, "acp/status-0-of-2", where="repo")  # another branch
        other.release()
    finally:
        first.release()
    again = recovery.ServeLock.acquire(tmp_path, "acp/status", where="repo")
    assert again.predecessor is None  # the last holder stopped cleanly
    again.release()


def test_a_holder_that_was_killed_is_named_as_the_predecessor(tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; from gitops_acp.store import recovery; "
        f"recovery.ServeLock.acquire(Path({str(tmp_path)!r}), 'acp/status', where='r'); "
        "os.kill(os.getpid(), 9)"
    )
    killed = subprocess.run([sys.executable, "-c", code], check=False)
    assert killed.returncode == -9
    lock = recovery.ServeLock.acquire(tmp_path, "acp/status", where="r")  # the kernel dropped the flock
    try:
        assert lock.predecessor is not None
        assert lock.predecessor.pid != os.getpid()
        assert lock.predecessor.started <= time.time()
    finally:
        lock.release()


def test_leftovers_of_a_killed_writer_are_removed_and_other_locks_reported(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    git_dir = repo / ".git"
    dead = _dead_pid()
    ours = [
        _touch(git_dir / f"{STATUS}.lock"),
        _touch(git_dir / "refs/heads/acp/approvals/t-1-tc-01.lock"),
        _touch(git_dir / f"objects/pack/tmp_pack_{dead}_1_0", "half a pack"),
        _touch(git_dir / f"objects/ab/tmp_obj_{dead}_1_2", "half an object"),
        _touch(git_dir / "objects/pack" / f"pack-{'1' * 40}.pack", "a pack whose index never landed"),
    ]
    theirs = [
        _touch(git_dir / "refs/heads/main.lock"),  # a person's
        _touch(git_dir / "refs/heads/acp/status-1-of-2.lock"),  # another shard's branch
        _touch(git_dir / f"objects/pack/tmp_pack_{os.getpid()}_1_0", "a live writer's"),
        _touch(git_dir / "packed-refs.lock"),  # no killed predecessor: nobody to attribute it to
    ]
    with caplog.at_level(logging.WARNING, logger="gitops_acp"):
        report = recovery.recover(
            git_dir, branches=[STATUS], namespaces=["refs/heads/acp/approvals/"], settle=0.1
        )
    assert sorted(report.removed) == sorted(str(p) for p in ours)
    assert all(not p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    reported = set(report.reported)
    assert str(git_dir / "refs/heads/main.lock") in reported
    assert str(git_dir / "packed-refs.lock") in reported
    assert "refs/heads/main.lock exists and is not this reconciler's to remove" in caplog.text
    git(repo, "status")  # the repository still works


def test_shared_locks_are_removed_only_when_they_date_from_a_killed_predecessor(repo: Path) -> None:
    git_dir = repo / ".git"
    old = _touch(git_dir / "packed-refs.lock")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    predecessor = recovery.Predecessor(pid=_dead_pid(), host="h", started=time.time() - 60)
    report = recovery.recover(git_dir, branches=[STATUS], predecessor=predecessor, settle=0.1)
    assert old.exists(), "a lock older than the killed serve is someone else's"
    assert report.reported == [str(old)]
    os.utime(old)  # now it dates from the predecessor's lifetime
    report = recovery.recover(git_dir, branches=[STATUS], predecessor=predecessor, settle=0.1)
    assert report.removed == [str(old)]
    assert not old.exists()


def test_a_lock_that_changes_while_settling_is_a_live_process_and_stays(repo: Path) -> None:
    lock = _touch(repo / ".git" / f"{STATUS}.lock")
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            lock.write_text(f"{time.time()}\n")
            stop.wait(0.02)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        report = recovery.recover(repo / ".git", branches=[STATUS], settle=0.3)
    finally:
        stop.set()
        thread.join()
    assert report.removed == []
    assert lock.exists()


def test_a_mirror_nobody_else_uses_is_cleared_whole(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    left = [
        _touch(mirror / "refs/remotes/origin/main.lock"),
        _touch(mirror / "packed-refs.lock"),
        _touch(mirror / "config.lock", "[core]\n"),
        _touch(mirror / "objects/pack/tmp_pack_Ab3dE9", "a killed fetch's pack"),
    ]
    first = recovery.MirrorLock(tmp_path)
    assert first.exclusive
    report = recovery.recover(mirror, branches=[STATUS], whole=first.exclusive, settle=0.1)
    first.share()
    second = recovery.MirrorLock(tmp_path)  # another serve of the same mirror, while the first runs
    assert not second.exclusive  # so it clears only its own branch's leftovers
    second.release()
    first.release()
    assert sorted(report.removed) == sorted(str(p) for p in left)
    subprocess.run(["git", "--git-dir", str(mirror), "fsck"], check=True, capture_output=True)
