"""Shards (DESIGN §7, docs/scale.md), end to end: several `serve --shard I/N` processes on one repository.

run (module) ..... 20 tasks on main: 12 plain, 6 with a `count` tool call, 2 bosses delegating to a
                   worker that counts; `serve --once --shard 0/2` and `--shard 1/2` started together
                   ─► every task once, on the branch its name hashes to, with its calls and child
                   tasks; the readers (`get`, `describe`, `history`) show both branches merged
layout change .... a task unfinished on `acp/status`: `serve --shard 0/2` refuses and writes
                   nothing; once it is finished there, the shards start and leave it alone
approval ......... a sharded task's call, approved with `gitops-acp approve`, runs on its shard
remote ........... two shards serving one URL (`git daemon`), each through its own mirror, each
                   pushing its own branch; `get` with the URL shows both

Ownership is computed here from the documented rule (sha256 of the name, first 8 bytes, big-endian,
modulo N), not by importing the package: a change of the hash would fail these tests.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitops_acp.resources.meta import Kind, status_path
from tests.conftest import git
from tests.e2e.conftest import (
    API,
    AcpRepo,
    Remote,
    Stub,
    call,
    cli,
    cli_many,
    mcpserver_yaml,
    module_repo,
    no_servers_left,
    one_error_line,
    serve_args,
    status_files,
    task_yaml,
    tool_agent_yaml,
)

pytestmark = pytest.mark.e2e

SHARDS = ("acp/status-0-of-2", "acp/status-1-of-2")
PLAIN = [f"plain-{i:02d}" for i in range(12)]
TOOLS = [f"tool-{i:02d}" for i in range(6)]
BOSSES = ["boss-0", "boss-1"]


def owner(name: str, count: int = 2) -> int:
    """The shard that owns task `name`: the contract's rule, computed independently."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def first_message(task: str) -> str:
    kind = task.split("-")[0]
    return {"plain": "Plain", "tool": "Tool:", "boss": "Boss:"}[kind] + f" {task}"


RULES = [
    {"match": "^Tool:", "when": "first", "toolCalls": [call("tools__count", label="{user}")]},
    {"match": "^Tool:", "when": "tool", "content": "counted {tool}"},
    {
        "match": "^Boss:",
        "when": "first",
        "toolCalls": [call("delegate_to_agent__worker", message="Worker {user}")],
    },
    {"match": "^Worker", "when": "first", "toolCalls": [call("tools__count", label="{user}")]},
    {"match": "^Worker", "when": "tool", "content": "worker counted {tool}"},
    {"match": "^Boss:", "when": "tool", "content": "boss heard: {tool}"},
]


def shard_serve(repo: AcpRepo, index: int, *extra: str) -> list[str]:
    return serve_args(repo, "--shard", f"{index}/2", "--log-dir", str(repo.logs), *extra, once=True)


def branch_exists(repo: AcpRepo, branch: str) -> bool:
    probe = ["git", "rev-parse", "-q", "--verify", f"refs/heads/{branch}"]
    return subprocess.run(probe, cwd=repo.path, capture_output=True).returncode == 0


@dataclass
class Run:
    repo: AcpRepo
    serves: list[subprocess.CompletedProcess[str]]
    chats: list[dict[str, Any]]
    counter: Path
    files: dict[str, dict[tuple[str, str], dict[str, Any]]]  # branch → every status file there

    def counted(self) -> list[str]:
        return self.counter.read_text().splitlines() if self.counter.exists() else []


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("shards")
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, _):
        stub_process.rules(*RULES)
        counter = base / "counter"
        files = {
            "mcpservers/tools.yaml": mcpserver_yaml("tools", marker=marker, counter=counter),
            "agents/counter.yaml": tool_agent_yaml("counter", servers=("tools",)),
            "agents/boss.yaml": tool_agent_yaml("boss", sub_agents=("worker",)),
            "agents/worker.yaml": tool_agent_yaml("worker", servers=("tools",), description="Counts."),
        }
        for name in PLAIN:
            files[f"tasks/{name}.yaml"] = task_yaml(name, first_message(name))
        for name in TOOLS:
            files[f"tasks/{name}.yaml"] = task_yaml(name, first_message(name), agent="counter")
        for name in BOSSES:
            files[f"tasks/{name}.yaml"] = task_yaml(name, first_message(name), agent="boss")
        repo.commit(files, "Add 20 tasks")
        serves = cli_many([shard_serve(repo, 0), shard_serve(repo, 1)], timeout=150)
        statuses = {branch: status_files(repo, branch) for branch in SHARDS if branch_exists(repo, branch)}
        yield Run(repo, serves, stub_process.chats(), counter, statuses)


