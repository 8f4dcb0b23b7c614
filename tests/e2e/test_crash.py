"""Crash recovery: SIGKILL `serve` while tasks are in flight, twice, then finish with `serve --once`.

Start-up is recovery (DESIGN §3): whatever the kill interrupted, the status branch must stay a
consistent record (every file parses, `git fsck` is clean), every task must finish exactly once, and
no checkpoint may be lost or invented: each task's commits form an unbroken chain of phases.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import git
from tests.e2e.conftest import (
    STATUS_BRANCH,
    TASK_PHASES,
    AcpRepo,
    Background,
    Stub,
    wait_for,
)

pytestmark = pytest.mark.e2e

N = 20


def _message(i: int) -> str:
    return f"Crash test {i:02d}"


def _name(i: int) -> str:
    return f"crash-{i:02d}"


def _first_user(chat: dict[str, Any]) -> str:
    return str(next(m["content"] for m in chat["body"]["messages"] if m["role"] == "user"))


def _assert_consistent(repo: AcpRepo) -> None:
    """Every status file at the tip parses as a full object, and the object database is sound."""
    listed = git(repo.path, "ls-tree", "-r", "--name-only", STATUS_BRANCH, "--", "status", "archive")
    files = listed.splitlines()
    assert files
    for path in files:
        plural, name = path.split("/")[1], path.rsplit("/", 1)[1].removesuffix(".yaml")
        document = repo.status(plural, name)
        assert isinstance(document, dict), path
        assert document["metadata"]["name"] == name
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(document), path
        if plural == "tasks":
            assert (document.get("status") or {}).get("phase", "-") in TASK_PHASES, path
    fsck = git(repo.path, "fsck", "--no-dangling", "--no-progress")
    assert not [line for line in fsck.splitlines() if line.split(" ")[0] in ("error", "missing", "broken")]
    assert not list((repo.path / ".git").rglob("*.lock")), "a lock file was left behind"


def _kill_while_in_flight(
    repo: AcpRepo, serve_bg: Callable[..., Background], *, finished_before: set[str], more: int
) -> set[str] | None:
    """Start serve, SIGKILL it once `more` tasks finished but not all; return the finished ones then."""
    background = serve_bg(repo)

    def more_but_not_all() -> set[str] | None:
        finished = repo.finished_tasks()
        if len(finished) >= N:
            return None
        return finished if len(finished) >= len(finished_before) + more else None

    def progressed() -> bool:
        return (
            bool(more_but_not_all()) or len(repo.finished_tasks()) >= N or background.proc.poll() is not None
        )

    wait_for(progressed, timeout=60, interval=0.01, what="a task to finish")
    background.kill()
    assert background.proc.returncode == -signal.SIGKILL, background.stderr()
    finished = repo.finished_tasks()
    return finished if len(finished) < N else None


def test_sigkill_in_flight_loses_no_checkpoint(
    acp_repo: AcpRepo,
    stub: Stub,
    serve_bg: Callable[..., Background],
    serve_once: Callable[..., Any],
) -> None:
    # Answers arrive spread over ~1.4 s, so a kill finds some tasks finished and others waiting.
    stub.rules(*({"match": f"^{_message(i)}$", "delayMs": 200 + 60 * i} for i in range(N)))
    main_sha = acp_repo.add_tasks({_name(i): _message(i) for i in range(N)})

    kills: list[tuple[set[str], int]] = []
    finished: set[str] = set()
    for more in (1, 5):  # right after the first answer lands, then in the middle of the run
        at_kill = _kill_while_in_flight(acp_repo, serve_bg, finished_before=finished, more=more)
        if at_kill is None:  # everything finished before we could kill: nothing more to interrupt
            break
        kills.append((at_kill, len(stub.chats())))
        _assert_consistent(acp_repo)
        finished = at_kill
    assert kills, "serve finished every task before the first kill: make the stub slower"

    result = serve_once(acp_repo)
    assert result.returncode == 0, result.stderr
    _assert_consistent(acp_repo)
    assert acp_repo.main_sha() == main_sha
    assert git(acp_repo.path, "status", "--porcelain") == ""

    for i in range(N):
        name = _name(i)
        moves = acp_repo.transitions("Task", name)
        assert moves[0][0] == "-", name
        for (_, new, _), (old, _, commit) in itertools.pairwise(moves):
            assert old == new, f"{name}: {commit.sha[:10]} breaks the chain ({new} then {old} -> ...)"
        for _, new, commit in moves:
            at = acp_repo.status("tasks", name, rev=commit.sha)
            assert at is not None
            assert at["status"]["phase"] == new, f"{name}: {commit.sha[:10]} says {new}"
        assert [new for _, new, _ in moves].count("FinalAnswer") == 1, name
        assert moves[-1][:2] == ("ReadyForLLM", "FinalAnswer"), name
        status = acp_repo.status("tasks", name)
        assert status is not None
        assert status["status"]["output"] == f"Echo: {_message(i)}"
        assert status["status"]["turns"] == 1

    # A task whose answer was committed before a kill is never asked again.
    chats = stub.chats()
    for finished_then, asked_until in kills:
        asked_after = {_first_user(chat) for chat in chats[asked_until:]}
        again = sorted(name for name in finished_then if _message(int(name[-2:])) in asked_after)
        assert not again, f"asked the LLM again after their FinalAnswer was committed: {again}"
    assert {_first_user(chat) for chat in chats} >= {_message(i) for i in range(N)}
