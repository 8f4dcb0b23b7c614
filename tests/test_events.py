"""Checkpoint events (DESIGN §11): derived from real status-branch commits, followed live by the
EventHub, and served as Server-Sent Events by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gitops_acp.api.events import sse
from gitops_acp.reactor.events import EventHub, Lagged
from gitops_acp.resources.meta import Kind, legacy_status_path
from gitops_acp.store import events
from gitops_acp.store.git import ReadOnlyRepo
from gitops_acp.store.status import Change, StatusWriter
from tests.conftest import git

BRANCH = "acp/status"


def _doc(kind: str, name: str, *, phase: str | None = None, condition: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if condition:
        status["status"] = condition
    return {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {},
        "status": status,
    }


def _task(name: str, old: str, new: str) -> Change:
    return Change(Kind.Task, name, _doc("Task", name, phase=new), old, new)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "repo.git"
    git(tmp_path, "init", "-q", "--bare", str(path))
    return path


def _moves(found: list[events.Event]) -> list[tuple[str, str, str | None, str | None]]:
    return [(e.kind, e.name, e.old, e.new) for e in found]


def test_events_of_checkpoints_group_commits_deletions_and_archives(bare: Path) -> None:
    async def scenario() -> None:
        writer = StatusWriter(bare)
        await writer.start()
        await writer.commit([_task("t1", "-", "Pending")], spec_commit="m1")
        await writer.commit(
            [
                _task("t1", "Pending", "ToolCallsPending"),
                Change(
                    Kind.ToolCall,
                    "t1-a-tc-01",
                    _doc("ToolCall", "t1-a-tc-01", phase="Pending"),
                    "-",
                    "Pending",
                ),
            ],
            spec_commit="m1",
        )
        await writer.commit(
            [Change(Kind.LLM, "gpt", _doc("LLM", "gpt", condition="Ready"), "-", "Ready")], spec_commit="m1"
        )
        await writer.commit([Change(Kind.LLM, "gpt", None, "Ready", "Deleted")], spec_commit="m2")
        await writer.commit([_task("t1", "ToolCallsPending", "FinalAnswer")], spec_commit="m2")
        await writer.commit(
            [
                Change(Kind.Task, "t1", None, "FinalAnswer", "Archived", archive=True),
                Change(Kind.ToolCall, "t1-a-tc-01", None, "Pending", "Archived", archive=True),
            ],
            spec_commit="",
        )
        await writer.close()

    asyncio.run(scenario())
    shas = git(bare, "rev-list", "--reverse", BRANCH).split()
    with ReadOnlyRepo.open(bare) as repo:
        found = events.read(repo, branch=BRANCH)
        assert _moves(found) == [
            ("Task", "t1", None, "Pending"),
            ("Task", "t1", "Pending", "ToolCallsPending"),
            ("ToolCall", "t1-a-tc-01", None, "Pending"),
            ("LLM", "gpt", None, "Ready"),
            ("LLM", "gpt", "Ready", None),  # deleted: its file left the status branch
            ("Task", "t1", "ToolCallsPending", "FinalAnswer"),
            ("Task", "t1", "FinalAnswer", "Archived"),
            ("ToolCall", "t1-a-tc-01", "Pending", "Archived"),
        ]
        assert [e.commit for e in found] == [shas[0], shas[1], shas[1], *shas[2:5], shas[5], shas[5]]
        times = {sha: float(git(bare, "show", "-s", "--format=%ct", sha)) for sha in shas}
        assert all(e.time == times[e.commit] for e in found)
        assert found[0].to_json() == {
            "commit": shas[0],
            "time": events.format_time(times[shas[0]]),
            "kind": "Task",
            "name": "t1",
            "from": None,
            "to": "Pending",
        }
        # After a commit, up to a commit, the newest n, one kind, one resource.
        assert _moves(events.read(repo, branch=BRANCH, after=shas[3][:8], until=shas[4])) == [
            ("Task", "t1", "ToolCallsPending", "FinalAnswer")
        ]
        assert [e.commit for e in events.read(repo, branch=BRANCH, n=2)] == [shas[4], shas[5], shas[5]]
        assert [e.name for e in events.read(repo, branch=BRANCH, kind=Kind.LLM)] == ["gpt", "gpt"]
        tool = events.read(repo, branch=BRANCH, kind=Kind.ToolCall, name="t1-a-tc-01")
        assert _moves(tool) == [
            ("ToolCall", "t1-a-tc-01", None, "Pending"),
            ("ToolCall", "t1-a-tc-01", "Pending", "Archived"),
        ]
        assert events.read(repo, branch=BRANCH, after=shas[5]) == []
        with pytest.raises(events.UnknownCommitError, match="commit 0123abcd is not on acp/status"):
            events.read(repo, branch=BRANCH, after="0123abcd")
        with pytest.raises(events.UnknownCommitError):  # a commit of the branch, but after `until`
            events.read(repo, branch=BRANCH, after=shas[4], until=shas[2])
        assert events.read(repo, branch="acp/none") == []
    # The live hub's path (cat-file only) gives the very same events, from any commit.
    with ReadOnlyRepo.open(bare) as reader:
        assert events.follow(reader, after=None, until=shas[-1]) == found
        assert events.follow(reader, after=shas[1], until=shas[4]) == events.read(
            reader, branch=BRANCH, after=shas[1], until=shas[4]
        )
        assert events.follow(reader, after=shas[3], until=shas[1]) is None  # not an ancestor
        assert events.follow(reader, after=shas[0], until=shas[-1], max_commits=2) is None


def test_a_commit_without_lines_and_a_layout_move(tmp_path: Path) -> None:
    """A person's commit on the branch: phases read from the files. The fan-out move: no event."""
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "-b", BRANCH, str(work))
    flat = work / legacy_status_path(Kind.Task, "old")
    flat.parent.mkdir(parents=True)
    flat.write_text(json.dumps(_doc("Task", "old", phase="ReadyForLLM")))
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "seed the status by hand")
    flat.write_text(json.dumps(_doc("Task", "old", phase="Failed")))
    git(work, "commit", "-q", "-am", "fix it by hand")

    async def scenario() -> None:
        writer = StatusWriter(work)  # moves the flat file into the fan-out (a `layout:` commit)
        await writer.start()
        await writer.commit([_task("old", "Failed", "Cancelled")], spec_commit="m")
        await writer.close()

    asyncio.run(scenario())
    subjects = git(work, "log", "--reverse", "--format=%s", BRANCH).splitlines()
    assert subjects[2].startswith("layout:")
    with ReadOnlyRepo.open(work) as repo:
        found = events.read(repo, branch=BRANCH)
        assert _moves(found) == [
            ("Task", "old", None, "ReadyForLLM"),
            ("Task", "old", "ReadyForLLM", "Failed"),
            ("Task", "old", "Failed", "Cancelled"),  # nothing for the layout commit between
        ]
        assert _moves(events.read(repo, branch=BRANCH, kind=Kind.Task, name="old")) == _moves(found)
    with ReadOnlyRepo.open(work) as reader:
        assert events.follow(reader, after=None, until=git(work, "rev-parse", BRANCH)) == found