def test_the_chosen_names_cover_both_shards() -> None:
    # Otherwise the test below would prove less than it claims (the names are fixed, the hash too).
    for group in (PLAIN, TOOLS, BOSSES):
        assert {owner(name) for name in group} == {0, 1}, group


def test_both_shards_exit_zero_on_their_own_branch(run: Run) -> None:
    for index, serve in enumerate(run.serves):
        assert serve.returncode == 0, serve.stderr
        assert "Traceback" not in serve.stderr
        assert f"on {SHARDS[index]} (shard {index}/2)" in serve.stderr
    assert set(run.files) == set(SHARDS)
    assert not branch_exists(run.repo, "acp/status"), "a sharded serve wrote the unsharded branch"


def test_every_task_finishes_once_on_the_shard_it_hashes_to(run: Run) -> None:
    for name in PLAIN + TOOLS + BOSSES:
        mine, other = SHARDS[owner(name)], SHARDS[1 - owner(name)]
        document = run.files[mine].get(("tasks", name))
        assert document is not None, f"{name} has no status on {mine}"
        assert document["status"]["phase"] == "FinalAnswer", (name, document["status"])
        assert ("tasks", name) not in run.files[other], f"{name} also on {other}"


def test_each_conversation_reached_the_llm_exactly_as_often_as_its_turns(run: Run) -> None:
    def chats_of(first: str) -> int:
        return sum(1 for chat in run.chats if _first_user(chat) == first)

    for name in PLAIN:
        assert chats_of(first_message(name)) == 1, name
    for name in TOOLS + BOSSES:
        assert chats_of(first_message(name)) == 2, name


def test_every_tool_ran_exactly_once(run: Run) -> None:
    expected = [first_message(name) for name in TOOLS] + [f"Worker {first_message(b)}" for b in BOSSES]
    assert sorted(run.counted()) == sorted(expected)


def test_tool_calls_and_child_tasks_live_with_their_root_task(run: Run) -> None:
    children = 0
    for branch, files in run.files.items():
        index = SHARDS.index(branch)
        for (plural, name), document in files.items():
            if plural == "toolcalls":
                task = document["spec"]["taskRef"]["name"]  # a root task or a child, both here
                assert ("tasks", task) in files, f"{name} on {branch} without its task {task}"
            if plural == "tasks" and name.startswith("delegate-"):
                children += 1
                parent_call = files[("toolcalls", name.removeprefix("delegate-"))]
                boss = parent_call["spec"]["taskRef"]["name"]
                assert owner(boss) == index, f"child {name} of {boss} on {branch}"
                assert document["status"]["phase"] == "FinalAnswer"
    assert children == len(BOSSES)
    tool_calls = [n for files in run.files.values() for (p, n) in files if p == "toolcalls"]
    assert len(tool_calls) == len(TOOLS) + 2 * len(BOSSES)  # a boss: its delegation, the worker's count


def test_shared_kinds_are_ready_on_every_shard(run: Run) -> None:
    for files in run.files.values():
        for key in (("llms", "stub-llm"), ("agents", "boss"), ("agents", "worker"), ("mcpservers", "tools")):
            assert key in files, key
            status = files[key]["status"]
            assert status.get("ready", status.get("connected")) is True, (key, status)


def test_get_shows_both_shards_merged(run: Run) -> None:
    tasks, calls = cli_many(
        [["--repo", str(run.repo.path), "get", "tasks"], ["--repo", str(run.repo.path), "get", "toolcalls"]]
    )
    assert tasks.returncode == 0, tasks.stderr
    rows = {line.split()[0]: line for line in tasks.stdout.splitlines()[1:]}
    for name in PLAIN + TOOLS + BOSSES:
        assert "FinalAnswer" in rows[name], rows.get(name)
    assert sum(1 for name in rows if name.startswith("delegate-")) == len(BOSSES)
    assert calls.returncode == 0, calls.stderr
    listed = {line.split()[0] for line in calls.stdout.splitlines()[1:]}
    on_branches = {n for files in run.files.values() for (p, n) in files if p == "toolcalls"}
    assert listed == on_branches


