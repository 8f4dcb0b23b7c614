"""Approval branches on a real repository: proposed without touching main, decisions read from main."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gitops_acp.humans.approvals import approval_path, digest, propose, read_decision
from gitops_acp.store.git import GitRepo
from tests.conftest import commit_files, git

RECONCILER = ("gitops-acp", "gitops-acp@localhost")
DOC = {
    "apiVersion": "acp.gitops.dev/v1alpha1",
    "kind": "Approval",
    "metadata": {"name": "t-abc1234-tc-01"},
    "spec": {"tool": "srv__count", "arguments": {"label": "x"}, "argumentsDigest": digest({"label": "x"})},
}


def test_digest_is_canonical() -> None:
    assert digest({"b": 1, "a": [1, "é"]}) == digest({"a": [1, "é"], "b": 1})
    assert digest({"a": 1}) != digest({"a": 2})


def test_propose_branches_from_main_without_touching_it_and_is_idempotent(repo: Path) -> None:
    commit_files(repo, {"approvals/older.yaml": "x: 1\n", "agents/a.yaml": "y: 2\n"})
    main = git(repo, "rev-parse", "main")
    with GitRepo.open(repo) as r:
        branch = propose(
            r,
            main="main",
            toolcall="t-abc1234-tc-01",
            document=DOC,
            message="Approve it",
            identity=RECONCILER,
        )
        again = propose(
            r,
            main="main",
            toolcall="t-abc1234-tc-01",
            document=DOC,
            message="Approve it",
            identity=RECONCILER,
        )
    assert branch == again == "acp/approvals/t-abc1234-tc-01"
    assert git(repo, "rev-parse", "main") == main
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", f"{branch}^") == main
    assert sorted(git(repo, "ls-tree", "-r", "--name-only", branch).split()) == [
        "agents/a.yaml",
        "approvals/older.yaml",
        "approvals/t-abc1234-tc-01.yaml",
    ]
    assert yaml.safe_load(git(repo, "show", f"{branch}:{approval_path('t-abc1234-tc-01')}")) == DOC
    assert git(repo, "log", "-1", "--format=%an|%s", branch) == "gitops-acp|Approve it"


def test_decisions_name_who_merged_and_spot_fast_forwards(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with GitRepo.open(repo) as r:
        propose(
            r, main="main", toolcall="t-abc1234-tc-01", document=DOC, message="Approve", identity=RECONCILER
        )
        assert read_decision(r, main="main", toolcall="t-abc1234-tc-01", reconciler=RECONCILER) is None
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Alice")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "alice@example.com")
    git(repo, "merge", "--no-ff", "-q", "-m", "ok", "acp/approvals/t-abc1234-tc-01")
    with GitRepo.open(repo) as r:
        decision = read_decision(r, main="main", toolcall="t-abc1234-tc-01", reconciler=RECONCILER)
    assert decision is not None
    assert (decision.decided_by, decision.fast_forward) == ("Alice <alice@example.com>", False)
    assert decision.spec["arguments"] == {"label": "x"}

    with GitRepo.open(repo) as r:
        propose(
            r, main="main", toolcall="t-abc1234-tc-02", document=DOC, message="Approve", identity=RECONCILER
        )
    git(repo, "merge", "--ff-only", "-q", "acp/approvals/t-abc1234-tc-02")
    with GitRepo.open(repo) as r:
        decision = read_decision(r, main="main", toolcall="t-abc1234-tc-02", reconciler=RECONCILER)
    assert decision is not None
    assert decision.fast_forward
