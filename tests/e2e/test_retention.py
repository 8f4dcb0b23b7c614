"""Retention (DESIGN §9): a finished task leaves the tip with everything it made, and is still found.

chain (ttlSecondsAfterFinished: 0) ── boss ─delegate─► worker ─► tools__echo
    archived by `serve --once` with its 2 tool calls and its child task, in one `archive:` commit;
    `get task`, `describe`, `history`, `get tasks --all` still find it; every checkpoint is in
    history; a restart with its Task file still on main never runs it again.
kept (no TTL: `--retain-finished` 168h) ── stays in the tip.
A SIGKILL at each step of the archive commit loses nothing and runs no tool twice.
Bad `--retain-finished` and `ttlSecondsAfterFinished` values get one-line errors.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_acp.cli.commands import get
from gitops_acp.faults import POINTS
from gitops_acp.resources.meta import Kind, status_path
from gitops_acp.store.git import ReadOnlyRepo
from tests.conftest import git
from tests.e2e.conftest import (
    AcpRepo,
    Stub,
    call,
    cli,
    mcpserver_yaml,
    module_repo,
    moves_of,
    no_servers_left,
    one_error_line,
    serve_args,
    status_files,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
)

pytestmark = pytest.mark.e2e

BOSS = "Boss: ask the worker (retention)."
WORKER = "Worker: echo retained-e2e"
KEPT = "Kept: just answer."


def _rules() -> list[dict[str, Any]]:
    return [
        {
            "match": "^Boss:",
            "when": "first",
            "toolCalls": [call("delegate_to_agent__worker", message=WORKER)],
        },
        {"match": "^Worker:", "when": "first", "toolCalls": [call("tools__count", label="retained")]},
        {"match": "^Worker:", "when": "tool", "content": "worker says {tool}"},
        {"match": "^Boss:", "when": "tool", "content": "boss heard: {tool}"},
        {"match": "^Kept:", "content": "kept answer"},
    ]


def _files(marker: str, counter: Path, *, ttl: int = 0) -> dict[str, str]:
    return {
        "mcpservers/tools.yaml": mcpserver_yaml("tools", marker=marker, counter=counter),
        "agents/boss.yaml": tool_agent_yaml("boss", sub_agents=("worker",)),
        "agents/worker.yaml": tool_agent_yaml("worker", servers=("tools",), description="Echoes."),
        "tasks/chain.yaml": task_yaml("chain", BOSS, agent="boss") + f"  ttlSecondsAfterFinished: {ttl}\n",
        "tasks/kept.yaml": task_yaml("kept", KEPT),
    }


def _archived_files(repo: AcpRepo, rev: str = "acp/status") -> list[str]:
    return git(repo.path, "ls-tree", "-r", "--name-only", rev, "--", "archive/").splitlines()


def _tool_runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@dataclass
class Run:
    repo: AcpRepo
    stub: Stub
    counter: Path
    before_archive: str  # the status branch just before the archive commit
    archive: str  # the archive commit
    first: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("retention")
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, _):
        stub_process.rules(*_rules())
        counter = base / "counter"
        repo.commit(_files(marker, counter), "Add agents and two tasks, one archived as soon as it finishes")
        first = cli(*serve_args(repo, "--log-dir", str(repo.logs), once=True), timeout=120)
        archive = git(repo.path, "log", "-1", "--format=%H", "--grep=^archive: ", "acp/status")
        yield Run(repo, stub_process, counter, git(repo.path, "rev-parse", f"{archive}^"), archive, first)


def test_serve_once_runs_both_and_archives_the_due_one(run: Run) -> None:
    assert run.first.returncode == 0, run.first.stderr
    assert "Traceback" not in run.first.stderr
    assert run.archive, "no archive: commit on acp/status"
    assert _tool_runs(run.counter) == 1


def test_the_task_its_tool_calls_and_its_child_leave_the_tip_together(run: Run) -> None:
    calls = toolcalls_of(run.repo, "chain", rev=run.before_archive)
    (delegation,) = calls
    child = f"delegate-{delegation['metadata']['name']}"
    worker_calls = toolcalls_of(run.repo, child, rev=run.before_archive)
    assert len(worker_calls) == 1
    group = [
        status_path(Kind.Task, "chain"),
        status_path(Kind.Task, child),
        status_path(Kind.ToolCall, delegation["metadata"]["name"]),
        status_path(Kind.ToolCall, worker_calls[0]["metadata"]["name"]),
    ]
    tip = status_files(run.repo)
    assert ("tasks", "kept") in tip
    assert tip[("tasks", "kept")]["status"]["phase"] == "FinalAnswer"
    assert not [key for key in tip if key[1] in ("chain", child) or key[1].startswith("chain-")]
    assert sorted(_archived_files(run.repo)) == sorted(
        "archive/" + path.removeprefix("status/") for path in group
    )
    # One commit moved all four, as they were: the archived copy is the last checkpoint.
    message = git(run.repo.path, "log", "-1", "--format=%B", run.archive)
    assert message.startswith("archive: 4 resources\n")
    assert "Task/chain: FinalAnswer -> Archived" in message
    for path in group:
        archived = "archive/" + path.removeprefix("status/")
        assert git(run.repo.path, "rev-parse", f"{run.archive}:{archived}") == git(
            run.repo.path, "rev-parse", f"{run.before_archive}:{path}"
        )


def test_every_checkpoint_of_the_archived_task_is_still_in_history(run: Run) -> None:
    moves = moves_of(run.repo, "Task", "tasks", "chain")
    phases = [(old, new) for old, new, _ in moves]
    assert phases[0][0] == "-"
    assert phases[-2:] == [(phases[-2][0], "FinalAnswer"), ("FinalAnswer", "Archived")]
    for old, new, commit in moves[:-1]:  # each checkpoint's file is there, with the phase it moved to
        shown = git(run.repo.path, "show", f"{commit.sha}:{status_path(Kind.Task, 'chain')}")
        assert yaml.safe_load(shown)["status"]["phase"] == new, (old, new)
    history = cli("--repo", str(run.repo.path), "history", "task", "chain")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert len(lines) == len(moves)
    assert "FinalAnswer -> Archived" in lines[-1]


def test_readers_still_find_it(run: Run) -> None:
    repo = str(run.repo.path)
    one = cli("--repo", repo, "get", "task", "chain", "-o", "yaml")
    assert one.returncode == 0, one.stderr
    document = yaml.safe_load(one.stdout)
    assert document["status"]["phase"] == "FinalAnswer"
    assert document["status"]["output"] == "boss heard: worker says 1"
    described = cli("--repo", repo, "describe", "task", "chain")
    assert described.returncode == 0, described.stderr
    assert "Archived:     yes" in described.stdout
    last_event = described.stdout.splitlines()[-1].split()
    assert last_event[1:3] == ["FinalAnswer", "Archived"]
    assert last_event[-1] == "archived"
    listed = cli("--repo", repo, "get", "tasks")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert names == ["kept"]  # the tip only: neither chain (declared, archived) nor its child
    everything = cli("--repo", repo, "get", "tasks", "--all", "-o", "json")
    assert everything.returncode == 0, everything.stderr
    import json

    items = {item["metadata"]["name"]: item for item in json.loads(everything.stdout)["items"]}
    assert sorted(items) == sorted(["chain", "kept", *(n for n in items if n.startswith("delegate-"))])
    assert len(items) == 3
    assert items["chain"]["status"]["phase"] == "FinalAnswer"


def test_the_phases_of_what_it_archived_are_kept_for_lists_by_phase(run: Run) -> None:
    """The reconciler appends each archived file's blob and phase beside its lock (coldfacts.py):
    `get --all --phase` then reads no archived file of another phase, and shows the same."""
    kept = (run.repo.path / ".git" / "gitops-acp" / "archived-phases-acp%2Fstatus").read_text().splitlines()
    assert kept[0] == "gitops-acp archived phases 1"
    archived = dict(
        line.split()[::-1]
        for line in git(
            run.repo.path, "ls-tree", "-r", "--format=%(path) %(objectname)", "acp/status", "archive/"
        ).splitlines()
    )
    assert len(archived) == 4  # the task, its child and the two tool calls
    phases = dict(line.split("\t") for line in kept[1:])
    assert set(phases) == set(archived)
    for blob, path in archived.items():
        shown = git(run.repo.path, "show", f"acp/status:{path}")
        assert f"phase: {phases[blob]}" in shown, (path, phases[blob])
    with ReadOnlyRepo.open(run.repo.path) as repo:
        unread = get.Page(phase="Failed").unread(repo, Kind.Task)
        assert unread is not None
        assert all(unread(blob) for blob in archived)
    import json

    for phase, shown_names in [("Failed", []), ("FinalAnswer", ["chain", "kept"])]:
        listed = cli("--repo", str(run.repo.path), "get", "tasks", "--all", "--phase", phase, "-o", "json")
        assert listed.returncode == 0, listed.stderr
        names = [item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]]
        assert [name for name in names if not name.startswith("delegate-")] == shown_names
        assert len(names) == len(shown_names) + (phase == "FinalAnswer")  # and the child task


def _conversations(stub: Stub) -> int:
    return len(stub.chats(BOSS)) + len(stub.chats(WORKER)) + len(stub.chats(KEPT))


def test_a_restart_never_runs_the_archived_task_again(run: Run) -> None:
    chats = _conversations(run.stub)
    again = cli(*serve_args(run.repo, "--log-dir", str(run.repo.logs), once=True), timeout=120)
    assert again.returncode == 0, again.stderr
    assert "were archived, not run again: chain" in again.stderr
    assert _conversations(run.stub) == chats
    assert _tool_runs(run.counter) == 1
    assert not [key for key in status_files(run.repo) if key[1] == "chain"]
    touched = git(run.repo.path, "log", "--format=%H", "acp/status", "--", status_path(Kind.Task, "chain"))
    assert touched.splitlines()[0] == run.archive  # nothing wrote it after the archive


# -- a SIGKILL at each step of the archive commit ---------------------------------------------------


# Every step of the archive commit itself (the packs' roll-up comes after a commit, every 16th).
@pytest.mark.parametrize("point", sorted(POINTS - {"packs-rolled-up"}))
def test_a_kill_while_archiving_loses_nothing_and_runs_nothing_twice(
    point: str, stub_process: Stub, tmp_path: Path
) -> None:
    with no_servers_left() as marker, module_repo(stub_process, tmp_path) as (repo, _):
        stub_process.rules(*_rules())
        counter = tmp_path / "counter"
        repo.commit(_files(marker, counter), "Add agents and tasks")
        env = {**os.environ, "GITOPS_ACP_CRASH_AT": f"archive/{point}"}
        killed = subprocess.run(
            [*_cli(), *serve_args(repo, "--log-dir", str(repo.logs), once=True)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert killed.returncode == -9, killed.stderr  # killed inside the archive commit
        archived_before = bool(_archived_files(repo)) if repo.has_status_branch() else False
        assert archived_before == (point == "ref-moved")
        chats = _conversations(stub_process)
        assert _tool_runs(counter) == 1
        again = cli(*serve_args(repo, "--log-dir", str(repo.logs), once=True), timeout=120)
        assert again.returncode == 0, again.stderr
        assert _conversations(stub_process) == chats  # no LLM call, no tool run: everything was done
        assert _tool_runs(counter) == 1
        assert len(_archived_files(repo)) == 4
        assert git(repo.path, "log", "--format=%s", "--grep=^archive: ", "acp/status").splitlines() == [
            "archive: 4 resources"
        ]
        assert git(repo.path, "fsck", "--no-dangling") == ""


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "gitops_acp"]


# -- bad values -------------------------------------------------------------------------------------


def test_a_bad_retain_finished_is_one_line(acp_repo: AcpRepo) -> None:
    result = cli(*serve_args(acp_repo, "--retain-finished", "7x", once=True))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "--retain-finished '7x'" in line
    assert "168h" in line


def test_a_bad_ttl_is_one_line_naming_the_file_and_the_field(acp_repo: AcpRepo) -> None:
    acp_repo.commit({"tasks/bad.yaml": task_yaml("bad", "never runs") + "  ttlSecondsAfterFinished: -1\n"})
    result = cli("--repo", str(acp_repo.path), "validate")
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if "bad" in line]
    assert line.startswith("tasks/bad.yaml:")
    assert "spec.ttlSecondsAfterFinished" in line
    assert "at least 0" in line