async def _writer_and_hub(bare: Path, **hub_options: Any) -> tuple[StatusWriter, EventHub]:
    writer = StatusWriter(bare)
    await writer.start()
    hub = EventHub(bare, BRANCH, **hub_options)
    writer.on_commit.append(hub.committed)
    await hub.start()
    return writer, hub


def test_hub_publishes_each_commit_and_drops_a_slow_reader(bare: Path) -> None:
    async def scenario() -> None:
        writer, hub = await _writer_and_hub(bare, max_pending=2)
        await writer.commit([_task("before", "-", "Pending")], spec_commit="m")  # nobody listens: not read
        assert hub.published == 0
        fast, slow = await hub.subscribe(), await hub.subscribe()
        start = fast.start
        assert start == git(bare, "rev-parse", BRANCH)
        got = []
        for i in range(5):
            sha = await writer.commit([_task("t", f"P{i}", f"P{i + 1}")], spec_commit="m")
            batch = await fast.next(timeout=5)
            assert batch is not None
            assert batch[0] == sha
            got.append((batch[1][0].old, batch[1][0].new))
        assert got == [(f"P{i}", f"P{i + 1}") if i else (None, "P1") for i in range(5)]
        # The slow one got the first two commits, then was dropped; the rest is history.
        first = [await slow.next(timeout=1), await slow.next(timeout=1)]
        with pytest.raises(Lagged):
            await slow.next(timeout=1)
        assert first[1] is not None
        again = await hub.subscribe()
        missed = await hub.history(first[1][0], again.start)
        assert [(e.old, e.new) for e in missed] == got[2:]
        with pytest.raises(TimeoutError):
            await fast.next(timeout=0.05)
        await writer.close()
        await hub.close()
        assert await fast.next(timeout=1) is None  # serve stops: the stream ends
        with pytest.raises(events.UnknownCommitError):
            await hub.history("0123abcd", again.start)

    asyncio.run(scenario())


# -- GET /v1/events under a real uvicorn -----------------------------------------------------


