"""Hour bookmarks on the status branch, and `history` of an archived resource starting at one
(store/statustree.py, store/history.py; docs/growth.md "History after a long time")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gitops_acp.resources.meta import ANNOTATION_FIRST_CHECKPOINT, Kind, rfc3339, status_path
from gitops_acp.store import history
from gitops_acp.store.git import ReadOnlyRepo
from gitops_acp.store.status import Change, StatusWriter
from gitops_acp.store.statustree import bookmark_path
from tests.conftest import git

BRANCH = "acp/status"
HOUR = 3600.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % HOUR  # the start of an hour


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def task(name: str, old: str, new: str, *, began: float) -> Change:
    document: dict[str, Any] = {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "annotations": {ANNOTATION_FIRST_CHECKPOINT: rfc3339(began)}},
        "spec": {"agentRef": {"name": "a"}, "userMessage": f"hi {name}"},
        "status": {"phase": new, "statusDetail": f"{old} to {new}"},
    }
    return Change(Kind.Task, name, document, old, new)


def archive(name: str) -> Change:
    return Change(Kind.Task, name, None, "FinalAnswer", "Archived", archive=True)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "repo.git"
    git(tmp_path, "init", "-q", "--bare", str(path))
    return path


def show(repo: Path, rev: str, path: str) -> str | None:
    listed = git(repo, "ls-tree", "--name-only", rev, "--", path)
    return git(repo, "show", f"{rev}:{path}") if listed else None


def test_the_first_commit_of_an_hour_bookmarks_the_last_one_before_it(bare: Path) -> None:
    clock = Clock(T0 + 10)

    async def scenario() -> None:
        writer = StatusWriter(bare, clock=clock)
        await writer.start()
        await writer.commit([task("a", "-", "Pending", began=T0)], spec_commit="m")
        clock.now = T0 + 20
        await writer.commit([task("a", "Pending", "ReadyForLLM", began=T0)], spec_commit="m")
        clock.now = T0 + 5 * HOUR + 1  # four hours without a commit: one bookmark, for the hour before
        await writer.commit([task("a", "ReadyForLLM", "FinalAnswer", began=T0)], spec_commit="m")
        await writer.close()
        # A restarted writer knows the tip's hour from its commit.
        clock.now = T0 + 6 * HOUR
        again = StatusWriter(bare, clock=clock)
        await again.start()
        await again.commit([task("b", "-", "Pending", began=clock.now)], spec_commit="m")
        await again.close()

    asyncio.run(scenario())
    _first, second, third, fourth = git(bare, "rev-list", "--reverse", BRANCH).split()
    assert git(bare, "ls-tree", "-r", "--name-only", second, "bookmarks") == ""  # the same hour: none
    assert show(bare, third, bookmark_path(T0)) == second
    assert show(bare, fourth, bookmark_path(T0)) == second
    assert show(bare, fourth, bookmark_path(T0 + 5 * HOUR)) == third
    assert git(bare, "ls-tree", "-r", "--name-only", fourth, "bookmarks").split() == [
        bookmark_path(T0),
        bookmark_path(T0 + 5 * HOUR),
    ]
    hour = time.gmtime(int(git(bare, "log", "-1", "--format=%ct", third)))
    assert bookmark_path(T0 + 5 * HOUR) == time.strftime("bookmarks/%Y-%m/%dT%H", hour)


class Recorder:
    """A repository reader that records where each `git log` started, and can hide bookmarks."""

    def __init__(self, repo: ReadOnlyRepo, *, bookmarks: bool = True, garbage: bool = False) -> None:
        self.repo, self.bookmarks, self.garbage = repo, bookmarks, garbage
        self.starts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    def log(self, rev: str, **kwargs: Any) -> Any:
        self.starts.append(rev)
        return self.repo.log(rev, **kwargs)

    def read_tree(self, treeish: str, path: str = "") -> Any:
        if path.startswith("bookmarks") and not self.bookmarks:
            return None
        return self.repo.read_tree(treeish, path)

    def read_first_files(self, wanted: list[tuple[str, list[str]]]) -> Any:
        found = self.repo.read_first_files(wanted)
        if self.garbage:  # every bookmark read says something that is not a commit
            marked = [paths[0].startswith("bookmarks/") for _, paths in wanted]
            garbage = (0, b"not a commit\n")
            found = [garbage if mark and hit else hit for mark, hit in zip(marked, found, strict=True)]
        return found


@pytest.mark.parametrize("archived_in", [1, 3, 20, 38, 39])  # hours after the task ran
def test_history_of_an_archived_task_starts_at_the_first_bookmark_holding_it(
    bare: Path, archived_in: int
) -> None:
    clock = Clock(T0 + 1)

    async def scenario() -> None:
        writer = StatusWriter(bare, clock=clock)
        await writer.start()
        await writer.commit([task("old", "-", "ReadyForLLM", began=T0 + 1)], spec_commit="m")
        clock.now = T0 + 2
        await writer.commit([task("old", "ReadyForLLM", "FinalAnswer", began=T0 + 1)], spec_commit="m")
        for hour in range(1, 40):  # other tasks for 39 hours; `old` archived in one of them
            clock.now = T0 + hour * HOUR + 5
            await writer.commit([task(f"n{hour}", "-", "ReadyForLLM", began=clock.now)], spec_commit="m")
            if hour == archived_in:
                clock.now += 1
                await writer.commit([archive("old")], spec_commit="")
            clock.now += 10
            await writer.commit([task(f"n{hour}", "ReadyForLLM", "FinalAnswer", began=T0)], spec_commit="m")
        await writer.close()

    asyncio.run(scenario())
    tip = git(bare, "rev-parse", BRANCH)
    archived = git(bare, "log", "-1", "--format=%H", "--grep=^archive: ", BRANCH)
    mark = show(bare, tip, bookmark_path(T0 + archived_in * HOUR))  # the last commit of the archive's hour
    if archived_in < 39:
        assert mark is not None
        assert git(bare, "rev-parse", f"{mark}~1") == archived
    else:
        assert mark is None  # the tip's hour: no bookmark yet

    with ReadOnlyRepo.open(bare) as repo:
        bounded = Recorder(repo)
        found = history.events(bounded, branch=BRANCH, kind="Task", name="old")  # type: ignore[arg-type]
        assert bounded.starts == [mark or f"refs/heads/{BRANCH}"]
        assert [(e.old_phase, e.new_phase, e.detail) for e in found] == [
            ("FinalAnswer", "Archived", "archived"),
            ("ReadyForLLM", "FinalAnswer", "ReadyForLLM to FinalAnswer"),
            ("-", "ReadyForLLM", "- to ReadyForLLM"),
        ]
        # Without bookmarks, or with one that is not a commit: from the tip, the same events.
        for reader in (Recorder(repo, bookmarks=False), Recorder(repo, garbage=True)):
            assert history.events(reader, branch=BRANCH, kind="Task", name="old") == found  # type: ignore[arg-type]
            assert reader.starts == [f"refs/heads/{BRANCH}"]
        # A task still in the tip is walked from the tip.
        live = Recorder(repo)
        assert len(history.events(live, branch=BRANCH, kind="Task", name="n39")) == 2  # type: ignore[arg-type]
        assert live.starts == [f"refs/heads/{BRANCH}"]
    assert status_path(Kind.Task, "old", root="archive") in git(bare, "ls-tree", "-r", "--name-only", tip)
