"""One task, start to finish, through `serve --once`, then seen the way a user sees it.

One run serves the whole module (the CLI's startup is the expensive part); each test checks one
promise of the contract against it: the status object, the checkpoint commits, what serve must not
touch, the read-only commands, and the API key that must never leak.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitops_acp.resources.meta import Kind, status_path
from tests.conftest import git
from tests.e2e.conftest import (
    AGENT_NAME,
    IDENTITY,
    LLM_NAME,
    STATUS_BRANCH,
    AcpRepo,
    Stub,
    cli,
    cli_many,
    module_repo,
    serve_args,
)

pytestmark = pytest.mark.e2e

TASK = "ocean"
QUESTION = "Which ocean is the largest?"
ANSWER = "The Pacific, by far: it covers a third of the planet."


@dataclass
class Run:
    repo: AcpRepo
    secret: str
    main_sha: str
    index_before: bytes
    index_after: bytes
    serve: subprocess.CompletedProcess[str]
    views: dict[str, subprocess.CompletedProcess[str]]
    chats: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("lifecycle")
    with module_repo(stub_process, base) as (repo, secret):
        stub_process.rules({"match": "^Which ocean", "content": ANSWER})
        main_sha = repo.add_task(TASK, QUESTION)
        assert git(repo.path, "status", "--porcelain") == ""
        index_before = (repo.path / ".git" / "index").read_bytes()
        serve = cli(*serve_args(repo, once=True))
        index_after = (repo.path / ".git" / "index").read_bytes()
        names = ["get", "json", "describe", "history"]
        argvs = [
            ["--repo", str(repo.path), "get", "tasks"],
            ["--repo", str(repo.path), "get", "task", TASK, "-o", "json"],
            ["--repo", str(repo.path), "describe", "task", TASK],
            ["--repo", str(repo.path), "history", "task", TASK],
        ]
        views = dict(zip(names, cli_many(argvs), strict=True))
        yield Run(repo, secret, main_sha, index_before, index_after, serve, views, stub_process.chats())


def test_serve_once_exits_zero(run: Run) -> None:
    assert run.serve.returncode == 0, run.serve.stderr
    assert "Traceback" not in run.serve.stderr


def test_task_reaches_final_answer_with_the_llm_output(run: Run) -> None:
    document = run.repo.status("tasks", TASK)
    assert document is not None
    assert document["apiVersion"] == "acp.gitops.dev/v1alpha1"
    assert document["kind"] == "Task"
    assert document["metadata"]["name"] == TASK
    assert document["spec"] == {"agentRef": {"name": AGENT_NAME}, "userMessage": QUESTION}
    status = document["status"]
    assert status["phase"] == "FinalAnswer"
    assert status["output"] == ANSWER
    assert status["ready"] is True
    assert status["status"] == "Ready"
    assert status["userMsgPreview"] == QUESTION
    assert status["turns"] == 1
    assert status["usage"]["promptTokens"] > 0
    assert status["usage"]["completionTokens"] > 0
    assert status["startTime"]
    assert status["completionTime"]
    assert status["startTime"] <= status["completionTime"]  # RFC 3339 UTC strings sort by time
    assert not status.get("error")
    roles = [(m["role"], m.get("content")) for m in status["contextWindow"]]
    assert roles == [
        ("system", "You are a terse test assistant."),
        ("user", QUESTION),
        ("assistant", ANSWER),
    ]
    for plural, name in (("llms", LLM_NAME), ("agents", AGENT_NAME)):
        dependency = run.repo.status(plural, name)
        assert dependency is not None
        assert dependency["status"]["status"] == "Ready", dependency["status"]


def test_the_llm_got_one_request_with_the_key_and_the_context_window(run: Run) -> None:
    chats = [c for c in run.chats if c["body"]["messages"][-1].get("content") == QUESTION]
    assert len(chats) == 1, chats
    (chat,) = chats
    assert chat["status"] == 200
    assert chat["authScheme"] == "Bearer"  # and the stub demanded this test's key: a 401 otherwise
    assert chat["body"]["model"] == "stub-model"
    assert [m["role"] for m in chat["body"]["messages"]] == ["system", "user"]


def test_one_commit_per_checkpoint_with_the_contract_message(run: Run) -> None:
    path = status_path(Kind.Task, TASK)
    moves = run.repo.transitions("Task", TASK)
    phases = [old for old, _, _ in moves] + [moves[-1][1]]
    assert phases[0] == "-"
    assert phases[-2:] == ["ReadyForLLM", "FinalAnswer"]
    for (_, new, _), (old, _, commit) in itertools.pairwise(moves):
        assert old == new, f"{commit.sha[:10]}: the chain of phases is broken"
    for old, new, commit in moves:
        # The file at the commit holds the new phase and its parent's holds the old one: no checkpoint
        # of this task was folded into the commit (successive checkpoints never share a commit).
        at = run.repo.status("tasks", TASK, rev=commit.sha)
        assert at is not None
        assert at["status"]["phase"] == new
        before = run.repo.status("tasks", TASK, rev=f"{commit.sha}^") if commit.parents else None
        assert (before["status"].get("phase") or "-" if before else "-") == old
        line = f"Task/{TASK}: {old} -> {new}"
        movers = [f"{kind}/{name}" for kind, name, _, _ in commit.moves()]
        if commit.subject.startswith("checkpoint: "):
            assert commit.subject == f"checkpoint: {len(movers)} resources"
            assert len(movers) > 1
            assert line in commit.message.splitlines()[1:]
        else:
            assert commit.subject == line
        assert commit.trailers("Spec-Commit") == [run.main_sha]
        assert sorted(commit.trailers("ACP-Resource")) == sorted(movers)
        assert commit.author == IDENTITY
        assert commit.committer == IDENTITY
    assert len(moves) == len(run.repo.commits(path))


def test_status_branch_is_linear_and_holds_only_status_files(run: Run) -> None:
    commits = run.repo.commits()
    assert [len(c.parents) for c in commits] == [0] + [1] * (len(commits) - 1)
    assert run.repo.status_commit_count() == len(commits)
    files = git(run.repo.path, "ls-tree", "-r", "--name-only", STATUS_BRANCH).splitlines()
    # and, had the run crossed an hour, that hour's bookmark (store/statustree.py)
    files = [path for path in files if not path.startswith("bookmarks/")]
    assert sorted(files) == [
        f"status/agents/{AGENT_NAME}.yaml",
        f"status/llms/{LLM_NAME}.yaml",
        "status/sources/main.yaml",  # which commit of main runs (DESIGN §10)
        status_path(Kind.Task, TASK),
    ]
    # Every commit records at least one move: a checkpoint that changes nothing is not committed.
    assert all(c.moves() for c in commits)
    subjects = run.repo.status_subjects()
    assert all(" -> " in s or s.startswith("checkpoint: ") for s in subjects), subjects


def test_serve_leaves_main_the_work_tree_and_the_index_alone(run: Run) -> None:
    assert run.repo.main_sha() == run.main_sha
    assert git(run.repo.path, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert run.index_after == run.index_before
    assert git(run.repo.path, "status", "--porcelain", "--untracked-files=all") == ""
    refs = git(run.repo.path, "for-each-ref", "--format=%(refname)").splitlines()
    assert sorted(refs) == ["refs/heads/acp/status", "refs/heads/main"]


def test_get_tasks_shows_acp_columns_and_the_output(run: Run) -> None:
    result = run.views["get"]
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    columns = ["NAME", "AGENT", "READY", "STATUS", "PHASE", "PREVIEW", "OUTPUT"]
    assert header.split() == columns
    (row,) = rows
    starts = [header.index(c) for c in columns]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    assert cells == [TASK, AGENT_NAME, "true", "Ready", "FinalAnswer", QUESTION, ANSWER]


def test_get_task_json_parses(run: Run) -> None:
    result = run.views["json"]
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "Task"
    assert document["metadata"]["name"] == TASK
    assert document["status"]["phase"] == "FinalAnswer"
    assert document["status"]["output"] == ANSWER


def test_describe_shows_the_context_window_and_the_events(run: Run) -> None:
    result = run.views["describe"]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    window = out[out.index("Context Window:") : out.index("Events:")]
    assert window.index("[1] system") < window.index("[2] user") < window.index(QUESTION)
    assert window.index(QUESTION) < window.index("[3] assistant") < window.index(ANSWER)
    events = out[out.index("Events:") :].splitlines()[1:]
    moves = run.repo.transitions("Task", TASK)
    assert len(events) == 1 + len(moves)  # a header, then one row per checkpoint commit, oldest first
    for row, (old, new, commit) in zip(events[1:], moves, strict=True):
        assert commit.sha[:10] in row
        assert row.split()[1:3] == [old, new]


def test_history_lists_every_transition_in_order(run: Run) -> None:
    result = run.views["history"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    moves = run.repo.transitions("Task", TASK)
    assert len(lines) == len(moves)
    for line, (old, new, commit) in zip(lines, moves, strict=True):
        assert line.startswith(commit.sha[:10])
        assert f"  {old} -> {new}" in line


def test_the_api_key_never_leaves_the_secrets_directory(run: Run, tmp_path: Path) -> None:
    everything = git(run.repo.path, "log", "-p", "--all", "--format=%H%n%B")
    assert "status/tasks/" in everything  # the log really holds the checkpoints
    assert run.secret not in everything
    assert run.secret not in git(run.repo.path, "log", "-p", "-g", "--all")  # reflogs too
    for output in (run.serve, *run.views.values()):
        assert run.secret not in output.stdout
        assert run.secret not in output.stderr
    # Not even a fragment long enough to identify it.
    assert run.secret[:20] not in everything
