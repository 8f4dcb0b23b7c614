"""Checkpoint events end to end (DESIGN §11): the real `serve`, the stub LLM, `gitops-acp events`
(printed, `--watch`ed live and across a restart of serve) and `GET /v1/events` resumed with
`Last-Event-ID` after a restart, with no gap and no duplicate."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.e2e.conftest import CLI, STATUS_BRANCH, AcpRepo, Background, Stub, cli, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "e2e-events-viewer-token"


def _events(repo: AcpRepo, *args: str) -> list[dict[str, Any]]:
    result = cli("--repo", str(repo.path), "events", "-o", "json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _status_commits(repo: AcpRepo) -> list[str]:
    return git(repo.path, "rev-list", "--reverse", "--first-parent", STATUS_BRANCH).split()


def _same_events(found: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [json.dumps(e, sort_keys=True) for e in found] == [json.dumps(e, sort_keys=True) for e in expected]


def test_events_show_a_task_from_creation_to_its_final_answer(
    acp_repo: AcpRepo, stub: Stub, serve_once: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    acp_repo.add_task("hello", "Say hello")
    assert serve_once(acp_repo).returncode == 0
    everything = _events(acp_repo)
    mine = [e for e in everything if e["kind"] == "Task" and e["name"] == "hello"]
    assert mine[0]["from"] is None  # created
    assert mine[-1]["to"] == "FinalAnswer"
    assert [e["to"] for e in mine[:-1]] == [
        e["from"] for e in mine[1:]
    ]  # each move starts where the last ended
    # One event per resource per checkpoint commit; every commit of the branch is there, in order.
    commits = _status_commits(acp_repo)
    assert list(dict.fromkeys(e["commit"] for e in everything)) == commits
    assert {(e["kind"], e["name"]) for e in everything} >= {("LLM", "stub-llm"), ("Agent", "e2e-agent")}
    # The same as `history`, and `events task/hello` is just the task's.
    assert _events(acp_repo, "task/hello") == mine
    history = cli("--repo", str(acp_repo.path), "history", "task", "hello").stdout.splitlines()
    assert [line.split()[0] for line in history] == [e["commit"][:10] for e in mine]
    table = cli("--repo", str(acp_repo.path), "events", "task/hello").stdout.splitlines()
    assert table[0].split() == ["TIME", "COMMIT", "RESOURCE", "FROM", "TO"]
    assert table[-1].split()[-3:] == ["Task/hello", mine[-1]["from"], "FinalAnswer"]
    # --since: only what came after.
    assert _events(acp_repo, "--since", mine[0]["commit"]) == everything[everything.index(mine[0]) + 1 :]


class _Lines:
    """A process's stdout lines, read by a thread (so a test can wait for one with a deadline)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, predicate: Callable[[list[str]], bool], *, timeout: float, what: str) -> list[str]:
        def ready() -> bool:
            with contextlib.suppress(queue.Empty):
                while True:
                    self.seen.append(self.lines.get_nowait())
            return predicate(self.seen)

        wait_for(ready, timeout=timeout, interval=0.05, what=what)
        return self.seen