@contextlib.asynccontextmanager
async def _served(hub: EventHub) -> AsyncIterator[str]:
    async def endpoint(request: Request) -> Response:
        return await sse(request, hub)

    app = Starlette(routes=[Route("/v1/events", endpoint)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/events"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class _Reader:
    """An SSE client over one streamed response: messages (fields) and comments as they come."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self.lines = lines
        self.comments: list[str] = []

    async def message(self) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        async for line in self.lines:
            if line.startswith(":"):
                self.comments.append(line)
            elif line == "":
                if "data" in fields:
                    return fields
                fields = {}  # only `retry:`
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        return None


async def _messages(reader: _Reader, count: int) -> list[dict[str, str]]:
    found = []
    for _ in range(count):
        message = await asyncio.wait_for(reader.message(), 5)
        assert message is not None
        found.append(message)
    return found


def test_sse_streams_resumes_without_gap_or_duplicate_and_ends_with_serve(bare: Path) -> None:
    async def scenario() -> None:
        writer, hub = await _writer_and_hub(bare, keepalive=0.1)
        commit: Callable[..., Awaitable[str | None]] = writer.commit
        await commit([_task("a", "-", "Pending")], spec_commit="m")
        async with _served(hub) as url, httpx2.AsyncClient(timeout=10) as client:
            async with client.stream("GET", url) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                reader = _Reader(response.aiter_lines())
                one = await commit([_task("a", "Pending", "ReadyForLLM")], spec_commit="m")
                two = await commit(
                    [_task("a", "ReadyForLLM", "FinalAnswer"), _task("b", "-", "Pending")], spec_commit="m"
                )
                got = await _messages(reader, 3)
                assert [json.loads(m["data"])["to"] for m in got] == ["ReadyForLLM", "FinalAnswer", "Pending"]
                assert all(m["event"] == "checkpoint" for m in got)
                # The id (a commit) is on each commit's last event only.
                assert [m.get("id") for m in got] == [one, None, two]
                assert json.loads(got[1]["data"])["commit"] == two
                await asyncio.sleep(0.3)
                assert await asyncio.wait_for(_next_comment(reader), 5) == ": keep-alive"
            # Disconnected: three commits land meanwhile.
            missed = [await commit([_task("b", f"S{i}", f"S{i + 1}")], spec_commit="m") for i in range(3)]
            async with client.stream("GET", url, headers={"Last-Event-ID": str(two)}) as response:
                reader = _Reader(response.aiter_lines())
                replayed = await _messages(reader, 3)
                assert [m["id"] for m in replayed] == missed
                live = await commit([_task("b", "S3", "S4")], spec_commit="m")
                after = await _messages(reader, 1)
                assert after[0]["id"] == live
                assert json.loads(after[0]["data"])["to"] == "S4"
                # serve stops: the stream ends by itself
                await writer.close()
                await hub.close()
                assert await asyncio.wait_for(reader.message(), 5) is None
            # Every event exactly once, across the reconnect, as history has them.
            with ReadOnlyRepo.open(bare) as repo:
                history = [e.to_json() for e in events.read(repo, branch=BRANCH, after=one)]
            streamed = [json.loads(m["data"]) for m in [*got[1:], *replayed, *after]]
            assert streamed == history

            gone = await client.get(url, headers={"Last-Event-ID": "0123abcd" * 5})
            assert gone.status_code == 410
            assert "is not on acp/status" in gone.json()["error"]["message"]
            bad = await client.get(url, params={"after": "HEAD; rm -rf"})
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == 400
            bad_kind = await client.get(url, params={"kind": "pods"})
            assert bad_kind.status_code == 400
            assert "unknown kind" in bad_kind.json()["error"]["message"]

    asyncio.run(scenario())


async def _next_comment(reader: _Reader) -> str:
    while not reader.comments or reader.comments[-1] != ": keep-alive":
        async for line in reader.lines:
            if line.startswith(":"):
                reader.comments.append(line)
                break
    return reader.comments[-1]


def test_sse_filters_one_resource_and_resumes_from_history_after_falling_behind(bare: Path) -> None:
    async def scenario() -> None:
        writer, hub = await _writer_and_hub(bare, max_pending=1, keepalive=5)
        first = await writer.commit([_task("x", "-", "Pending")], spec_commit="m")
        async with _served(hub) as url, httpx2.AsyncClient(timeout=10) as client:
            params = {"kind": "task", "name": "x", "after": str(first)}
            async with client.stream("GET", url, params=params) as response:
                reader = _Reader(response.aiter_lines())
                # Many commits at once: the reader's one-commit queue overflows; it resumes from history.
                for i in range(6):
                    await writer.commit(
                        [_task("x", f"P{i}", f"P{i + 1}"), _task("y", "-", f"Y{i}")], spec_commit="m"
                    )
                got = await _messages(reader, 6)
                assert [json.loads(m["data"])["to"] for m in got] == [f"P{i + 1}" for i in range(6)]
                assert {json.loads(m["data"])["name"] for m in got} == {"x"}
                await writer.close()
                await hub.close()
                assert await asyncio.wait_for(reader.message(), 5) is None

    asyncio.run(scenario())


def test_events_command_prints_and_filters(bare: Path) -> None:
    async def scenario() -> None:
        writer = StatusWriter(bare)
        await writer.start()
        await writer.commit([_task("hello", "-", "Pending")], spec_commit="m")
        await writer.commit(
            [_task("hello", "Pending", "FinalAnswer"), _task("other", "-", "Pending")], spec_commit="m"
        )
        await writer.close()

    asyncio.run(scenario())
    cli = [sys.executable, "-m", "gitops_acp", "--repo", str(bare), "events"]
    table = subprocess.run(
        [*cli, "task/hello"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert table[0].split() == ["TIME", "COMMIT", "RESOURCE", "FROM", "TO"]
    assert [line.split()[-3:] for line in table[1:]] == [
        ["Task/hello", "<none>", "Pending"],
        ["Task/hello", "Pending", "FinalAnswer"],
    ]
    lines = subprocess.run(
        [*cli, "-o", "json"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [(d["name"], d["from"], d["to"]) for d in map(json.loads, lines)] == [
        ("hello", None, "Pending"),
        ("hello", "Pending", "FinalAnswer"),
        ("other", None, "Pending"),
    ]
    first = json.loads(lines[0])["commit"]
    since = subprocess.run(
        [*cli, "--since", first[:7], "-o", "json"], capture_output=True, text=True, check=True
    )
    assert len(since.stdout.splitlines()) == 2
    wrong = subprocess.run([*cli, "--since", "0123abcd"], capture_output=True, text=True)
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: --since 0123abcd: no such commit")


def test_sse_resume_from_a_commit_the_hub_has_not_reached_yet(bare: Path) -> None:
    """A Last-Event-ID read from the branch (`events`) a moment before the hub read that commit."""

    async def scenario() -> None:
        writer = StatusWriter(bare)
        await writer.start()
        hub = EventHub(bare, BRANCH, keepalive=5)
        await hub.start()  # not told of the next commit yet
        ahead = await writer.commit([_task("r", "-", "Pending")], spec_commit="m")
        writer.on_commit.append(hub.committed)
        async with _served(hub) as url, httpx2.AsyncClient(timeout=10) as client:

            async def catch_up() -> None:
                await asyncio.sleep(0.2)
                assert ahead is not None
                await hub.committed(ahead)

            catching = asyncio.create_task(catch_up())
            async with client.stream("GET", url, headers={"Last-Event-ID": str(ahead)}) as response:
                assert response.status_code == 200
                reader = _Reader(response.aiter_lines())
                live = await writer.commit([_task("r", "Pending", "FinalAnswer")], spec_commit="m")
                got = await _messages(reader, 1)
                assert got[0]["id"] == live  # the resumed-from commit is not sent again
                await writer.close()
                await hub.close()
                assert await asyncio.wait_for(reader.message(), 5) is None
            await catching

    asyncio.run(scenario())


def test_events_command_merges_the_shards_branches(bare: Path) -> None:
    async def scenario() -> None:
        for index, task in ((0, "on-zero"), (1, "on-one")):
            writer = StatusWriter(bare, branch=f"acp/status-{index}-of-2")
            await writer.start()
            await writer.commit([_task(task, "-", "Pending")], spec_commit="m")
            await writer.commit([_task(task, "Pending", "FinalAnswer")], spec_commit="m")
            await writer.close()

    asyncio.run(scenario())
    cli = [sys.executable, "-m", "gitops_acp", "--repo", str(bare), "events", "-o", "json"]
    every = [
        json.loads(line)
        for line in subprocess.run(cli, capture_output=True, text=True, check=True).stdout.splitlines()
    ]
    assert sorted((e["name"], e["to"]) for e in every) == [
        ("on-one", "FinalAnswer"),
        ("on-one", "Pending"),
        ("on-zero", "FinalAnswer"),
        ("on-zero", "Pending"),
    ]
    assert [e["time"] for e in every] == sorted(e["time"] for e in every)
    one = subprocess.run(
        [*cli, "task/on-one"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [json.loads(line)["to"] for line in one] == ["Pending", "FinalAnswer"]
    only = subprocess.run(
        [*cli, "--status-branch", "acp/status-0-of-2"], capture_output=True, text=True, check=True
    )
    assert {json.loads(line)["name"] for line in only.stdout.splitlines()} == {"on-zero"}
    missing = subprocess.run([*cli, "--status-branch", "acp/nope"], capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: --status-branch acp/nope: no such branch"
