"""Finished tasks and tool calls kept cold in memory (controllers/cold.py, DESIGN §9).

The real State rules over a commit function that records what it is given: a finished resource
becomes cold COLD_AFTER seconds after it landed, reads give back an equal object, writes and
archiving work on cold ones, and retention finds the same groups from cold facts.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from pathlib import Path

import pytest

from gitops_acp.controllers.cold import COLD_AFTER, WARM_FINISHED, Cold
from gitops_acp.controllers.state import State
from gitops_acp.reactor.retention import due_groups
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import LABEL_PARENT_TOOLCALL, Kind
from gitops_acp.resources.models import AnyResource, to_document
from gitops_acp.store.git import ReadOnlyRepo
from gitops_acp.store.status import Change, StatusWriter
from tests.test_retention import NOW, items, task, toolcall


class Recorder:
    def __init__(self) -> None:
        self.commits: list[list[Change]] = []

    async def __call__(self, changes: Sequence[Change], spec_commit: str) -> str | None:
        self.commits.append(list(changes))
        return f"c{len(self.commits)}"


def over_writer(writer: StatusWriter, reader: ReadOnlyRepo, clock: list[float]) -> State:
    """The State `serve` builds: checkpoints through the real status writer, cold ones read back
    from the repository, on a clock the test moves."""
    return State(
        lambda changes, spec: writer.submit(changes, spec_commit=spec),
        clock=lambda: clock[0],
        read_blob=reader.read_blob,
    )


def held(state: State, key: Key) -> AnyResource | Cold | None:
    return dict(state.observed_entries()).get(key)


def test_a_finished_task_turns_cold_after_a_while_and_reads_back_equal() -> None:
    clock = [NOW]
    state = State(Recorder(), clock=lambda: clock[0])

    async def scenario() -> None:
        done = task("t", "FinalAnswer", done=NOW)
        running = task("r", "ReadyForLLM")
        await state.checkpoint(done, running)
        landed = state.observed(Kind.Task, "t")
        assert landed is not None
        assert not isinstance(held(state, (Kind.Task, "t")), Cold)
        clock[0] += COLD_AFTER + 1
        await state.checkpoint(task("other", "FinalAnswer", done=NOW))  # a landing sweeps
        cold = held(state, (Kind.Task, "t"))
        assert isinstance(cold, Cold)
        assert cold.facts.terminal
        assert cold.facts.phase == "FinalAnswer"
        assert cold.facts.owner is None
        assert not isinstance(held(state, (Kind.Task, "r")), Cold)  # unfinished: never cold
        assert not gc.is_tracked(cold.document)
        again = state.observed(Kind.Task, "t")
        assert again is not None
        assert to_document(again) == to_document(landed)
        assert not isinstance(held(state, (Kind.Task, "t")), Cold)  # read: warm again for a while

    asyncio.run(scenario())


def test_at_most_warm_finished_stay_parsed_however_fast_they_land() -> None:
    """At 700 tasks/s, COLD_AFTER alone kept ~14,000 parsed (bench_growth.py, never archiving)."""
    state = State(Recorder(), clock=lambda: NOW)  # the clock stands still: only the count cools

    async def scenario() -> None:
        for i in range(WARM_FINISHED + 50):
            await state.checkpoint(task(f"t{i}", "FinalAnswer", done=NOW))
        entries = dict(state.observed_entries())
        warm = [key for key, obj in entries.items() if not isinstance(obj, Cold)]
        assert len(warm) == WARM_FINISHED
        assert (Kind.Task, "t0") not in warm  # the oldest went cold first
        assert (Kind.Task, f"t{WARM_FINISHED + 49}") in warm
        # A cold one read again, unchanged, goes cold as the same document (not written again).
        cold = entries[(Kind.Task, "t0")]
        assert isinstance(cold, Cold)
        assert state.observed(Kind.Task, "t0") is not None
        for i in range(WARM_FINISHED):
            await state.checkpoint(task(f"u{i}", "FinalAnswer", done=NOW))
        assert held(state, (Kind.Task, "t0")) is cold

    asyncio.run(scenario())


def test_a_finished_tool_call_stays_parsed_until_its_task_in_flight_moves_on() -> None:
    """3,000 tool tasks at once: WARM_FINISHED others finished between a call's end and its task
    reading the result, which was then read back from git and parsed (bench_tasks.py --tools)."""
    clock = [NOW]
    state = State(Recorder(), clock=lambda: clock[0])

    async def scenario() -> None:
        await state.checkpoint(task("t", "ToolCallsPending"), toolcall("t-1", "t", "Succeeded"))
        await state.checkpoint(task("c", "FinalAnswer", done=NOW, labels={LABEL_PARENT_TOOLCALL: "p-1"}))
        await state.checkpoint(toolcall("p-1", "p", "Pending"))
        await state.checkpoint(toolcall("done-1", "gone", "Succeeded"))  # its task is not held here
        clock[0] += COLD_AFTER + 1
        for i in range(WARM_FINISHED + 10):
            await state.checkpoint(task(f"o{i}", "FinalAnswer", done=NOW))
        assert not isinstance(held(state, (Kind.ToolCall, "t-1")), Cold)  # its task reads it next
        assert not isinstance(held(state, (Kind.Task, "c")), Cold)  # its parent tool call reads it
        assert isinstance(held(state, (Kind.ToolCall, "done-1")), Cold)
        assert isinstance(held(state, (Kind.Task, "o0")), Cold)
        # The task collected the result and moved on: the call cools as any finished one.
        await state.checkpoint(task("t", "ReadyForLLM"))
        await state.checkpoint(task("x", "FinalAnswer", done=NOW))  # a landing sweeps
        assert isinstance(held(state, (Kind.ToolCall, "t-1")), Cold)
        assert not isinstance(held(state, (Kind.Task, "c")), Cold)
        # The parent call finished (it read its child's answer): the child cools too.
        await state.checkpoint(toolcall("p-1", "p", "Succeeded"))
        await state.checkpoint(task("y", "FinalAnswer", done=NOW))
        assert isinstance(held(state, (Kind.Task, "c")), Cold)

    asyncio.run(scenario())


def test_a_cold_task_is_written_and_archived_as_a_warm_one() -> None:
    clock = [NOW]
    recorder = Recorder()
    state = State(recorder, clock=lambda: clock[0])

    async def scenario() -> None:
        await state.checkpoint(task("t", "FinalAnswer", done=NOW), toolcall("t-1", "t", "Succeeded"))
        clock[0] += COLD_AFTER + 1
        await state.checkpoint(task("x", "Pending"))
        assert isinstance(held(state, (Kind.ToolCall, "t-1")), Cold)
        # Unchanged: nothing is committed for it (the no-op rule reads the cold one).
        before = len(recorder.commits)
        await state.checkpoint(task("t", "FinalAnswer", done=NOW))
        assert len(recorder.commits) == before
        assert await state.archive([(Kind.Task, "t"), (Kind.ToolCall, "t-1")]) is not None
        assert [(c.key, c.old_phase, c.new_phase) for c in recorder.commits[-1]] == [
            ((Kind.Task, "t"), "FinalAnswer", "Archived"),
            ((Kind.ToolCall, "t-1"), "Succeeded", "Archived"),
        ]
        assert state.observed(Kind.ToolCall, "t-1") is None

    asyncio.run(scenario())


def test_start_up_keeps_finished_resources_cold_and_retention_reads_their_facts() -> None:
    child = task("c", "FinalAnswer", done=NOW - 100, labels={LABEL_PARENT_TOOLCALL: "p-1"})
    objects = [
        task("p", "FinalAnswer", done=NOW - 100),
        toolcall("p-1", "p", "Succeeded"),
        child,
        task("young", "FinalAnswer", done=NOW - 5),
        task("running", "ReadyForLLM"),
        toolcall("running-1", "running", "Pending"),
    ]
    state = State(Recorder(), clock=lambda: NOW)
    for obj in objects:
        state.load(obj, to_document(obj))
    entries = dict(state.observed_entries())
    assert {key for key, obj in entries.items() if isinstance(obj, Cold)} == {
        (Kind.Task, "p"),
        (Kind.ToolCall, "p-1"),
        (Kind.Task, "c"),
        (Kind.Task, "young"),
    }
    cold = due_groups(state.observed_entries(), now=NOW, retain=60)
    warm = due_groups(items(*objects), now=NOW, retain=60)
    assert cold == warm
    assert [group.keys for group in cold[0]] == [
        ((Kind.Task, "p"), (Kind.ToolCall, "p-1"), (Kind.Task, "c")),
    ]
    assert cold[1] == NOW - 5 + 60
    assert state.observed(Kind.Task, "c") == child


def test_a_status_file_json_cannot_hold_is_kept_cold_from_its_model() -> None:
    """A person's commit may leave a YAML date in a free-form field: start-up must not fail on it."""
    import datetime

    from gitops_acp.resources.models import from_document

    document = to_document(task("t", "FinalAnswer", done=NOW))
    document["status"]["delivery"] = {"state": "Delivered", "at": datetime.datetime(2026, 12, 5, 8, 0)}
    obj = from_document(document)
    state = State(Recorder(), clock=lambda: NOW)
    state.load(obj, document)
    assert isinstance(held(state, (Kind.Task, "t")), Cold)
    again = state.observed(Kind.Task, "t")
    assert again is not None
    assert to_document(again) == to_document(obj)


