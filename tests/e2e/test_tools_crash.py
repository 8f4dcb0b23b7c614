"""Tool calls across crashes: of the MCP server (restarted), and of `serve` itself (SIGKILL, repeatedly).

Intent before effect (DESIGN §4): `Running` is committed before a tool is invoked, so after a crash
a call found `Running` may or may not have run. A non-idempotent tool (`count`) is then never run
again: the call is Failed with "interrupted: outcome unknown, not re-run" and the model is told.
An idempotent one (`count_readonly`, `slow`) is simply run again, as attempt n+1.

The counter file of the test server is the witness: `count` appends its label there (fsynced)
before answering, so it shows how often each call really ran.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import (
    INTERRUPTED,
    AcpRepo,
    Background,
    Stub,
    assert_status_consistent,
    call,
    cli,
    mcpserver_yaml,
    module_repo,
    moves_of,
    no_servers_left,
    serve_args,
    serving,
    status_files,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
    wait_for,
)

pytestmark = pytest.mark.e2e

AGENT = "toolsmith"


def _setup(repo: AcpRepo, marker: str, counter: Path, tasks: dict[str, str]) -> None:
    files = {
        "mcpservers/tools.yaml": mcpserver_yaml("tools", marker=marker, counter=counter),
        f"agents/{AGENT}.yaml": tool_agent_yaml(AGENT, servers=("tools",)),
    }
    files.update({f"tasks/{n}.yaml": task_yaml(n, m, agent=AGENT) for n, m in tasks.items()})
    repo.commit(files, "Add the MCP server, the agent and the tasks")


def _servers_of(background: Background) -> list[psutil.Process]:
    """The MCP test server processes `serve` started (its live descendants)."""
    try:
        children = psutil.Process(background.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "gitops_acp.testing.mcp_server" in " ".join(child.cmdline()) and child.status() != "zombie":
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _one_server(background: Background) -> psutil.Process:
    servers: list[psutil.Process] = wait_for(
        lambda: _servers_of(background), timeout=30, what="the MCP server process"
    )
    assert len(servers) == 1, servers
    return servers[0]


def _connected(repo: AcpRepo) -> bool:
    document = repo.status("mcpservers", "tools")
    return bool(document and (document.get("status") or {}).get("connected"))


def _terminate(background: Background) -> None:
    background.signal(signal.SIGTERM)
    assert background.wait(timeout=30) == 0, background.stderr()
    assert "Traceback" not in background.stderr()


# -- the MCP server dies mid-call -------------------------------------------------------------------


def test_a_server_killed_mid_call_fails_the_call_and_is_restarted(
    acp_repo: AcpRepo, stub: Stub, marker: str, serve_bg: Callable[..., Background]
) -> None:
    stub.rules(
        {
            "match": "^Sleep while",
            "when": "first",
            "toolCalls": [call("tools__slow", seconds=60, text="never")],
        },
        {"match": "^Which pid", "when": "first", "toolCalls": [call("tools__pid")]},
        {"when": "tool", "content": "{tool}"},
    )
    _setup(acp_repo, marker, acp_repo.logs / "counter", {"victim": "Sleep while the server dies."})
    background = serve_bg(acp_repo, "--log-dir", str(acp_repo.logs))

    def running() -> dict[str, Any] | None:
        calls = toolcalls_of(acp_repo, "victim")
        return calls[0] if calls and calls[0]["status"]["phase"] == "Running" else None

    document = wait_for(running, timeout=60, what="the slow call to be Running")
    name = document["metadata"]["name"]
    server = _one_server(background)
    old_pid = server.pid
    seen = len(moves_of(acp_repo, "MCPServer", "mcpservers", "tools"))
    server.kill()

    wait_for(lambda: acp_repo.phase("victim") == "FinalAnswer", timeout=30, what="the victim to finish")
    (failed,) = toolcalls_of(acp_repo, "victim")
    assert failed["status"]["phase"] == "Failed", failed["status"]
    error = failed["status"]["error"]
    assert "exited" in error, error
    assert "SIGKILL" in error, error
    assert failed["status"]["attempt"] == 1
    phases = [new for _, new, _ in moves_of(acp_repo, "ToolCall", "toolcalls", name)]
    assert phases == ["Pending", "Running", "Failed"]
    status = acp_repo.status("tasks", "victim")
    assert status is not None
    tool_message = status["status"]["contextWindow"][3]
    assert tool_message["role"] == "tool"
    assert "exited" in tool_message["content"]
    assert status["status"]["output"] == tool_message["content"]  # what the model read, it repeated

    # The server comes back by itself, as a new process, and says so in its status.
    def reconnected() -> list[str] | None:
        after = [new for _, new, _ in moves_of(acp_repo, "MCPServer", "mcpservers", "tools")[seen:]]
        return after if len(after) >= 2 and after[-1] == "Ready" and _connected(acp_repo) else None

    after = wait_for(reconnected, timeout=30, what="the MCP server to drop, then reconnect")
    assert "Ready" not in after[:-1], after  # it said it was down until it was back
    new_pid = _one_server(background).pid
    assert new_pid != old_pid

    acp_repo.add_task("later", "Which pid serves you now?", agent=AGENT)
    wait_for(lambda: acp_repo.phase("later") == "FinalAnswer", timeout=30, what="the later task to finish")
    (later,) = toolcalls_of(acp_repo, "later")
    assert later["status"]["phase"] == "Succeeded"
    assert later["status"]["result"] == str(new_pid)
    _terminate(background)
    assert not psutil.pid_exists(new_pid) or psutil.Process(new_pid).status() == "zombie"


# -- serve dies mid-call, again and again -----------------------------------------------------------

N = 10
TOOLS = ("tools__count", "tools__count_readonly", "tools__slow")


def _message(i: int) -> str:
    return f"Count run {i:02d}"


def _name(i: int) -> str:
    return f"count-{i:02d}"


def _label(call: dict[str, Any]) -> str:
    """The label `count` and `count_readonly` record for a call: its task's message."""
    return _message(int(call["spec"]["taskRef"]["name"][-2:]))


