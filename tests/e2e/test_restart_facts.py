"""A restart reads no file of a finished task it knew (reactor/coldfacts.py, DESIGN §9).

`serve --once` runs five tasks to their answers and, stopping, saves their facts beside its lock.
The next `serve --once` holds them without reading their files (it says how many), writes nothing
for them, and still shows each, through the readers, as committed. Without the file (deleted),
a start reads them all again, as before, and saves the file anew; at once when they were many.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from subprocess import CompletedProcess

import pytest

from gitops_acp.cli.commands import get
from gitops_acp.reactor import coldfacts
from gitops_acp.resources.meta import Kind
from gitops_acp.store.git import ReadOnlyRepo
from tests.conftest import git
from tests.e2e.conftest import STATUS_BRANCH, AcpRepo, Background, Stub, cli, task_yaml, wait_for

pytestmark = pytest.mark.e2e

Serve = Callable[..., CompletedProcess[str]]


def test_a_restart_holds_the_finished_tasks_it_knew_without_reading_them(
    acp_repo: AcpRepo, stub: Stub, serve_once: Serve
) -> None:
    stub.rules({"match": "^Question", "content": "An answer."})
    acp_repo.add_tasks({f"t{i}": f"Question {i}" for i in range(5)})
    first = serve_once(acp_repo)
    assert first.returncode == 0, first.stderr
    facts = acp_repo.path / ".git" / "gitops-acp" / "cold-facts-acp%2Fstatus"
    lines = facts.read_text().splitlines()
    assert lines[0].startswith("gitops-acp cold facts 1 ")
    assert sorted(line.split("\t")[1] for line in lines[1:]) == ["FinalAnswer"] * 5
    tip = git(acp_repo.path, "rev-parse", STATUS_BRANCH)
    asked = sum(len(stub.chats(f"Question {i}")) for i in range(5))
    assert asked == 5
    # `get --phase` finds them where serve saved them: a list of another phase reads none of the five
    blobs = git(
        acp_repo.path, "ls-tree", "-r", "--format=%(objectname)", STATUS_BRANCH, "status/tasks"
    ).split()
    with ReadOnlyRepo.open(acp_repo.path) as repo:
        unread = get.Page(phase="Failed").unread(repo, Kind.Task)
        assert unread is not None
        assert sorted(blob for blob in blobs if unread(blob)) == sorted(blobs)
        answered = get.Page(phase="FinalAnswer").unread(repo, Kind.Task)
        assert answered is not None
        assert not any(answered(blob) for blob in blobs)
    for phase, shown in [("Failed", []), ("FinalAnswer", [f"t{i}" for i in range(5)])]:
        listed = cli("--repo", str(acp_repo.path), "get", "tasks", "--phase", phase, "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert [item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]] == shown

    again = serve_once(acp_repo)
    assert again.returncode == 0, again.stderr
    assert "(5 finished ones known from the last run, not read)" in again.stderr
    assert git(acp_repo.path, "log", "--format=%H", f"{tip}..{STATUS_BRANCH}", "--", "status/tasks") == ""
    assert sum(len(stub.chats(f"Question {i}")) for i in range(5)) == asked  # nothing ran again
    shown = cli("--repo", str(acp_repo.path), "get", "task", "t3", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert '"output": "An answer."' in shown.stdout

    facts.unlink()
    third = serve_once(acp_repo)
    assert third.returncode == 0, third.stderr
    assert "known from the last run" not in third.stderr
    assert len(facts.read_text().splitlines()) == 6  # saved again at the clean stop
    assert git(acp_repo.path, "log", "--format=%H", f"{tip}..{STATUS_BRANCH}", "--", "status/tasks") == ""


def test_a_start_that_read_many_finished_files_saves_their_facts_at_once(
    acp_repo: AcpRepo, stub: Stub, serve_once: Serve, serve_bg: Callable[..., Background]
) -> None:
    """Not five minutes later: a kill meanwhile would make the next start read them all again."""
    stub.rules({"match": "^Question", "content": "An answer."})
    many = coldfacts.READ_BEFORE_SAVING
    acp_repo.commit(
        {f"tasks/m{i}.yaml": task_yaml(f"m{i}", f"Question {i}") for i in range(many)}, "Add many tasks"
    )
    first = serve_once(acp_repo, timeout=180)
    assert first.returncode == 0, first.stderr
    facts = acp_repo.path / ".git" / "gitops-acp" / "cold-facts-acp%2Fstatus"
    facts.unlink()
    serving = serve_bg(acp_repo)
    wait_for(facts.exists, timeout=60, what="the facts saved soon after the start")
    assert len(facts.read_text().splitlines()) == 1 + many
    serving.kill()  # a kill now: the next start knows them all
    again = serve_once(acp_repo, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"({many} finished ones known from the last run, not read)" in again.stderr