def test_retention_reads_a_parsed_resources_facts_once_per_object() -> None:
    from gitops_acp.controllers.cold import Facts, facts_of

    running = task("t", "ReadyForLLM")
    cache: dict[Key, tuple[AnyResource, Facts | None]] = {}
    assert due_groups(items(running), now=NOW, retain=60, facts_cache=cache) == ([], None)
    assert cache[(Kind.Task, "t")] == (running, facts_of(running))
    # The same object: its cached facts are used as they are (here, planted: finished long ago).
    cache[(Kind.Task, "t")] = (running, Facts("FinalAnswer", True, None, None, NOW - 1000))
    groups, _ = due_groups(items(running), now=NOW, retain=60, facts_cache=cache)
    assert [group.root for group in groups] == ["t"]
    # A new object of the same key (a new checkpoint): read again.
    again = task("t", "ReadyForLLM")
    assert due_groups(items(again), now=NOW, retain=60, facts_cache=cache) == ([], None)
    assert cache[(Kind.Task, "t")][0] is again
    # Gone from the tip: forgotten.
    due_groups([], now=NOW, retain=60, facts_cache=cache)
    assert cache == {}


def test_with_a_repository_a_cold_one_is_its_status_files_blob_and_is_read_back_from_git(
    tmp_path: Path,
) -> None:
    """What `serve` does (reactor/manager.py): finished resources cost a sha each, not their JSON,
    and are read back through git when read again; start-up's are cold by the blob it listed."""
    import subprocess

    from gitops_acp.errors import StoreError

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    written: dict[Key, str] = {}

    def store(data: bytes) -> str:  # the writer's part: the file's blob into the repository
        found = subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=tmp_path, input=data, capture_output=True, check=True
        )
        return found.stdout.decode().strip()

    async def commit(changes: Sequence[Change], spec_commit: str) -> str | None:
        for change in changes:
            assert change.data is not None
            sha = store(change.data)
            assert sha == change.blob  # the State's sha is git's
            written[change.key] = sha
        return "c"

    reader = ReadOnlyRepo.open(tmp_path)
    reads: list[str] = []

    def read_blob(sha: str) -> bytes:
        reads.append(sha)
        return reader.read_blob(sha)

    clock = [NOW]
    state = State(commit, clock=lambda: clock[0], read_blob=read_blob)

    async def scenario() -> None:
        await state.checkpoint(task("t", "FinalAnswer", done=NOW), toolcall("t-1", "t", "Succeeded"))
        landed = state.observed(Kind.Task, "t")
        clock[0] += COLD_AFTER + 1
        await state.checkpoint(task("other", "ReadyForLLM"))
        cold = held(state, (Kind.Task, "t"))
        assert isinstance(cold, Cold)
        assert (cold.blob, cold.document) == (written[(Kind.Task, "t")], None)
        assert cold.facts.phase == "FinalAnswer"
        assert reads == []
        again = state.observed(Kind.Task, "t")
        assert reads == [written[(Kind.Task, "t")]]
        assert again is not None
        assert landed is not None
        assert to_document(again) == to_document(landed)

    asyncio.run(scenario())
    try:
        # Start-up: the tip's files, each with the blob it was listed with.
        restarted = State(commit, clock=lambda: NOW, read_blob=read_blob)
        obj = task("t", "FinalAnswer", done=NOW)
        restarted.load(obj, to_document(obj), blob=written[(Kind.Task, "t")])
        restarted.load(
            obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"name": "gone"})}),
            to_document(obj),
            blob="0" * 40,
        )
        assert isinstance(held(restarted, (Kind.Task, "t")), Cold)
        assert restarted.observed(Kind.Task, "t") is not None
        # A blob git does not have is an error, never "no such task" (which could start it again).
        with pytest.raises(StoreError, match="no blob"):
            restarted.observed(Kind.Task, "gone")
    finally:
        reader.close()


