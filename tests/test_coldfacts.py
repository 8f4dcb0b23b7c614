"""Finished tasks' facts kept across restarts (reactor/coldfacts.py): a start reads no finished file it knew.

The real StatusWriter on a real repository: finished tasks and tool calls committed, held cold by
the real State, their facts saved; a new writer's start skips exactly the files whose blob has
saved facts, the State holds them cold from those facts and reads each back, when asked, as
committed. The file is a cache by content: another version's, a broken one or a missing one is
not used, and a file changed since (another blob) is read.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

import pytest

from gitops_acp import __version__
from gitops_acp.controllers.cold import COLD_AFTER, Cold, Facts, facts_of
from gitops_acp.controllers.state import State
from gitops_acp.reactor import coldfacts
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import LABEL_PARENT_TOOLCALL, Kind, status_path
from gitops_acp.resources.models import AnyResource, from_document, to_document
from gitops_acp.store import yamlio
from gitops_acp.store.git import ReadOnlyRepo
from gitops_acp.store.status import StatusWriter
from gitops_acp.telemetry import metrics
from tests.test_cold import over_writer
from tests.test_metrics import sample
from tests.test_retention import NOW, task, toolcall

FACTS = [
    (bytes(range(20)), Facts("FinalAnswer", True, None, None, NOW, True)),
    (bytes(range(1, 21)), Facts("Failed", True, "boss-tc-01", 3600.0, NOW + 0.123456, True)),
    (bytes(range(2, 22)), Facts("Succeeded", True, "boss", None, None, False)),  # a branch to tidy
    (bytes(range(3, 23)), Facts("ReadyForLLM", False, None, None, None)),  # unfinished: not kept
]


def test_saved_facts_read_back_as_they_were(tmp_path: Path) -> None:
    path = coldfacts.path_for(tmp_path, "acp/status")
    assert path.name == "cold-facts-acp%2Fstatus"
    assert coldfacts.save(path, FACTS) == 3
    assert coldfacts.load(path) == dict(FACTS[:3])
    assert not list(tmp_path.glob("*.tmp-*"))
    # What `get --phase` reads of them: each finished one's phase by its blob, as git names it.
    assert coldfacts.phases(path) == {sha.hex(): facts.phase for sha, facts in FACTS[:3]}


@pytest.mark.parametrize(
    "text",
    [
        f"gitops-acp cold facts 1 {__version__}0\n",  # another version: its facts may differ
        "gitops-acp cold facts 2\n",
        "",
    ],
)
def test_another_versions_file_is_not_used(tmp_path: Path, text: str) -> None:
    path = tmp_path / "facts"
    coldfacts.save(path, FACTS)
    body = path.read_bytes().split(b"\n", 1)[1]
    path.write_bytes(text.encode() + body)
    assert coldfacts.load(path) == {}
    assert coldfacts.phases(path) == {}


def test_a_broken_or_missing_file_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "facts"
    assert coldfacts.load(path) == {}
    coldfacts.save(path, FACTS)
    path.write_bytes(path.read_bytes() + b"0011\tFinalAnswer\t-\n")  # cut short by a full disk
    with caplog.at_level(logging.WARNING, logger="gitops_acp"):
        assert coldfacts.load(path) == {}
    assert "unreadable, not used" in caplog.text
    assert coldfacts.phases(path) == {}
    path.unlink()
    assert coldfacts.phases(path) == {}


def test_a_restart_holds_the_finished_ones_it_knew_without_reading_them(tmp_path: Path) -> None:
    repo = tmp_path / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    facts_file = tmp_path / "facts"
    clock = [NOW]
    child = task("child", "FinalAnswer", done=NOW, labels={LABEL_PARENT_TOOLCALL: "boss-tc-01"})
    finished = [
        task("done", "FinalAnswer", done=NOW, ttl=60),
        child,
        toolcall("boss-tc-01", "boss", "Succeeded"),
        task("failed", "Failed", done=NOW),
    ]
    committed: dict[Key, dict[str, object]] = {}

    async def first_run() -> None:
        reader = ReadOnlyRepo.open(repo)
        writer = StatusWriter(repo)
        await writer.start()
        try:
            state = over_writer(writer, reader, clock)
            await state.checkpoint(*finished[:2])
            clock[0] += COLD_AFTER + 1
            await state.checkpoint(*finished[2:], task("running", "ReadyForLLM"))  # sweeps the first two
            for obj in [*finished, task("running", "ReadyForLLM")]:
                key = (Kind(obj.kind), obj.metadata.name)
                found = state.observed(*key)
                assert found is not None
                committed[key] = to_document(found)
            held = dict(state.observed_entries())
            assert not any(isinstance(held[key], Cold) for key in committed)
            # Two read back from cold (unchanged), two finished lately (warm, their blob known):
            # none cold at this moment, and all four saved.
            assert len(state.cold_facts()) == len(finished)
            coldfacts.save(facts_file, state.cold_facts())
        finally:
            await writer.close()
            reader.close()

    asyncio.run(first_run())
    # By hand, while nothing serves: "failed" gets another file (another blob): read, not known.
    path = status_path(Kind.Task, "failed")
    worktree = tmp_path / "edit"
    subprocess.run(["git", "clone", "-q", "-b", "acp/status", str(repo), str(worktree)], check=True)
    edited = committed[(Kind.Task, "failed")] | {"status": {"phase": "Failed", "error": "by hand"}}
    (worktree / path).write_bytes(yamlio.dump(edited))
    for args in (["commit", "-qam", "by hand"], ["push", "-q", "origin", "acp/status"]):
        subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@b", *args], cwd=worktree, check=True)

    saved = coldfacts.load(facts_file)
    asked: list[Key] = []

    def known(key: Key, blob: str) -> str | None:
        asked.append(key)
        held = saved.get(bytes.fromhex(blob))
        return None if held is None else held.phase

    async def restart() -> None:
        reader = ReadOnlyRepo.open(repo)
        writer = StatusWriter(repo)
        metrics.TASKS.labels("FinalAnswer").set(99)
        documents = await writer.start(known=known)
        try:
            blobs = writer.loaded_blobs()
            unread = {key for key in blobs if key not in documents}
            assert unread == {(Kind.Task, "done"), (Kind.Task, "child"), (Kind.ToolCall, "boss-tc-01")}
            assert (Kind.Task, "failed") in documents  # another blob than the one it knew
            assert (Kind.Task, "running") in documents
            assert len(asked) == len(blobs)
            # The gauge counts the tasks it knew by their saved phase.
            assert sample("gitops_acp_tasks", phase="FinalAnswer") == 2
            state = State(
                lambda changes, spec: writer.submit(changes, spec_commit=spec), read_blob=reader.read_blob
            )
            for key in unread:
                state.load_cold(key, blobs[key], saved[bytes.fromhex(blobs[key])])
            for key, document in documents.items():
                state.load(from_document(document), document, blob=blobs[key])
            assert state.settled((Kind.Task, "done"))
            assert state.settled((Kind.ToolCall, "boss-tc-01"))  # no branch to tidy, no MCP task
            assert not state.settled((Kind.Task, "running"))
            for key in unread:
                held = dict(state.observed_entries())[key]
                assert isinstance(held, Cold)
                found = state.observed(*key)
                assert found is not None
                assert to_document(found) == committed[key]  # read back, as it was committed
                assert facts_of(found) == held.facts
        finally:
            await writer.close()
            reader.close()

    asyncio.run(restart())


def test_settled_is_a_finished_task_with_nothing_left_to_do() -> None:
    """What a start (and a Task file leaving main) need not reconcile: answered, delivered or with
    nothing to deliver, no checkpoint in flight; cold or warm alike."""
    landing: asyncio.Future[str | None] | None = None

    async def commit(changes: object, spec: str) -> str | None:
        if landing is not None:
            return await landing
        return "c"

    state = State(commit, clock=lambda: NOW)

    def with_status(name: str, **status: object) -> AnyResource:
        document = to_document(toolcall(name, "done", "Succeeded"))
        document["status"] |= status
        return from_document(document)

    def with_mcp_task(name: str, task: dict[str, str]) -> AnyResource:
        return with_status(name, mcpTask=task)

    asked_on_a_branch = with_status("asked", approval={"branch": "acp/approvals/asked"})

    async def scenario() -> None:
        nonlocal landing
        pending = {"delivery": {"url": "http://127.0.0.1:9/x", "state": "Pending", "attempts": 1}}
        await state.checkpoint(
            task("done", "FinalAnswer", done=NOW),
            task("failed", "Failed", done=NOW),
            task("running", "ReadyForLLM"),
            task("delivering", "FinalAnswer", done=NOW, status=pending),
            toolcall("call", "done", "Succeeded"),
            asked_on_a_branch,
            with_mcp_task("cancel-me", {"taskId": "t-1", "server": "s", "status": "working"}),
            with_mcp_task("over", {"taskId": "t-2", "server": "s", "status": "completed"}),
        )
        assert state.settled((Kind.Task, "done"))
        assert state.settled((Kind.Task, "failed"))
        assert not state.settled((Kind.Task, "running"))
        assert not state.settled((Kind.Task, "delivering"))  # its answer is still on its way
        assert state.settled((Kind.ToolCall, "call"))
        assert not state.settled((Kind.ToolCall, "asked"))  # a branch (and pull request) to tidy
        assert not state.settled((Kind.ToolCall, "cancel-me"))  # its MCP task may still run
        assert state.settled((Kind.ToolCall, "over"))
        assert not state.settled((Kind.Task, "nobody"))
        landing = asyncio.get_running_loop().create_future()
        labelled = task("done", "FinalAnswer", done=NOW, labels={"team": "a"})
        writing = asyncio.ensure_future(state.checkpoint(labelled))
        await asyncio.sleep(0)
        assert not state.settled((Kind.Task, "done"))  # a checkpoint of it is with the writer
        landing.set_result("c2")
        await writing
        assert state.settled((Kind.Task, "done"))

    asyncio.run(scenario())