def _calls(repo: AcpRepo) -> dict[str, dict[str, Any]]:
    return {name: doc for (plural, name), doc in status_files(repo).items() if plural == "toolcalls"}


def _running(repo: AcpRepo) -> dict[str, dict[str, Any]]:
    return {name: doc for name, doc in _calls(repo).items() if doc["status"]["phase"] == "Running"}


def _counted(counter: Path) -> Counter[str]:
    return Counter(counter.read_text().splitlines()) if counter.exists() else Counter()


@dataclass
class Crashes:
    """What the kills left behind, and how it all ended."""

    repo: AcpRepo
    counter: Path
    frozen_before_any_call: bool  # round 1 froze the server before any call was sent to it
    stuck: dict[str, dict[str, Any]]  # the calls Running in round 1 (sent to a frozen server)
    waiting_when_frozen: dict[str, dict[str, Any]]  # count calls held back Pending in round 1
    counted_when_frozen: Counter[str]  # the witness after round 1
    running_at_kill: list[dict[str, dict[str, Any]]]  # per kill: the calls Running at that moment
    consistent_after_kill: list[str]  # per kill: "" or why the branch was not sound
    final: subprocess.CompletedProcess[str]
    chats: list[dict[str, Any]]

    def calls(self) -> dict[str, dict[str, Any]]:
        return _calls(self.repo)

    def interrupted(self, tool: str) -> dict[str, dict[str, Any]]:
        """The calls of `tool` that were Running at some kill, as they were then (the first time)."""
        found: dict[str, dict[str, Any]] = {}
        for at_kill in self.running_at_kill:
            for name, was in at_kill.items():
                if was["spec"]["toolRef"]["name"] == tool:
                    found.setdefault(name, was)
        return found


def _soundness(repo: AcpRepo) -> str:
    try:
        assert_status_consistent(repo)
    except AssertionError as exc:
        return str(exc) or "inconsistent"
    return ""


def _kill_after_progress(
    repo: AcpRepo, start: Callable[..., Background], *extra: str
) -> dict[str, dict[str, Any]] | None:
    """Start serve, SIGKILL it once two more tasks finished; return the calls Running then (None: done)."""
    finished = repo.finished_tasks()
    if len(finished) == N:
        return None
    background = start(repo, *extra)

    def progressed() -> bool:
        return len(repo.finished_tasks()) >= min(N, len(finished) + 2) or background.proc.poll() is not None

    wait_for(progressed, timeout=60, interval=0.01, what="two more tasks to finish")
    background.kill()
    return _running(repo)