def test_a_cold_one_is_read_back_from_the_pack_the_status_writer_wrote(tmp_path: Path) -> None:
    """The writer's packs appear after the reader's `cat-file` started: it finds them (git looks
    for new packs when an object is missing), and the task reads back as committed."""
    import subprocess

    repo = tmp_path / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    reader = ReadOnlyRepo.open(repo)
    clock = [NOW]

    async def scenario() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        try:
            state = over_writer(writer, reader, clock)
            await state.checkpoint(task("first", "FinalAnswer", done=NOW))
            assert state.observed(Kind.Task, "first") is not None
            assert reader.cat("HEAD") is None  # the cat-file runs, before the next pack exists
            await state.checkpoint(task("t", "FinalAnswer", done=NOW), toolcall("t-1", "t", "Succeeded"))
            landed = state.observed(Kind.Task, "t")
            call = state.observed(Kind.ToolCall, "t-1")
            clock[0] += COLD_AFTER + 1
            await state.checkpoint(task("other", "ReadyForLLM"))
            cold = held(state, (Kind.Task, "t"))
            assert isinstance(cold, Cold)
            assert cold.blob is not None
            assert landed is not None
            assert to_document(state.observed(Kind.Task, "t")) == to_document(landed)
            assert isinstance(held(state, (Kind.ToolCall, "t-1")), Cold)
            assert call is not None
            assert to_document(state.observed(Kind.ToolCall, "t-1")) == to_document(call)
        finally:
            await writer.close()

    try:
        asyncio.run(scenario())
    finally:
        reader.close()
