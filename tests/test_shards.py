"""Shards (store/shards.py): who owns a task, the --shard flag, and the merged read of status branches."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gitops_acp.cli.commands.serve import options_from
from gitops_acp.cli.main import build_parser
from gitops_acp.errors import UserError
from gitops_acp.resources import lifecycle
from gitops_acp.store import shards
from gitops_acp.store.git import GitRepo
from tests.conftest import git

NAMES = [f"task-{i:05d}" for i in range(1000)] + ["hello", "a", "delegate-x-1-tc-01"]


def test_the_owner_is_sha256_of_the_name_and_stable() -> None:
    # Fixed values: a change of the rule would move every running task to another shard.
    assert [shards.shard_of("hello", n) for n in (2, 3, 7)] == [0, 1, 0]
    assert [shards.shard_of("task-00000", n) for n in (2, 3, 7)] == [0, 0, 1]
    assert [shards.shard_of("a", n) for n in (2, 3, 7)] == [0, 1, 4]
    assert all(shards.shard_of(name, 1) == 0 for name in NAMES)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_shards_of_a_layout_own_every_name_exactly_once(count: int) -> None:
    layout = [shards.Shard(i, count) for i in range(count)]
    for name in NAMES:
        assert sum(shard.owns(name) for shard in layout) == 1, name
    shares = [sum(shard.owns(name) for name in NAMES) for shard in layout]
    assert min(shares) > len(NAMES) / count * 0.8, shares  # a hash, not a skewed rule


def test_branch_names() -> None:
    assert shards.Shard().branch == "acp/status"
    assert shards.Shard(0, 1).branch == "acp/status"
    assert shards.Shard(1, 3).branch == "acp/status-1-of-3"
    assert str(shards.Shard(1, 3)) == "1/3"
    assert shards.layout_of("acp/status") == (0, 1)
    assert shards.layout_of("acp/status-2-of-3") == (2, 3)
    for other in ("acp/status-3-of-3", "acp/status-01-of-2", "acp/statusx", "acp/approvals/x", "main"):
        assert shards.layout_of(other) is None, other


@pytest.mark.parametrize(
    ("text", "hostname", "expected"),
    [
        ("0/2", None, shards.Shard(0, 2)),
        ("1/2", "laptop", shards.Shard(1, 2)),
        ("0/1", None, shards.Shard()),
        ("auto/3", "acp-2", shards.Shard(2, 3)),
        ("auto/3", "gitops-acp-0", shards.Shard(0, 3)),
    ],
)
def test_parse(text: str, hostname: str | None, expected: shards.Shard) -> None:
    assert shards.parse(text, hostname=hostname) == expected


@pytest.mark.parametrize(
    ("text", "hostname", "message"),
    [
        ("2/2", None, "--shard 2/2: expected I/N with N >= 1 and 0 <= I < N"),
        ("0/0", None, "--shard 0/0: expected I/N with N >= 1"),
        ("-1/2", None, "--shard -1/2: expected I/N (e.g. 0/2) or auto/N"),
        ("1", None, "--shard 1: expected I/N"),
        ("a/2", None, "--shard a/2: expected I/N"),
        ("auto/2", "laptop", "--shard auto/2: the host name 'laptop' does not end in -<ordinal>"),
        ("auto/2", None, "--shard auto/2: the host name '(unset)' does not end in -<ordinal>"),
        ("auto/2", "acp-2", "--shard auto/2: the host name 'acp-2' makes it shard 2, not below 2"),
    ],
)
def test_parse_errors_say_what_is_wrong(text: str, hostname: str | None, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        shards.parse(text, hostname=hostname)


def test_serve_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    def options(*argv: str) -> tuple[str, shards.Shard]:
        parsed = options_from(build_parser().parse_args(["serve", *argv]))
        return parsed.status_branch, parsed.shard

    assert options() == ("acp/status", shards.Shard())
    assert options("--status-branch", "acp/mine") == ("acp/mine", shards.Shard())
    assert options("--shard", "1/2") == ("acp/status-1-of-2", shards.Shard(1, 2))
    monkeypatch.setenv("HOSTNAME", "acp-1")
    assert options("--shard", "auto/4") == ("acp/status-1-of-4", shards.Shard(1, 4))
    with pytest.raises(UserError, match="--status-branch cannot be combined with --shard 0/2"):
        options("--shard", "0/2", "--status-branch", "acp/mine")


# -- the read side, on a real repository ----------------------------------------------------------


def _status_commit(repo: Path, branch: str, files: dict[str, str], when: int) -> None:
    """Commit `files` as the whole tree of `branch` (an orphan), dated `when` (seconds since the epoch)."""
    env = {
        **os.environ,
        "GIT_COMMITTER_DATE": f"@{when} +0000",
        "GIT_AUTHOR_DATE": f"@{when} +0000",
        "GIT_INDEX_FILE": str(repo / ".git" / f"index-{when}"),
    }

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            ["git", *args], cwd=repo, env=env, input=stdin, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    entries = [
        f"100644 blob {run('hash-object', '-w', '--stdin', stdin=text)}\t{path}"
        for path, text in files.items()
    ]
    run("update-index", "--add", "--index-info", stdin="\n".join(entries) + "\n")
    commit = run("commit-tree", run("write-tree"), "-m", branch)
    git(repo, "update-ref", f"refs/heads/{branch}", commit)


def _task(name: str, phase: str) -> str:
    head = "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\n"
    return head + f"metadata: {{name: {name}}}\nstatus: {{phase: {phase}}}\n"


def test_the_newest_tip_wins_and_each_document_keeps_its_branch(repo: Path) -> None:
    _status_commit(
        repo,
        "acp/status",
        {"status/tasks/x.yaml": _task("x", "FinalAnswer"), "status/tasks/y.yaml": _task("y", "Failed")},
        1_000_000,
    )
    _status_commit(repo, "acp/status-0-of-2", {"status/tasks/x.yaml": _task("x", "ReadyForLLM")}, 2_000_000)
    _status_commit(repo, "acp/status-1-of-2", {"status/tasks/z.yaml": _task("z", "Pending")}, 1_500_000)
    _status_commit(repo, "acp/statusx", {"status/tasks/w.yaml": _task("w", "Pending")}, 3_000_000)
    with GitRepo.open(repo) as opened:
        found = shards.status_branches(opened)
        merged = shards.read_merged(opened)
        order_x = shards.history_order(opened, kind="Task", name="x")
        order_gone = shards.history_order(opened, kind="Task", name="gone")
        phases = shards.task_phases(opened, found[-1])
    assert [b.name for b in found] == ["acp/status-0-of-2", "acp/status-1-of-2", "acp/status"]
    assert merged.tip == found[0].tip
    assert {key: doc["status"]["phase"] for key, doc in merged.documents.items()} == {
        ("Task", "x"): "ReadyForLLM",
        ("Task", "y"): "Failed",
        ("Task", "z"): "Pending",
    }
    assert merged.branches == {
        ("Task", "x"): "acp/status-0-of-2",
        ("Task", "y"): "acp/status",
        ("Task", "z"): "acp/status-1-of-2",
    }
    assert order_x == ["acp/status-0-of-2", "acp/status", "acp/status-1-of-2"]
    assert order_gone == ["acp/status-0-of-2", "acp/status-1-of-2", "acp/status"]
    assert phases == {"x": "FinalAnswer", "y": "Failed"}
    assert not any(lifecycle.task_finished(p) for p in ("Pending", "ReadyForLLM", "-"))
    assert all(lifecycle.task_finished(p) for p in ("FinalAnswer", "Failed", "Cancelled"))


def test_an_unsharded_repository_reads_as_before(repo: Path) -> None:
    with GitRepo.open(repo) as opened:
        assert shards.read_merged(opened) == shards.Merged(None, {}, {})
        assert shards.history_order(opened, kind="Task", name="x") == ["acp/status"]
    _status_commit(repo, "acp/status", {"status/tasks/x.yaml": _task("x", "FinalAnswer")}, 1_000_000)
    with GitRepo.open(repo) as opened:
        merged = shards.read_merged(opened)
    assert merged.tip == git(repo, "rev-parse", "acp/status")
    assert merged.branches == {("Task", "x"): "acp/status"}
