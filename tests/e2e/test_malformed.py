"""Broken files on main: the good task still runs, and `validate` points at each problem by file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import AcpRepo, cli_many, serve_args

pytestmark = pytest.mark.e2e

SYNTAX_ERROR = """\
apiVersion: acp.gitops.dev/v1alpha1
kind: Task
metadata:
  name: broken-syntax
spec:
  userMessage: what: now
  agentRef: {name: e2e-agent}
"""
SYNTAX_LINE = 6

UNKNOWN_FIELD = """\
# A task with a typo in its spec: unknown fields are errors, never silently dropped.
---
apiVersion: acp.gitops.dev/v1alpha1
kind: Task
metadata:
  name: typo-task
spec:
  agentRef:
    name: e2e-agent
  userMessage: hello
  priorty: high
"""
UNKNOWN_LINE = 11


def _problems(output: str, path: str) -> list[tuple[int, str]]:
    found = []
    for line in output.splitlines():
        if line.startswith(f"{path}:"):
            number, _, message = line[len(path) + 1 :].partition(": ")
            found.append((int(number), message))
    return found


def test_a_broken_file_does_not_stop_a_good_task_and_validate_finds_it(
    acp_repo: AcpRepo, tmp_path: Path
) -> None:
    acp_repo.add_task("good", "Still answered?")
    clean = tmp_path / "clean"
    shutil.copytree(acp_repo.path, clean, ignore=shutil.ignore_patterns(".git"))
    acp_repo.commit(
        {"broken/syntax.yaml": SYNTAX_ERROR, "broken/typo-task.yaml": UNKNOWN_FIELD}, "Add two broken files"
    )
    serve, broken, ok = cli_many(
        [
            serve_args(acp_repo, once=True),
            ["--repo", str(acp_repo.path), "validate"],
            ["--repo", str(clean), "validate"],
        ]
    )

    assert serve.returncode == 0, serve.stderr
    status = acp_repo.status("tasks", "good")
    assert status is not None
    assert status["status"]["phase"] == "FinalAnswer"
    assert status["status"]["output"] == "Echo: Still answered?"
    # Nothing is guessed from a file that does not parse or validate.
    assert acp_repo.status("tasks", "broken-syntax") is None
    typo = acp_repo.status("tasks", "typo-task")
    assert typo is None or typo["status"]["phase"] not in ("ReadyForLLM", "FinalAnswer")
    # serve reports the same problems, by file and line, without a traceback.
    assert f"broken/syntax.yaml:{SYNTAX_LINE}: " in serve.stderr
    assert f"broken/typo-task.yaml:{UNKNOWN_LINE}: " in serve.stderr
    assert "Traceback" not in serve.stderr

    assert broken.returncode == 1, broken.stdout + broken.stderr
    syntax = _problems(broken.stdout, "broken/syntax.yaml")
    assert [line for line, _ in syntax] == [SYNTAX_LINE], broken.stdout
    assert "mapping values are not allowed" in syntax[0][1]
    typos = _problems(broken.stdout, "broken/typo-task.yaml")
    assert [line for line, _ in typos] == [UNKNOWN_LINE], broken.stdout
    assert "priorty" in typos[0][1]
    assert "unknown field" in typos[0][1]
    # The good files are not blamed.
    assert not [
        line for line in broken.stdout.splitlines() if line.startswith(("tasks/", "llms/", "agents/"))
    ]

    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok: 3 resource(s) in 3 file(s)")