@pytest.fixture(scope="module")
def crashes(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashes]:
    base = tmp_path_factory.mktemp("tools-crash")
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, _), serving() as start:
        counter = repo.logs / "counter"
        # Answers spread over ~2 s; each asks for three calls: not idempotent, idempotent, and slow.
        rules: list[dict[str, Any]] = [
            {
                "match": f"^{_message(i)}$",
                "when": "first",
                "delayMs": 300 + 150 * i,
                "toolCalls": [
                    call("tools__count", label="{user}"),
                    call("tools__count_readonly", label="{user} ro"),
                    call("tools__slow", seconds=0.3, text="slept"),
                ],
            }
            for i in range(N)
        ]
        rules.append({"match": "^Count run", "when": "tool", "delayMs": 200, "content": "done: {tool}"})
        stub_process.rules(*rules)
        _setup(repo, marker, counter, {_name(i): _message(i) for i in range(N)})
        extra = ("--log-dir", str(repo.logs))

        # Round 1, made certain: the server is frozen once connected, so the calls that start are
        # stuck in Running (committed, sent, never executed) when serve is killed.
        background = start(repo, *extra)
        wait_for(lambda: _connected(repo), timeout=60, interval=0.01, what="the MCP server to connect")
        frozen = _one_server(background)
        frozen.suspend()
        frozen_before_any_call = not _calls(repo)

        # Only as many calls as the server has room for are sent (a learned limit starts at 1;
        # idempotent calls go along while nobody waits): the others wait Pending in the
        # reconciler, in line, so a kill cannot make them "outcome unknown".
        def settled() -> dict[str, dict[str, Any]] | None:
            calls = _calls(repo)
            held = [
                d
                for d in calls.values()
                if "Waiting for MCP server" in (d["status"].get("statusDetail") or "")
            ]
            running = _running(repo)
            return running if len(calls) == 3 * N and len(running) + len(held) == 3 * N else None

        stuck: dict[str, dict[str, Any]] = wait_for(
            settled, timeout=30, what="every call Running or waiting for the frozen server"
        )
        waiting_when_frozen = {
            name: doc
            for name, doc in _calls(repo).items()
            if doc["spec"]["toolRef"]["name"] == "tools__count" and doc["status"]["phase"] == "Pending"
        }
        background.kill()
        frozen.kill()
        frozen.wait(timeout=10)
        running_at_kill = [stuck]
        consistent = [_soundness(repo)]
        counted_when_frozen = _counted(counter)

        # Rounds 2 and 3: killed at whatever moment two more tasks have finished.
        for _ in range(2):
            at_kill = _kill_after_progress(repo, start, *extra)
            if at_kill is None:
                break
            running_at_kill.append(at_kill)
            consistent.append(_soundness(repo))

        final = cli(*serve_args(repo, *extra, once=True), timeout=120)
        yield Crashes(
            repo,
            counter,
            frozen_before_any_call,
            stuck,
            waiting_when_frozen,
            counted_when_frozen,
            running_at_kill,
            consistent,
            final,
            stub_process.chats(),
        )


def test_every_task_ends_and_the_branch_stays_sound(crashes: Crashes) -> None:
    assert crashes.final.returncode == 0, crashes.final.stderr
    assert "Traceback" not in crashes.final.stderr
    assert len(crashes.running_at_kill) == 3, "serve finished before the third kill: slow the stub down"
    assert crashes.consistent_after_kill == [""] * len(crashes.running_at_kill)
    assert_status_consistent(crashes.repo)
    for i in range(N):
        status = crashes.repo.status("tasks", _name(i))
        assert status is not None
        assert status["status"]["phase"] == "FinalAnswer", (_name(i), status["status"])
        # The answer asking for the tools was recorded once: one set of calls per task.
        asked = toolcalls_of(crashes.repo, _name(i))
        assert [c["spec"]["toolRef"]["name"] for c in asked] == list(TOOLS), _name(i)


def test_a_non_idempotent_tool_never_runs_twice(crashes: Crashes) -> None:
    counted = _counted(crashes.counter)
    assert crashes.interrupted("tools__count"), "no call of count was interrupted: the test proved nothing"
    for name, document in crashes.calls().items():
        if document["spec"]["toolRef"]["name"] != "tools__count":
            continue
        status = document["status"]
        label = _label(document)
        assert status["attempt"] <= 1, (name, status)  # never invoked a second time
        assert counted[label] <= 1, (label, counted[label])  # and the witness agrees
        if status["phase"] == "Succeeded":
            assert status["result"] == "1", (name, status)
            assert counted[label] == 1
    # The frozen round's calls never ran, and were not run after the restart either.
    if crashes.frozen_before_any_call:
        assert not crashes.counted_when_frozen, "the frozen server ran a tool"
        for name, was in crashes.interrupted("tools__count").items():
            if name in crashes.stuck:
                assert counted[_label(was)] == 0, (name, counted[_label(was)])