def test_describe_and_history_read_the_branch_that_holds_the_task(run: Run) -> None:
    for name in ("tool-01", "tool-00"):  # one on each shard
        shown, history = cli_many(
            [
                ["--repo", str(run.repo.path), "describe", "task", name],
                ["--repo", str(run.repo.path), "history", "task", name],
            ]
        )
        assert shown.returncode == 0, shown.stderr
        assert "phase: FinalAnswer" in shown.stdout
        events = shown.stdout.split("Events:", 1)[1]
        assert "<none>" not in events, shown.stdout
        assert "FinalAnswer" in events, shown.stdout
        assert history.returncode == 0, history.stderr
        lines = history.stdout.splitlines()
        assert lines[-1].split("  ")[2].endswith("-> FinalAnswer"), lines
        branch = SHARDS[owner(name)]
        log = git(run.repo.path, "log", "--format=%H", branch, "--", status_path(Kind.Task, name))
        assert [line.split()[0] for line in lines] == [sha[:10] for sha in reversed(log.split())]


def _first_user(chat: dict[str, Any]) -> str | None:
    return next((m.get("content") for m in chat["body"]["messages"] if m.get("role") == "user"), None)


# -- changing the layout -----------------------------------------------------------------------------


def test_a_task_unfinished_under_another_layout_stops_the_shards(acp_repo: AcpRepo, stub: Stub) -> None:
    """Unsharded first: done-0 finishes, stuck waits for an agent that does not exist (Pending)."""
    acp_repo.commit(
        {
            "tasks/done-0.yaml": task_yaml("done-0", "Plain done-0"),
            "tasks/stuck.yaml": task_yaml("stuck", "Plain stuck", agent="nobody"),
        },
        "Two tasks",
    )
    first = cli(*serve_args(acp_repo, once=True))
    assert first.returncode == 0, first.stderr
    assert acp_repo.phase("done-0") == "FinalAnswer"
    assert acp_repo.phase("stuck") == "Pending"
    before = git(acp_repo.path, "for-each-ref", "--format=%(refname) %(objectname)")

    refused = cli_many([shard_serve(acp_repo, 0), shard_serve(acp_repo, 1)])
    for result in refused:
        line = one_error_line(result)
        assert 'Task "stuck" is unfinished (Pending) on acp/status' in line, line
        assert "finish or cancel it" in line, line
    assert git(acp_repo.path, "for-each-ref", "--format=%(refname) %(objectname)") == before

    # Cancelled under the old layout (removed from main, served once unsharded): the shards start.
    acp_repo.remove("tasks/stuck.yaml")
    assert cli(*serve_args(acp_repo, once=True)).returncode == 0
    assert acp_repo.phase("stuck") == "Cancelled"
    acp_repo.commit(
        {f"tasks/{n}.yaml": task_yaml(n, f"Plain {n}") for n in ("later-0", "later-1")}, "Two more"
    )
    started = cli_many([shard_serve(acp_repo, 0), shard_serve(acp_repo, 1)])
    for result in started:
        assert result.returncode == 0, result.stderr
    chats = stub.chats()
    assert sum(1 for chat in chats if _first_user(chat) == "Plain done-0") == 1, "done-0 ran again"
    for branch in SHARDS:
        files = status_files(acp_repo, branch)
        assert ("tasks", "done-0") not in files, f"done-0 copied to {branch}"
    for name in ("later-0", "later-1"):
        assert acp_repo.status("tasks", name, SHARDS[owner(name)])["status"]["phase"] == "FinalAnswer"
    shown = cli("--repo", str(acp_repo.path), "get", "tasks")
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()[1:]}
    phases = {name: rows[name].split()[4] for name in ("done-0", "stuck", "later-0", "later-1")}
    assert phases == {
        "done-0": "FinalAnswer",
        "stuck": "Cancelled",
        "later-0": "FinalAnswer",
        "later-1": "FinalAnswer",
    }, shown.stdout


