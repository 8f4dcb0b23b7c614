"""Serving a remote repository (DESIGN §1, §3, §6), end to end against a real git server on 127.0.0.1.

The remote is a bare repository behind `git daemon` (started by the test, stopped by `timeout` at
the latest). "The human" works in a clone of it (the fixtures' work tree, with `origin` pointing at
the daemon) with plain git: commits, pushes, merges approval branches, deletes them. `serve` runs
against the URL (or `--remote origin` of the clone), with its mirror in a cache dir of the test.
What is asserted is read from the remote's own repository with plain git.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import git
from tests.e2e.conftest import (
    STATUS_BRANCH,
    AcpRepo,
    Remote,
    Stub,
    call,
    cli,
    remote_phase,
    serving_remote,
    stderr_of,
    task_yaml,
    tool_agent_yaml,
    wait_for,
)
from tests.e2e.test_approvals import channel_yaml, counted, gated_server_yaml

pytestmark = pytest.mark.e2e


# -- a task, served from a URL --------------------------------------------------------------------


def test_a_task_served_from_a_url_has_every_checkpoint_on_the_remote(remote: Remote) -> None:
    remote.add_task("hello", "Hello over the network")
    clone_refs = git(remote.human.path, "for-each-ref")
    result = remote.serve_once()
    assert result.returncode == 0, result.stderr
    assert remote.bare.phase("hello") == "FinalAnswer"
    # Every checkpoint commit is on the remote: the mirror has nothing the remote lacks.
    assert remote.remote_status() == remote.mirror_status()
    moves = [(old, new) for old, new, _ in remote.bare.transitions("Task", "hello")]
    assert moves[-1][1] == "FinalAnswer"
    assert ("ReadyForLLM", "FinalAnswer") in moves
    # The human's clone is never touched: same refs, clean work tree, no status branch in it.
    assert git(remote.human.path, "for-each-ref") == clone_refs
    assert git(remote.human.path, "status", "--porcelain") == ""
    assert "Traceback" not in result.stderr


def test_read_commands_with_a_url_read_the_remote(remote: Remote) -> None:
    remote.add_task("hello", "Read me remotely")
    assert remote.serve_once().returncode == 0
    got = cli("--repo", remote.url, "get", "task", "hello")
    assert got.returncode == 0, got.stderr
    assert "FinalAnswer" in got.stdout
    described = cli("--repo", remote.url, "describe", "task", "hello")
    assert described.returncode == 0, described.stderr
    assert "Echo: Read me remotely" in described.stdout
    history = cli("--repo", remote.url, "history", "task", "hello")
    assert history.returncode == 0, history.stderr
    assert "-> FinalAnswer" in history.stdout.strip().splitlines()[-1]


def test_task_create_with_a_url_commits_through_a_clone_and_pushes(remote: Remote) -> None:
    created = cli(
        "--repo", remote.url, "task", "create", "typed", "--agent", "e2e-agent", "-m", "From the CLI"
    )
    assert created.returncode == 0, created.stderr
    assert git(remote.bare.path, "log", "-1", "--format=%an <%ae> %s", "main") == (
        "Test Human <human@example.com> Add task typed"
    )
    assert remote.serve_once().returncode == 0
    assert remote.bare.phase("typed") == "FinalAnswer"


def test_serving_the_origin_of_a_local_clone_never_touches_the_clone(remote: Remote) -> None:
    remote.add_task("via-clone", "Serve my origin")
    before = git(remote.human.path, "for-each-ref")
    result = remote.serve_once("--remote", "origin", repo=str(remote.human.path))
    assert result.returncode == 0, result.stderr
    assert remote.bare.phase("via-clone") == "FinalAnswer"
    assert git(remote.human.path, "for-each-ref") == before
    missing = remote.serve_once("--remote", "upstream", repo=str(remote.human.path))
    assert missing.returncode == 1
    assert 'has no remote "upstream"' in missing.stderr


def test_an_unreachable_remote_at_first_start_is_one_clear_error(remote: Remote) -> None:
    remote.server.stop()
    result = remote.serve_once(timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot serve git://127.0.0.1"), result.stderr
    assert "Traceback" not in result.stderr
    remote.server.start()


# -- the remote goes away ---------------------------------------------------------------------------


SLOW = {"match": "^Slow ", "delayMs": 1500, "content": "done slowly"}


def readyz(url: str) -> tuple[int, str]:
    """GET /readyz: the status code, and the reason when not ready ("ready" when it is)."""
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())["status"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()).get("reason", "")


def test_tasks_wait_through_an_outage_and_every_commit_reaches_the_remote(remote: Remote, stub: Stub) -> None:
    stub.rules(SLOW)
    names = [f"slow-{i}" for i in range(4)]
    remote.human.add_tasks({name: f"Slow {name}" for name in names})
    remote.push()
    with serving_remote(remote, "--http", "127.0.0.1:0") as proc:
        url = wait_for(
            lambda: (m := re.search(r"listening on (http://[0-9.]+:\d+)", stderr_of(proc))) and m[1],
            timeout=60,
            what="serve --http to listen",
        )
        wait_for(
            lambda: all(remote_phase(remote, n) == "ReadyForLLM" for n in names),
            timeout=60,
            what="every task to be waiting for its LLM, on the remote",
        )
        assert readyz(url) == (200, "ready")
        remote.server.stop()  # the LLM answers while the remote is gone
        wait_for(lambda: "unreachable" in stderr_of(proc), timeout=30, what="serve to report the outage")
        code, reason = readyz(url)
        assert code == 503, reason
        assert "unreachable" in reason
        wait_for(
            lambda: (
                git(remote.cache / "mirror.git", "log", "--format=%B", STATUS_BRANCH).count("-> FinalAnswer")
                == len(names)
            ),
            timeout=30,
            what="the final answers committed in the mirror",
        )
        time.sleep(1.0)  # retries happen meanwhile: still one line for the outage
        assert all(remote.bare.phase(n) == "ReadyForLLM" for n in names)  # the remote has not seen them
        remote.server.start()
        wait_for(
            lambda: all(remote.bare.phase(n) == "FinalAnswer" for n in names),
            timeout=60,
            what="every final answer on the remote",
        )
        wait_for(lambda: remote.remote_status() == remote.mirror_status(), timeout=30, what="all pushed")
        wait_for(lambda: readyz(url)[0] == 200, timeout=30, what="/readyz to be ready again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    stderr = stderr_of(proc)
    assert stderr.count("unreachable") == 1, stderr
    assert stderr.count("reachable again") == 1, stderr
    assert "Traceback" not in stderr
    for name in names:
        assert [new for _, new, _ in remote.bare.transitions("Task", name)][-1] == "FinalAnswer"


def test_serve_waiting_for_an_unreachable_remote_at_start_stops_on_sigterm(remote: Remote) -> None:
    remote.add_task("before", "Before the outage")
    assert remote.serve_once().returncode == 0  # the mirror exists now
    remote.server.stop()
    with serving_remote(remote) as proc:
        wait_for(lambda: "unreachable" in stderr_of(proc), timeout=30, what="serve to report the outage")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    stderr = stderr_of(proc)
    assert stderr.count("unreachable") == 1, stderr
    assert "Traceback" not in stderr
    remote.server.start()


def test_unpushed_commits_of_a_killed_serve_are_pushed_at_restart(remote: Remote, stub: Stub) -> None:
    stub.rules(SLOW)
    remote.add_task("killed", "Slow killed")
    with serving_remote(remote) as proc:
        wait_for(lambda: remote_phase(remote, "killed") == "ReadyForLLM", timeout=60, what="ReadyForLLM")
        remote.server.stop()
        mirror = remote.cache / "mirror.git"
        wait_for(
            lambda: (
                "Task/killed: ReadyForLLM -> FinalAnswer"
                in git(mirror, "log", "-1", "--format=%B", STATUS_BRANCH)
            ),
            timeout=30,
            what="the final answer committed in the mirror only",
        )
        unpushed = remote.mirror_status()
        proc.kill()
        proc.wait(timeout=10)
    assert remote.bare.phase("killed") == "ReadyForLLM"
    remote.server.start()
    result = remote.serve_once()
    assert result.returncode == 0, result.stderr
    assert remote.bare.phase("killed") == "FinalAnswer"
    # The very commit made before the kill is on the remote (nothing recomputed, nothing lost).
    assert git(remote.bare.path, "merge-base", "--is-ancestor", unpushed, STATUS_BRANCH) == ""
    assert len(stub.chats("Slow killed")) == 1


def test_someone_elses_push_to_the_status_branch_is_merged_not_lost(remote: Remote) -> None:
    remote.add_task("first", "Before the intruder")
    with serving_remote(remote) as proc:
        wait_for(lambda: remote_phase(remote, "first") == "FinalAnswer", timeout=60, what="the first task")
        wait_for(lambda: remote.remote_status() == remote.mirror_status(), timeout=30, what="all pushed")
        ours_before = remote.remote_status()
        assert ours_before is not None
        # Someone commits to acp/status on the remote (a note), in the same push as a new task.
        human = remote.human.path
        git(human, "fetch", "-q", "origin")
        git(human, "checkout", "-q", "-b", "intruder", f"origin/{STATUS_BRANCH}")
        (human / "NOTE.md").write_text("someone was here\n")
        git(human, "add", "NOTE.md")
        git(human, "commit", "-q", "-m", "A note on the status branch")
        theirs = git(human, "rev-parse", "HEAD")
        git(human, "checkout", "-q", "main")
        remote.human.add_task("second", "After the intruder")
        git(human, "push", "-q", "origin", "main", f"intruder:{STATUS_BRANCH}")
        wait_for(lambda: remote_phase(remote, "second") == "FinalAnswer", timeout=60, what="the second task")
        wait_for(lambda: remote.remote_status() == remote.mirror_status(), timeout=30, what="all pushed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    stderr = stderr_of(proc)
    tip = remote.remote_status()
    assert tip is not None
    # Both histories are kept: theirs and every one of ours is an ancestor of the remote's tip.
    for sha in (theirs, ours_before):
        git(remote.bare.path, "merge-base", "--is-ancestor", sha, tip)
    merges = git(remote.bare.path, "log", "--merges", "--format=%H %P", STATUS_BRANCH).splitlines()
    assert len(merges) == 1
    merge, first_parent, second_parent = merges[0].split()
    assert second_parent == theirs
    # The merge keeps the reconciler's files (tree: ours): the note is in history, not in status.
    assert git(remote.bare.path, "rev-parse", f"{merge}^{{tree}}") == git(
        remote.bare.path, "rev-parse", f"{first_parent}^{{tree}}"
    )
    assert "merged their commits" in stderr
    assert "Traceback" not in stderr


def test_a_remote_status_branch_ahead_of_the_mirror_is_taken_at_start(remote: Remote, stub: Stub) -> None:
    # The mirror is an older copy (restored from a backup): the remote's newer checkpoints count.
    remote.add_task("kept", "Not redone")
    assert remote.serve_once().returncode == 0
    mirror = remote.cache / "mirror.git"
    first = git(mirror, "rev-list", "--reverse", STATUS_BRANCH).split()[0]
    git(mirror, "update-ref", f"refs/heads/{STATUS_BRANCH}", first)
    git(mirror, "update-ref", f"refs/remotes/origin/{STATUS_BRANCH}", first)
    before = remote.remote_status()
    result = remote.serve_once()
    assert result.returncode == 0, result.stderr
    assert remote.remote_status() == before == remote.mirror_status()  # nothing redone, nothing merged
    assert len(stub.chats("Not redone")) == 1


# -- approvals through the remote -----------------------------------------------------------------


def approval_files(marker: str, counter: Path, tasks: list[str]) -> dict[str, str]:
    files = {
        "contactchannels/humans.yaml": channel_yaml("humans"),
        "mcpservers/gated.yaml": gated_server_yaml("gated", marker=marker, counter=counter, channel="humans"),
        "agents/gated.yaml": tool_agent_yaml("gated", servers=("gated",)),
    }
    for task in tasks:
        files[f"tasks/{task}.yaml"] = task_yaml(task, f"Remote approval {task}", agent="gated")
    return files


def approval_rules(tasks: list[str]) -> list[dict[str, object]]:
    rules: list[dict[str, object]] = [
        {"match": f"^Remote approval {t}$", "when": "first", "toolCalls": [call("gated__count", label=t)]}
        for t in tasks
    ]
    return [*rules, {"when": "tool", "content": "{tool}"}]


def toolcall_of(repo: AcpRepo, task: str) -> str:
    listing = git(repo.path, "ls-tree", "-r", "--name-only", STATUS_BRANCH, "status/toolcalls/")
    names = [path.rsplit("/", 1)[1].removesuffix(".yaml") for path in listing.splitlines()]
    (name,) = [n for n in names if n.startswith(f"{task}-")]
    return name


def awaiting(remote: Remote, tasks: list[str]) -> bool:
    if remote.remote_status() is None:
        return False
    for task in tasks:
        try:
            name = toolcall_of(remote.bare, task)
        except (ValueError, subprocess.CalledProcessError):
            return False
        document = remote.bare.status("toolcalls", name) or {}
        if (document.get("status") or {}).get("phase") != "AwaitingHumanApproval":
            return False
        # The branch it names is on the remote (it was pushed before the phase was).
        if not git(remote.bare.path, "for-each-ref", f"refs/heads/acp/approvals/{name}"):
            return False
    return True


def record_ref_updates(remote: Remote) -> Path:
    """Make the remote log every push it accepts, in order (a post-receive hook); return the log.

    Each push is a line `push` followed by one `<old> <new> <ref>` line per ref it updated.
    """
    log = remote.bare.path.parent / "ref-updates.log"
    hook = remote.bare.path / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\n{{ echo push; cat; }} >> '{log}'\n")
    hook.chmod(0o755)
    return log


def assert_branch_pushed_before_awaiting(
    remote: Remote,
    updates: Path,
    toolcall: str,
    *,
    folder: str = "approvals",
    phase: str = "AwaitingHumanApproval",
) -> None:
    """The approval branch reached the remote in an earlier push than the status naming it."""
    pushes: list[list[tuple[str, str, str]]] = []
    for line in updates.read_text().splitlines():
        if line == "push":
            pushes.append([])
        else:
            old, new, ref = line.split()
            pushes[-1].append((old, new, ref))
    branch = f"refs/heads/acp/{folder}/{toolcall}"
    created = next(
        i for i, push in enumerate(pushes) for old, _, ref in push if ref == branch and set(old) == {"0"}
    )
    status = f"refs/heads/{STATUS_BRANCH}"
    for i, push in enumerate(pushes):
        for _, new, ref in push:
            document = remote.bare.status("toolcalls", toolcall, rev=new) if ref == status else None
            if ((document or {}).get("status") or {}).get("phase") == phase:
                assert created < i, f"{toolcall}: the status naming its branch was pushed with or before it"
                return
    pytest.fail(f"no push of {STATUS_BRANCH} shows {toolcall} {phase}")


def human_git(remote: Remote, *args: str) -> str:
    return git(remote.human.path, *args)


def test_approvals_decided_in_a_clone_and_pushed_while_serving(
    remote: Remote, stub: Stub, marker: str, tmp_path: Path
) -> None:
    tasks = ["merged", "refused", "closed"]
    counter = tmp_path / "counter"
    updates = record_ref_updates(remote)
    stub.rules(*approval_rules(tasks))
    remote.human.commit(approval_files(marker, counter, tasks), "Gated tools and three tasks")
    remote.push()
    with serving_remote(remote) as proc:
        wait_for(lambda: awaiting(remote, tasks), timeout=90, what="three approvals on the remote")
        names = {t: toolcall_of(remote.bare, t) for t in tasks}
        assert counted(counter) == []
        for name in names.values():
            assert_branch_pushed_before_awaiting(remote, updates, name)
        human_git(remote, "fetch", "-q", "origin")
        # Approve: merge the branch (--no-ff) and push.
        human_git(remote, "merge", "-q", "--no-ff", "--no-edit", f"origin/acp/approvals/{names['merged']}")
        # Reject: edit the decision on the branch, merge, push.
        human_git(remote, "checkout", "-q", "-b", "decide", f"origin/acp/approvals/{names['refused']}")
        path = remote.human.path / f"approvals/{names['refused']}.yaml"
        path.write_text(
            path.read_text()
            .replace("decision: approved", "decision: rejected")
            .replace('comment: ""', "comment: not over the network")
        )
        human_git(remote, "commit", "-q", "-am", "Reject")
        human_git(remote, "checkout", "-q", "main")
        human_git(remote, "merge", "-q", "--no-ff", "--no-edit", "decide")
        remote.push()
        # Reject: delete the branch on the remote.
        human_git(remote, "push", "-q", "origin", "--delete", f"acp/approvals/{names['closed']}")
        wait_for(
            lambda: all(remote_phase(remote, t) == "FinalAnswer" for t in tasks),
            timeout=60,
            what="every task finished on the remote",
        )
        wait_for(lambda: remote.remote_status() == remote.mirror_status(), timeout=30, what="all pushed")
        stderr = stderr_of(proc)
    assert counted(counter) == ["merged"]
    calls = {t: (remote.bare.status("toolcalls", n) or {})["status"] for t, n in names.items()}
    assert calls["merged"]["phase"] == "Succeeded"
    assert calls["merged"]["approval"]["decidedBy"] == "Test Human <human@example.com>"
    assert calls["refused"]["phase"] == "ToolCallRejected"
    assert calls["refused"]["result"] == "Rejected: not over the network"
    assert calls["closed"]["phase"] == "ToolCallRejected"
    assert calls["closed"]["result"] == "Rejected: closed without merging"
    # The deleted branch stays deleted (the reconciler did not push it again).
    assert not git(remote.bare.path, "for-each-ref", f"refs/heads/acp/approvals/{names['closed']}")
    assert "Traceback" not in stderr


def test_decisions_pushed_while_the_reconciler_is_stopped(
    remote: Remote, stub: Stub, marker: str, tmp_path: Path
) -> None:
    tasks = ["by-merge", "by-cli"]
    counter = tmp_path / "counter"
    stub.rules(*approval_rules(tasks))
    remote.human.commit(approval_files(marker, counter, tasks), "Gated tools and two tasks")
    remote.push()
    first = remote.serve_once()  # exits: nothing can progress until a person decides
    assert first.returncode == 0, first.stderr
    assert awaiting(remote, tasks)
    names = {t: toolcall_of(remote.bare, t) for t in tasks}
    human_git(remote, "fetch", "-q", "origin")
    human_git(remote, "merge", "-q", "--no-ff", "--no-edit", f"origin/acp/approvals/{names['by-merge']}")
    remote.push()
    approved = cli("--repo", remote.url, "approve", names["by-cli"], "--comment", "from afar")
    assert approved.returncode == 0, approved.stderr
    second = remote.serve_once()
    assert second.returncode == 0, second.stderr
    assert sorted(counted(counter)) == ["by-cli", "by-merge"]
    assert all(remote.bare.phase(t) == "FinalAnswer" for t in tasks)
    by_cli = (remote.bare.status("toolcalls", names["by-cli"]) or {})["status"]["approval"]
    assert by_cli["comment"] == "from afar"


def test_questions_answered_in_a_clone_or_with_respond_through_the_remote(remote: Remote, stub: Stub) -> None:
    questions = {"by-merge": "Which city?", "by-cli": "Which airline?"}
    updates = record_ref_updates(remote)
    stub.rules(
        *(
            {
                "match": f"^Remote question {task}$",
                "when": "first",
                "toolCalls": [call("team__human_contact", message=question)],
            }
            for task, question in questions.items()
        ),
        {"when": "tool", "content": "Human said: {tool}"},
    )
    files = {
        "contactchannels/team.yaml": channel_yaml("team"),
        "agents/asker.yaml": tool_agent_yaml("asker") + "  humanContactChannels:\n    - name: team\n",
    }
    files |= {f"tasks/{t}.yaml": task_yaml(t, f"Remote question {t}", agent="asker") for t in questions}
    remote.human.commit(files, "An agent that asks")
    remote.push()
    with serving_remote(remote) as proc:

        def asked() -> bool:
            for task in questions:
                try:
                    name = toolcall_of(remote.bare, task)
                except (ValueError, subprocess.CalledProcessError):
                    return False
                phase = ((remote.bare.status("toolcalls", name) or {}).get("status") or {}).get("phase")
                if phase != "AwaitingHumanInput":
                    return False
            return True

        wait_for(asked, timeout=60, what="two questions on the remote")
        names = {t: toolcall_of(remote.bare, t) for t in questions}
        for name in names.values():
            assert_branch_pushed_before_awaiting(
                remote, updates, name, folder="questions", phase="AwaitingHumanInput"
            )
        human_git(remote, "fetch", "-q", "origin")
        human_git(remote, "checkout", "-q", "-b", "answer", f"origin/acp/questions/{names['by-merge']}")
        path = remote.human.path / f"responses/{names['by-merge']}.yaml"
        path.write_text(path.read_text().replace('response: ""', "response: Lisbon"))
        human_git(remote, "commit", "-q", "-am", "Answer")
        human_git(remote, "checkout", "-q", "main")
        human_git(remote, "merge", "-q", "--no-ff", "--no-edit", "answer")
        remote.push()
        answered = cli("--repo", remote.url, "respond", names["by-cli"], "--message", "Porto")
        assert answered.returncode == 0, answered.stderr
        wait_for(
            lambda: all(remote_phase(remote, t) == "FinalAnswer" for t in questions),
            timeout=60,
            what="both tasks finished on the remote",
        )
        stderr = stderr_of(proc)
    outputs = {t: (remote.bare.status("tasks", t) or {})["status"]["output"] for t in questions}
    assert outputs == {"by-merge": "Human said: Lisbon", "by-cli": "Human said: Porto"}
    assert "Traceback" not in stderr
