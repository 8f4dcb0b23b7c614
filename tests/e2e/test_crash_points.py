"""A SIGKILL at each step of a checkpoint commit, and the locks a kill leaves: the next start recovers.

`GITOPS_ACP_CRASH_AT=<point>:<n>` (gitops_acp/faults.py) makes `serve` SIGKILL itself (and, at
`lock-taken`, its `git update-ref` first, as a container's kill takes every process) the n-th time
it passes a step of writing a group commit: objects written (temporary pack files), pack renamed
(its index not yet), pack written, lock taken (`acp/status.lock` exists), ref moved. Each test
checks that the kill left what it should (so it proves something), then that one `serve --once`,
started as an operator would, finishes every task with a sound repository and nothing left behind.

Then the locks that are not a predecessor's: a second `serve` of the same branch refuses to start,
and a ref lock that someone keeps holding is named as such: `/readyz` turns not ready, `serve
--once` exits 1 instead of waiting forever.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    AcpRepo,
    Background,
    Stub,
    cli,
    one_error_line,
    serve_args,
    wait_for,
)

pytestmark = pytest.mark.e2e

N = 6
TASKS = {f"point-{i}": f"Crash point {i}" for i in range(N)}


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60)


def _leftovers(repo: Path) -> dict[str, list[str]]:
    """What a killed writer can leave in .git: lock files, temporary files, packs without an index."""
    git_dir = repo / ".git"
    packs = git_dir / "objects" / "pack"
    return {
        "locks": sorted(str(p.relative_to(git_dir)) for p in git_dir.rglob("*.lock")),
        "temporary": sorted(str(p.relative_to(git_dir)) for p in (git_dir / "objects").rglob("tmp_*")),
        "orphan packs": sorted(p.name for p in packs.glob("*.pack") if not p.with_suffix(".idx").exists()),
    }


def _assert_sound(repo: AcpRepo) -> None:
    fsck = _git(repo.path, "fsck", "--no-dangling", "--no-progress")
    assert fsck.returncode == 0, fsck.stderr
    for word in ("error", "missing", "broken", "garbage", "no corresponding .idx"):
        assert word not in fsck.stdout + fsck.stderr, fsck.stdout + fsck.stderr
    assert _leftovers(repo.path) == {"locks": [], "temporary": [], "orphan packs": []}


EXPECTED = {
    # point: what the kill must have left behind (the precondition of the test)
    "objects-written": "temporary",
    "pack-renamed": "orphan packs",
    "pack-written": None,
    "lock-taken": "locks",
    "ref-moved": None,
}


@pytest.mark.parametrize("point", sorted(EXPECTED))
def test_a_kill_at_each_step_of_a_commit_is_recovered_at_the_next_start(
    point: str, acp_repo: AcpRepo, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.rules(*({"match": f"^{m}$", "delayMs": 50} for m in TASKS.values()))
    acp_repo.add_tasks(TASKS)
    monkeypatch.setenv("GITOPS_ACP_CRASH_AT", f"{point}:3")  # the third group commit: tasks in flight
    crashed = cli(*serve_args(acp_repo, once=True), timeout=60)
    monkeypatch.delenv("GITOPS_ACP_CRASH_AT")
    assert crashed.returncode == -9, (crashed.returncode, crashed.stderr)
    left = _leftovers(acp_repo.path)
    if EXPECTED[point] is not None:
        assert left[EXPECTED[point]], f"the kill at {point} left nothing to recover: {left}"
    if point == "lock-taken":
        assert "refs/heads/acp/status.lock" in left["locks"]
    before = acp_repo.finished_tasks()
    assert len(before) < N, "every task finished before the kill: nothing was in flight"

    result = cli(*serve_args(acp_repo, once=True), timeout=90)
    assert result.returncode == 0, result.stderr
    assert "was killed: recovering what it left" in result.stderr
    assert acp_repo.finished_tasks() == set(TASKS)
    _assert_sound(acp_repo)
    for name in TASKS:
        status = acp_repo.status("tasks", name)
        assert status is not None
        assert status["status"]["phase"] == "FinalAnswer", (name, status["status"])
        # No checkpoint lost or doubled: the task's commits form one unbroken chain of phases.
        moves = acp_repo.transitions("Task", name)
        for (_, new, _), (old, _, commit) in itertools.pairwise(moves):
            assert old == new, f"{name}: {commit.sha[:10]} breaks the chain"


def test_a_second_serve_of_the_same_branch_refuses_to_start(
    acp_repo: AcpRepo, serve_bg: Callable[..., Background]
) -> None:
    first = serve_bg(acp_repo)
    wait_for(lambda: "serving" in first.stderr(), timeout=60, what="the first serve to start")
    second = cli(*serve_args(acp_repo, once=True), timeout=60)
    line = one_error_line(second)
    assert "already serving acp/status" in line, line
    assert f"pid {first.proc.pid}" in line, line
    assert first.proc.poll() is None  # the first one was not disturbed
    # Another status branch is another reconciler's business: it may run beside the first.
    beside = cli(*serve_args(acp_repo, "--status-branch", "acp/other", once=True), timeout=60)
    assert beside.returncode == 0, beside.stderr


@pytest.fixture
def held_lock(acp_repo: AcpRepo) -> Iterator[Callable[[], None]]:
    """`refs/heads/acp/status.lock` held by a live process that keeps rewriting it; call to release."""
    lock = acp_repo.path / ".git" / "refs" / "heads" / "acp" / "status.lock"
    stop = threading.Event()

    def hold() -> None:
        lock.parent.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            lock.write_text(f"{time.time()}\n")  # touched every 50 ms: clearly alive
            stop.wait(0.05)
        lock.unlink(missing_ok=True)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()

    def release() -> None:
        stop.set()
        thread.join(timeout=5)

    yield release
    release()


def test_a_lock_someone_keeps_holding_fails_serve_once_instead_of_stalling(
    acp_repo: AcpRepo, stub: Stub, held_lock: Callable[[], None]
) -> None:
    acp_repo.add_tasks({"locked-out": "Hello"})
    started = time.monotonic()
    result = cli(*serve_args(acp_repo, once=True), timeout=90)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 60
    assert "held by another process" in result.stderr
    assert "a checkpoint could not be committed" in result.stderr
    assert "Traceback" not in result.stderr.split("stopping:")[-1]
    held_lock()
    again = cli(*serve_args(acp_repo, once=True), timeout=90)
    assert again.returncode == 0, again.stderr
    assert acp_repo.finished_tasks() == {"locked-out"}


def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_readyz_turns_not_ready_while_the_status_branch_cannot_be_written(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background], held_lock: Callable[[], None]
) -> None:
    server = serve_bg(acp_repo, "--http", "127.0.0.1:0")

    def printed() -> str | None:
        match = re.search(r"listening on (http://[0-9.]+:\d+)", server.stderr())
        return match[1] if match else None

    url: str = wait_for(printed, timeout=60, interval=0.1, what="serve --http to listen")
    acp_repo.add_tasks({"while-locked": "Hello"})
    _code, body = wait_for(
        lambda: (r := _readyz(url))[0] == 503 and "cannot be written" in r[1].get("reason", "") and r,
        timeout=60,
        interval=0.2,
        what="/readyz to say the status branch cannot be written",
    )
    assert body["status"] == "not ready"
    assert "held by another process" in body["reason"]
    held_lock()
    wait_for(lambda: _readyz(url)[0] == 200, timeout=60, interval=0.2, what="/readyz to recover")
    wait_for(lambda: acp_repo.finished_tasks() == {"while-locked"}, timeout=60, what="the task to finish")