def test_calls_that_cannot_be_rerun_wait_pending_while_the_server_is_busy(crashes: Crashes) -> None:
    """Unknown only where the tool may have run: a busy server gets no second non-idempotent call."""
    assert crashes.frozen_before_any_call, "the server was frozen after calls had run: nothing proved"
    sent = [n for n, doc in crashes.stuck.items() if doc["spec"]["toolRef"]["name"] == "tools__count"]
    assert len(sent) == 1, sent
    assert len(crashes.waiting_when_frozen) == N - 1, sorted(crashes.waiting_when_frozen)
    for name, doc in crashes.waiting_when_frozen.items():
        assert doc["status"].get("attempt", 0) == 0, (name, doc["status"])
        assert "Waiting for MCP server" in doc["status"]["statusDetail"], (name, doc["status"])
    # Held back, they were never declared unknown: they ran after the restart, once each.
    counted = _counted(crashes.counter)
    calls = crashes.calls()
    for name in crashes.waiting_when_frozen:
        now = calls[name]["status"]
        assert now["phase"] == "Succeeded", (name, now)
        assert counted[_label(calls[name])] == 1, name
    unknown = [n for n, doc in calls.items() if doc["status"].get("error") == INTERRUPTED]
    assert sent[0] in unknown


def test_an_interrupted_non_idempotent_call_fails_and_the_model_is_told(crashes: Crashes) -> None:
    calls = crashes.calls()
    sent = {
        (m.get("tool_call_id"), m.get("content"))
        for chat in crashes.chats
        for m in chat["body"]["messages"]
        if m.get("role") == "tool"
    }
    told = f"Error: {INTERRUPTED}"
    # The tool exists and its server works: a call of it fails only because it was interrupted.
    for name, document in calls.items():
        status = document["status"]
        if document["spec"]["toolRef"]["name"] == "tools__count" and status["phase"] != "Succeeded":
            assert status["phase"] == "Failed", (name, status)
            assert status["error"] == INTERRUPTED, (name, status)
    for name, was in crashes.interrupted("tools__count").items():
        now = calls[name]["status"]
        assert now["phase"] == "Failed", (name, now)
        assert now["error"] == INTERRUPTED, (name, now)
        task = crashes.repo.status("tasks", was["spec"]["taskRef"]["name"])
        assert task is not None
        call_id = was["spec"]["toolCallId"]
        assert {"role": "tool", "toolCallId": call_id, "content": told} in task["status"]["contextWindow"]
        assert (call_id, told) in sent, f"the LLM never read why {name} failed"


def test_an_interrupted_idempotent_call_is_run_again(crashes: Crashes) -> None:
    calls = crashes.calls()
    counted = _counted(crashes.counter)
    interrupted = crashes.interrupted("tools__count_readonly")
    assert interrupted, "no call of count_readonly was interrupted: the test proved nothing"
    for name, was in {**interrupted, **crashes.interrupted("tools__slow")}.items():
        now = calls[name]["status"]
        assert now["phase"] == "Succeeded", (name, now)
        assert now["attempt"] > was["status"]["attempt"], (name, was["status"], now)
    for name, document in calls.items():
        if document["spec"]["toolRef"]["name"] == "tools__count_readonly":
            status = document["status"]
            assert status["phase"] == "Succeeded", (name, status)
            # Every run was an attempt: the witness never shows more runs than attempts.
            assert 1 <= counted[f"{_label(document)} ro"] <= status["attempt"], (name, status)


def test_histories_show_reruns_and_never_leave_a_terminal_phase(crashes: Crashes) -> None:
    for name in crashes.calls():
        phases = [new for _, new, _ in moves_of(crashes.repo, "ToolCall", "toolcalls", name)]
        assert phases[0] == "Pending", (name, phases)
        assert phases[-1] in ("Succeeded", "Failed"), (name, phases)
        assert all(p in ("Pending", "Running") for p in phases[:-1]), (name, phases)
