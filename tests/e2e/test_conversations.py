"""Follow-ups and forks end to end (DESIGN §12): the real CLI, `serve`, git and the stub LLM.

A conversation of several follow-ups (one sent while the task runs), SIGKILLs at the steps of the
commits that take follow-ups (none lost, none taken twice), an answered follow-up removed from main
(a status error, the conversation untouched), forks from the newest checkpoint and from TASK@COMMIT
with and without a message, and the one-line refusals.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import CLI, AcpRepo, Background, Stub, cli, one_error_line, serve_args, wait_for

pytestmark = pytest.mark.e2e

ServeOnce = Callable[..., subprocess.CompletedProcess[str]]


def repo_cli(repo: AcpRepo, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--repo", str(repo.path), *args)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def task_status(repo: AcpRepo, name: str, rev: str = "acp/status") -> dict[str, Any]:
    document = repo.status("tasks", name, rev)
    assert document is not None, name
    return document.get("status") or {}


def users(status: dict[str, Any]) -> list[str]:
    return [m["content"] for m in status.get("contextWindow") or [] if m["role"] == "user"]


def exchange(repo: AcpRepo, serve_once: ServeOnce) -> None:
    ok(serve_once(repo))


def test_a_conversation_of_follow_ups_keeps_its_whole_context(
    acp_repo: AcpRepo, stub: Stub, serve_once: ServeOnce, serve_bg: Callable[..., Background]
) -> None:
    ok(repo_cli(acp_repo, "task", "create", "talk", "--agent", "e2e-agent", "-m", "first question"))
    exchange(acp_repo, serve_once)
    assert task_status(acp_repo, "talk")["output"] == "Echo: first question"
    out = ok(repo_cli(acp_repo, "task", "send", "talk", "-m", "second question"))
    assert "follow-up 1 sent" in out
    exchange(acp_repo, serve_once)
    status = task_status(acp_repo, "talk")
    assert (status["phase"], status["output"], status["followUpsApplied"]) == (
        "FinalAnswer",
        "Echo: second question",
        1,
    )
    # The model got the whole conversation: the first exchange, then the follow-up.
    last = stub.chats("first question")[-1]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in last[1:]] == [
        ("user", "first question"),
        ("assistant", "Echo: first question"),
        ("user", "second question"),
    ]

    # A follow-up sent while the task runs waits for the current answer, then goes on.
    stub.rules({"match": "first question", "delayMs": 4000, "times": 1})
    background = serve_bg(acp_repo)
    ok(repo_cli(acp_repo, "task", "send", "talk", "-m", "third question"))
    wait_for(lambda: len(stub.chats("first question")) >= 3, timeout=30, what="the third request")
    ok(repo_cli(acp_repo, "task", "send", "talk", "-m", "fourth question"))  # while the LLM answers
    running = task_status(acp_repo, "talk")
    assert (running["phase"], running["followUpsApplied"]) == ("ReadyForLLM", 2)  # it was sent mid-answer
    wait_for(
        lambda: (
            task_status(acp_repo, "talk").get("followUpsApplied") == 3
            and task_status(acp_repo, "talk").get("phase") == "FinalAnswer"
        ),
        timeout=30,
        what="the fourth answer",
    )
    background.kill()
    status = task_status(acp_repo, "talk")
    assert users(status) == ["first question", "second question", "third question", "fourth question"]
    roles = [m["role"] for m in status["contextWindow"]]
    assert roles == ["system", *["user", "assistant"] * 4]
    assert status["output"] == "Echo: fourth question"
    assert status["turns"] == 4  # limits count the whole conversation
    moves = [(old, new) for old, new, _ in acp_repo.transitions("Task", "talk")]
    assert moves.count(("FinalAnswer", "ReadyForLLM")) == 3

    # history and describe show each exchange.
    history = ok(repo_cli(acp_repo, "history", "task", "talk"))
    for n in (1, 2, 3):
        assert f"Follow-up {n} received" in history
        assert f"LLM final response received (follow-up {n})" in history
    described = ok(repo_cli(acp_repo, "describe", "task", "talk"))
    assert "Conversation:" in described
    assert "follow-up 3: fourth question" in described
    assert "answer: Echo: fourth question" in described


def test_sigkill_while_taking_follow_ups_neither_loses_nor_repeats_one(
    acp_repo: AcpRepo, stub: Stub, serve_once: ServeOnce
) -> None:
    follow_ups = [f"follow-up number {i}" for i in range(1, 5)]
    ok(repo_cli(acp_repo, "task", "create", "crashy", "--agent", "e2e-agent", "-m", "opening"))
    exchange(acp_repo, serve_once)
    for text in follow_ups:
        ok(repo_cli(acp_repo, "task", "send", "crashy", "-m", text))
    points = ["ref-moved", "lock-taken", "pack-written", "objects-written", "pack-renamed"]
    kills = 0
    for run in range(14):
        env = {**os.environ, "GITOPS_ACP_CRASH_AT": f"{points[run % len(points)]}:2"}
        result = subprocess.run(
            [*CLI, *serve_args(acp_repo, once=True)], capture_output=True, text=True, timeout=60, env=env
        )
        status = task_status(acp_repo, "crashy")
        applied = status.get("followUpsApplied", 0)
        # After every kill: the committed window holds exactly the follow-ups it counts, once each.
        assert users(status) == ["opening", *follow_ups[:applied]], status
        if result.returncode == 0:
            break
        assert result.returncode == -9, result.stderr
        kills += 1
    assert kills >= 4
    assert status["phase"] == "FinalAnswer"
    assert status["followUpsApplied"] == 4
    assert status["output"] == "Echo: follow-up number 4"
    roles = [m["role"] for m in status["contextWindow"]]
    assert roles == ["system", *["user", "assistant"] * 5]


def test_an_answered_follow_up_removed_from_main_is_a_status_error(
    acp_repo: AcpRepo, stub: Stub, serve_once: ServeOnce
) -> None:
    ok(repo_cli(acp_repo, "task", "create", "keep", "--agent", "e2e-agent", "-m", "hello"))
    ok(repo_cli(acp_repo, "task", "send", "keep", "-m", "and then?"))
    exchange(acp_repo, serve_once)
    before = task_status(acp_repo, "keep")
    assert before["followUpsApplied"] == 1
    original = (acp_repo.path / "tasks/keep.yaml").read_text()
    document = yaml.safe_load(original)
    del document["spec"]["followUps"]
    acp_repo.commit({"tasks/keep.yaml": yaml.safe_dump(document)}, "Drop the follow-up")
    exchange(acp_repo, serve_once)
    after = task_status(acp_repo, "keep")
    assert after["phase"] == "FinalAnswer"
    assert (after["status"], after["ready"]) == ("Error", False)
    assert after["statusDetail"].startswith("spec.followUps[0] was removed from main after it was taken")
    assert after["contextWindow"] == before["contextWindow"]  # history is not rewritten
    acp_repo.commit({"tasks/keep.yaml": original}, "Put it back")
    exchange(acp_repo, serve_once)
    fixed = task_status(acp_repo, "keep")
    assert (fixed["status"], fixed["ready"]) == ("Ready", True)
    assert fixed["contextWindow"] == before["contextWindow"]


def test_forks_from_the_newest_checkpoint_and_from_a_commit(
    acp_repo: AcpRepo, stub: Stub, serve_once: ServeOnce
) -> None:
    ok(repo_cli(acp_repo, "task", "create", "origin", "--agent", "e2e-agent", "-m", "the start"))
    exchange(acp_repo, serve_once)
    first_answer = next(c for old, new, c in acp_repo.transitions("Task", "origin") if new == "FinalAnswer")
    ok(repo_cli(acp_repo, "task", "send", "origin", "-m", "the middle"))
    exchange(acp_repo, serve_once)
    origin = task_status(acp_repo, "origin")

    # From the newest checkpoint, with a message: the whole conversation, then the message.
    out = ok(repo_cli(acp_repo, "task", "create", "branch-a", "--fork-from", "origin", "-m", "a new turn"))
    assert "forked from origin@" in out
    # From a named commit, without a message: the answer there is the fork's answer (no LLM call).
    at = f"origin@{first_answer.sha[:10]}"
    ok(repo_cli(acp_repo, "task", "create", "branch-b", "--fork-from", at))
    spec = yaml.safe_load((acp_repo.path / "tasks/branch-b.yaml").read_text())["spec"]
    assert spec["forkFrom"] == {"task": "origin", "commit": first_answer.sha}  # resolved to a full sha
    assert spec["agentRef"] == {"name": "e2e-agent"}  # the forked task's agent
    requests = len(stub.chats("the start"))
    exchange(acp_repo, serve_once)
    a = task_status(acp_repo, "branch-a")
    assert users(a) == ["the start", "the middle", "a new turn"]
    assert a["output"] == "Echo: a new turn"
    b = task_status(acp_repo, "branch-b")
    assert (b["phase"], b["output"]) == ("FinalAnswer", "Echo: the start")
    assert users(b) == ["the start"]
    assert len(stub.chats("the start")) == requests + 1  # branch-a's request only
    assert task_status(acp_repo, "origin") == origin  # the forked task is untouched

    # A fork takes follow-ups of its own.
    ok(repo_cli(acp_repo, "task", "send", "branch-b", "-m", "another way"))
    exchange(acp_repo, serve_once)
    b = task_status(acp_repo, "branch-b")
    assert users(b) == ["the start", "another way"]
    assert b["output"] == "Echo: another way"


def test_refusals_are_one_line(acp_repo: AcpRepo, stub: Stub, serve_once: ServeOnce) -> None:
    stub.rules(
        {"match": "use a tool", "when": "first", "toolCalls": [{"name": "nowhere__tool", "arguments": {}}]},
        {"match": "break", "status": 400, "message": "bad request"},
    )
    ok(repo_cli(acp_repo, "task", "create", "tooly", "--agent", "e2e-agent", "-m", "use a tool"))
    ok(repo_cli(acp_repo, "task", "create", "broken", "--agent", "e2e-agent", "-m", "break"))
    exchange(acp_repo, serve_once)
    waiting = next(c for old, new, c in acp_repo.transitions("Task", "tooly") if new == "ToolCallsPending")
    main = acp_repo.main_sha()

    line = one_error_line(repo_cli(acp_repo, "task", "create", "x1", "--fork-from", f"tooly@{waiting.sha}"))
    assert "waits on tool calls there (ToolCallsPending)" in line
    line = one_error_line(repo_cli(acp_repo, "task", "create", "x2", "--fork-from", f"tooly@{main}"))
    assert "is not a checkpoint of it" in line
    line = one_error_line(repo_cli(acp_repo, "task", "create", "x3", "--fork-from", "tooly@0123456789abcdef"))
    assert "no such commit" in line
    line = one_error_line(repo_cli(acp_repo, "task", "create", "x4", "--fork-from", "nobody"))
    assert 'cannot fork Task "nobody"' in line
    line = one_error_line(repo_cli(acp_repo, "task", "create", "x5", "--agent", "e2e-agent"))
    assert "--message" in line
    line = one_error_line(repo_cli(acp_repo, "task", "send", "nobody", "-m", "hi"))
    assert 'Task "nobody" is not declared on main' in line
    line = one_error_line(repo_cli(acp_repo, "task", "send", "broken", "-m", "again"))
    assert 'Task "broken" is Failed' in line
    assert "--fork-from broken" in line


def test_an_archived_task_takes_no_follow_up_but_can_be_forked(
    acp_repo: AcpRepo, stub: Stub, serve_once: ServeOnce
) -> None:
    ok(repo_cli(acp_repo, "task", "create", "old", "--agent", "e2e-agent", "-m", "long ago"))
    ok(serve_once(acp_repo, "--retain-finished", "0"))  # answered, then archived at once
    assert acp_repo.status("tasks", "old") is None
    line = one_error_line(repo_cli(acp_repo, "task", "send", "old", "-m", "still there?"))
    assert 'Task "old" was archived' in line
    assert "--fork-from old" in line
    ok(repo_cli(acp_repo, "task", "create", "revived", "--fork-from", "old", "-m", "still there?"))
    exchange(acp_repo, serve_once)
    assert users(task_status(acp_repo, "revived")) == ["long ago", "still there?"]


def test_concurrent_sends_are_all_kept(acp_repo: AcpRepo, stub: Stub) -> None:
    from tests.e2e.conftest import cli_many

    ok(repo_cli(acp_repo, "task", "create", "busy", "--agent", "e2e-agent", "-m", "hello"))
    texts = [f"at once {i}" for i in range(4)]
    results = cli_many([["--repo", str(acp_repo.path), "task", "send", "busy", "-m", t] for t in texts])
    for result in results:
        ok(result)  # one at a time: none refused, none dropped
    on_main = yaml.safe_load(git_show(acp_repo, "main:tasks/busy.yaml"))["spec"]["followUps"]
    assert sorted(f["content"] for f in on_main) == texts
    numbers = sorted(int(r.stdout.split("follow-up ")[1].split()[0]) for r in results)
    assert numbers == [1, 2, 3, 4]


def git_show(repo: AcpRepo, what: str) -> str:
    shown = subprocess.run(["git", "show", what], cwd=repo.path, capture_output=True, text=True, check=True)
    return shown.stdout