# -- approvals ---------------------------------------------------------------------------------------


def test_a_sharded_tasks_call_is_approved_with_the_cli(acp_repo: AcpRepo, stub: Stub, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    stub.rules(
        {"match": "^Gated", "when": "first", "toolCalls": [call("gated__count", label="{user}")]},
        {"match": "^Gated", "when": "tool", "content": "done: {tool}"},
    )
    with no_servers_left() as marker:
        server = mcpserver_yaml("gated", marker=marker, counter=counter)
        server += "  approvalContactChannel:\n    name: humans\n"
        files = {
            "channels/humans.yaml": f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: humans\n"
            "spec:\n  type: git\n",
            "mcpservers/gated.yaml": server,
            "agents/gated.yaml": tool_agent_yaml("gated", servers=("gated",)),
        }
        for name in ("gated-0", "gated-3"):  # shard 0 and shard 1
            files[f"tasks/{name}.yaml"] = task_yaml(name, f"Gated {name}", agent="gated")
        acp_repo.commit(files, "Two gated tasks")
        for result in cli_many([shard_serve(acp_repo, 0), shard_serve(acp_repo, 1)], timeout=90):
            assert result.returncode == 0, result.stderr
        waiting = {}
        for name in ("gated-0", "gated-3"):
            branch = SHARDS[owner(name)]
            (call_name,) = [
                n for (p, n) in status_files(acp_repo, branch) if p == "toolcalls" and n.startswith(name)
            ]
            status = acp_repo.status("toolcalls", call_name, branch)["status"]
            assert status["phase"] == "AwaitingHumanApproval", status
            waiting[name] = call_name
        assert not counter.exists()
        for call_name in waiting.values():
            approved = cli("--repo", str(acp_repo.path), "approve", call_name)
            assert approved.returncode == 0, approved.stderr
        for result in cli_many([shard_serve(acp_repo, 0), shard_serve(acp_repo, 1)], timeout=90):
            assert result.returncode == 0, result.stderr
        for name, call_name in waiting.items():
            branch = SHARDS[owner(name)]
            assert acp_repo.status("toolcalls", call_name, branch)["status"]["phase"] == "Succeeded"
            assert acp_repo.status("tasks", name, branch)["status"]["phase"] == "FinalAnswer"
        assert sorted(counter.read_text().splitlines()) == ["Gated gated-0", "Gated gated-3"]


# -- a remote ----------------------------------------------------------------------------------------


def test_two_shards_serve_one_remote_each_pushing_its_own_branch(remote: Remote, tmp_path: Path) -> None:
    names = ["later-0", "later-1", "plain-00", "plain-01"]  # two per shard
    remote.human.add_tasks({name: f"Plain {name}" for name in names})
    remote.push()
    results = cli_many(
        [
            remote.serve_args("--shard", f"{i}/2", "--cache-dir", str(tmp_path / f"cache-{i}"), once=True)
            for i in range(2)
        ],
        timeout=90,
    )
    for result in results:
        assert result.returncode == 0, result.stderr
    for name in names:
        mine, other = SHARDS[owner(name)], SHARDS[1 - owner(name)]
        assert remote.bare.status("tasks", name, mine)["status"]["phase"] == "FinalAnswer", name
        assert remote.bare.status("tasks", name, other) is None, f"{name} on {other}"
    assert not branch_exists(remote.bare, "acp/status")
    # A shard's mirror follows the other shard's branch (fetched at start), and pushes only its own.
    tips = {branch: git(remote.bare.path, "rev-parse", branch) for branch in SHARDS}
    again = remote.serve_once("--shard", "0/2", "--cache-dir", str(tmp_path / "cache-0"))
    assert again.returncode == 0, again.stderr
    assert git(tmp_path / "cache-0" / "mirror.git", "rev-parse", SHARDS[1]) == tips[SHARDS[1]]
    assert git(remote.bare.path, "rev-parse", SHARDS[1]) == tips[SHARDS[1]]
    got = cli("--repo", remote.url, "get", "tasks")
    assert got.returncode == 0, got.stderr
    rows = {line.split()[0]: line.split()[4] for line in got.stdout.splitlines()[1:]}
    assert rows == dict.fromkeys(names, "FinalAnswer"), got.stdout