@contextlib.contextmanager
def _watching(repo: AcpRepo, *args: str) -> Iterator[_Lines]:
    proc = subprocess.Popen(
        [*CLI, "--repo", str(repo.path), "events", "--watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        yield _Lines(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _finished(task: str) -> Callable[[list[str]], bool]:
    def done(lines: list[str]) -> bool:
        return any(f'"name": "{task}"' in line and '"to": "FinalAnswer"' in line for line in lines)

    return done


# `gitops-acp events --watch` started with SIGINT ignored, as a background job of a script starts
# (Python then leaves it ignored, and asyncio.run does not handle it).
_SIGINT_IGNORED = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "sys.argv[0] = 'gitops-acp'; runpy.run_module('gitops_acp', run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize(
    ("how", "sig"), [("sigint, started ignoring it", signal.SIGINT), ("sigterm", signal.SIGTERM)]
)
def test_events_watch_stops_cleanly_on_sigint_and_sigterm(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background], how: str, sig: int
) -> None:
    serve_bg(acp_repo)
    prefix = [sys.executable, "-c", _SIGINT_IGNORED] if sig == signal.SIGINT else CLI
    proc = subprocess.Popen(
        [*prefix, "--repo", str(acp_repo.path), "events", "--watch", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _Lines(proc)
        acp_repo.add_task("live", "A task the watch sees live")  # printed by the watch following
        lines.until(_finished("live"), timeout=60, what="the live task's FinalAnswer event")
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0, how
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_events_watch_follows_live_tasks_across_a_restart_of_serve(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    acp_repo.add_task("before", "First task")
    server = serve_bg(acp_repo)
    with _watching(acp_repo, "-o", "json") as watch:
        watch.until(_finished("before"), timeout=60, what="the first task's FinalAnswer event")
        acp_repo.add_task("live", "A task the watch sees live")
        watch.until(_finished("live"), timeout=60, what="the live task's FinalAnswer event")
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        acp_repo.add_task("while-down", "Committed while serve is stopped")
        serve_bg(acp_repo)
        acp_repo.add_task("after", "After the restart")
        watch.until(_finished("while-down"), timeout=60, what="the task committed while serve was down")
        lines = watch.until(_finished("after"), timeout=60, what="the task after the restart")
        assert watch.proc.poll() is None  # still following
        watch.proc.send_signal(signal.SIGINT)
        assert watch.proc.wait(timeout=10) == 0
    # What the watch printed is every event of the branch, once each, in order.
    printed = [json.loads(line) for line in lines]
    everything = _events(acp_repo, "--max-count", "100000")
    assert printed[0] in everything
    start = everything.index(printed[0])
    _same_events(printed, everything[start : start + len(printed)])  # serve may have gone on since


# -- GET /v1/events across a restart ---------------------------------------------------------------


def _tokens_file(repo: AcpRepo) -> Path:
    path = repo.logs.parent / "api-tokens.yaml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    path.write_text(
        f"- name: Events Viewer\n  email: viewer@example.com\n  roles: [viewer]\n  sha256: {digest}\n"
    )
    return path


def _listening(server: Background) -> tuple[str, int]:
    def printed() -> tuple[str, int] | None:
        match = re.search(r"listening on http://([0-9.]+):(\d+)", server.stderr())
        return (match[1], int(match[2])) if match else None

    found: tuple[str, int] = wait_for(printed, timeout=60, interval=0.1, what="serve --http to listen")
    return found


class _Stream(threading.Thread):
    """One `GET /v1/events` connection: its messages as they arrive, and whether it ended."""

    def __init__(self, address: tuple[str, int], headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(*address, timeout=60)
        self.conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {TOKEN}", **headers})
        self.response = self.conn.getresponse()
        self.messages: list[dict[str, str]] = []
        self.ended = threading.Event()

    def run(self) -> None:
        fields: dict[str, str] = {}
        try:
            while True:
                raw = self.response.readline()
                if not raw:
                    return
                line = raw.decode("utf-8").rstrip("\n")
                if line == "":
                    if "data" in fields:
                        self.messages.append(fields)
                    fields = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    fields[key] = value
        except OSError:
            return
        finally:
            self.ended.set()
            self.conn.close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m["data"]) for m in list(self.messages)]


def test_sse_resumes_after_a_restart_of_serve_with_last_event_id(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    tokens = _tokens_file(acp_repo)
    server = serve_bg(acp_repo, "--http", "127.0.0.1:0", "--api-tokens", str(tokens))
    first = _Stream(_listening(server), {})
    assert first.response.status == 200, first.response.read()
    first.start()
    acp_repo.add_task("one", "Before the restart")
    wait_for(
        lambda: any(e["name"] == "one" and e["to"] == "FinalAnswer" for e in first.events()),
        timeout=60,
        what="task one's FinalAnswer on /v1/events",
    )
    server.signal(signal.SIGTERM)
    assert first.ended.wait(30), "the stream did not end when serve stopped"
    assert server.wait(timeout=30) == 0
    last_id = [m["id"] for m in first.messages if "id" in m][-1]  # a commit's last event carries it
    seen = first.events()

    acp_repo.add_task("two", "While serve is stopped")
    server = serve_bg(acp_repo, "--http", "127.0.0.1:0", "--api-tokens", str(tokens))
    address = _listening(server)
    wait_for(lambda: acp_repo.phase("two") == "FinalAnswer", timeout=60, what="task two to finish")
    resumed = _Stream(address, {"Last-Event-ID": last_id})
    assert resumed.response.status == 200
    resumed.start()
    acp_repo.add_task("three", "After the restart, live")
    wait_for(
        lambda: any(e["name"] == "three" and e["to"] == "FinalAnswer" for e in resumed.events()),
        timeout=60,
        what="task three's FinalAnswer on the resumed stream",
    )
    # No gap, no duplicate: both streams together are the branch's events from the first one on.
    everything = _events(acp_repo, "--max-count", "100000")
    streamed = [*seen, *resumed.events()]
    _same_events(streamed, everything[everything.index(seen[0]) :][: len(streamed)])
    assert streamed[-1]["name"] == "three"
    # A commit that is not on the branch cannot be resumed from.
    gone = http.client.HTTPConnection(*address, timeout=10)
    gone.request(
        "GET", "/v1/events", headers={"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": "ab" * 20}
    )
    answer = gone.getresponse()
    assert answer.status == 410
    assert "is not on acp/status" in json.loads(answer.read())["error"]["message"]
    gone.close()
    unauthenticated = http.client.HTTPConnection(*address, timeout=10)
    unauthenticated.request("GET", "/v1/events")
    assert unauthenticated.getresponse().status == 401
    unauthenticated.close()
