"""Questions to humans and HumanLayer channels, end to end: the real CLI, real git, real HTTP.

Questions through git (one repository, two `serve --once` runs, people answering in between):

task     the human                                           the model reads
merged   writes `response` on the branch, merge --no-ff      Lisbon (answered by Alice)
closed   git branch -D                                       Error: the question was closed without an answer
cli      gitops-acp respond --message Porto                  Porto (answered by the local git user)

HumanLayer (slack and email channels; the local fake HumanLayer in this process, over HTTP): two
approvals through a slack channel (one approved, one rejected with a comment), one question by
e-mail, a channel with a key HumanLayer refuses; `serve --once` runs three times: it asks, it is
restarted while nobody has answered (no second request), and it reads the answers.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import git
from tests.e2e.conftest import (
    API,
    STATUS_BRANCH,
    AcpRepo,
    Background,
    Stub,
    call,
    cli,
    mcpserver_yaml,
    one_error_line,
    serve_args,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
    wait_for,
)
from tests.e2e.test_approvals import ALICE, git_as
from tests.fakes.humanlayer import HumanLayerFake

pytestmark = pytest.mark.e2e

QUESTIONS = {"merged": "Which city for the offsite?", "closed": "Which hotel?", "cli": "Which airline?"}


def channel_yaml(name: str, body: str) -> str:
    return f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: {name}\nspec:\n{body}"


def asker_yaml(name: str, channel: str) -> str:
    return tool_agent_yaml(name) + f"  humanContactChannels:\n    - name: {channel}\n"


def message(task: str) -> str:
    return f"Human scenario {task}: ask."


def once(repo: AcpRepo, *extra: str) -> subprocess.CompletedProcess[str]:
    """`serve --once`; it must exit by itself (the timeout fails the test otherwise)."""
    result = cli(*serve_args(repo, *extra, once=True), timeout=90)
    assert result.returncode == 0, result.stderr
    return result


def the_call(repo: AcpRepo, task: str) -> dict[str, Any]:
    (document,) = toolcalls_of(repo, task)
    return document


def output(repo: AcpRepo, task: str) -> str:
    status = (repo.status("tasks", task) or {}).get("status") or {}
    assert status.get("phase") == "FinalAnswer", (task, status)
    return str(status["output"])


# -- questions through git ------------------------------------------------------------------------


def test_questions_through_git_answered_by_merge_by_respond_or_closed(acp_repo: AcpRepo, stub: Stub) -> None:
    repo = acp_repo
    stub.rules(
        *(
            {
                "match": f"^{message(task)}$",
                "when": "first",
                "toolCalls": [call("team__human_contact", message=question)],
            }
            for task, question in QUESTIONS.items()
        ),
        {"when": "tool", "content": "Human said: {tool}"},
    )
    files = {
        "contactchannels/team.yaml": channel_yaml("team", "  type: git\n"),
        "agents/asker.yaml": asker_yaml("asker", "team"),
    }
    files |= {f"tasks/{t}.yaml": task_yaml(t, message(t), agent="asker") for t in QUESTIONS}
    main = repo.commit(files, "Add the asker and its tasks")

    once(repo)  # exits while the questions wait: nothing can progress without a person
    assert repo.main_sha() == main  # the reconciler never writes main
    names = {task: the_call(repo, task)["metadata"]["name"] for task in QUESTIONS}
    for task, name in names.items():
        document = the_call(repo, task)
        assert document["spec"]["toolType"] == "HumanContact"
        assert document["status"]["phase"] == "AwaitingHumanInput"
        branch = f"acp/questions/{name}"
        assert document["status"]["humanContact"] == {"channel": "team", "branch": branch}
        assert git(repo.path, "rev-parse", f"{branch}^") == main
        proposed = yaml.safe_load(git(repo.path, "show", f"{branch}:responses/{name}.yaml"))
        assert proposed["kind"] == "HumanResponse"
        assert proposed["spec"] == {
            "task": task,
            "toolCall": name,
            "question": QUESTIONS[task],
            "response": "",
        }
        body = git(repo.path, "log", "-1", "--format=%an%n%B", branch)
        assert body.startswith(f"gitops-acp\nQuestion from task {task}: {QUESTIONS[task]}")
        assert message(task) in body
        assert f"gitops-acp respond {name}" in body
        assert repo.phase(task) == "ToolCallsPending"

    # merged: Alice writes the answer on the branch and merges it
    path = f"responses/{names['merged']}.yaml"
    git_as(repo, ALICE, "checkout", "-q", f"acp/questions/{names['merged']}")
    document = yaml.safe_load((repo.path / path).read_text())
    document["spec"]["response"] = "Lisbon"
    (repo.path / path).write_text(yaml.safe_dump(document, sort_keys=False))
    git_as(repo, ALICE, "commit", "-q", "-am", "Answer: Lisbon")
    git_as(repo, ALICE, "checkout", "-q", "main")
    git_as(repo, ALICE, "merge", "-q", "--no-ff", "--no-edit", f"acp/questions/{names['merged']}")
    # closed: nobody wants to answer
    git(repo.path, "branch", "-q", "-D", f"acp/questions/{names['closed']}")
    # cli: the local git user answers with the command
    answered = cli("--repo", str(repo.path), "respond", names["cli"], "--message", "Porto")
    assert answered.returncode == 0, answered.stderr
    assert f"{names['cli']} answered" in answered.stdout
    again = one_error_line(cli("--repo", str(repo.path), "respond", names["cli"], "--message", "Faro"))
    assert "already answered" in again
    unknown = one_error_line(cli("--repo", str(repo.path), "respond", "no-such-call", "--message", "x"))
    assert "no pending question named no-such-call" in unknown

    once(repo)
    assert output(repo, "merged") == "Human said: Lisbon"
    assert output(repo, "closed") == "Human said: Error: the question was closed without an answer"
    assert output(repo, "cli") == "Human said: Porto"
    merged = the_call(repo, "merged")["status"]
    assert (merged["phase"], merged["result"]) == ("Succeeded", "Lisbon")
    assert merged["humanContact"]["respondedBy"] == "Alice <alice@example.com>"
    assert merged["humanContact"]["respondedAt"]
    assert the_call(repo, "cli")["status"]["humanContact"]["respondedBy"] == "Test Human <human@example.com>"
    assert the_call(repo, "closed")["status"]["phase"] == "Failed"
    # The answers stay on main as the record.
    kept = yaml.safe_load(git(repo.path, "show", f"main:responses/{names['cli']}.yaml"))
    assert kept["spec"]["response"] == "Porto"


def test_while_serving_an_answer_or_a_deleted_branch_is_read_at_once(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    """No polling loop: the merge of an answer (main moves) or a deleted branch wakes the question."""
    repo = acp_repo
    tasks = {"live-answer": "Which colour?", "live-closed": "Which font?"}
    stub.rules(
        *(
            {
                "match": f"^{message(t)}$",
                "when": "first",
                "toolCalls": [call("team__human_contact", message=q)],
            }
            for t, q in tasks.items()
        ),
        {"when": "tool", "content": "Human said: {tool}"},
    )
    files = {
        "contactchannels/team.yaml": channel_yaml("team", "  type: git\n"),
        "agents/asker.yaml": asker_yaml("asker", "team"),
    }
    files |= {f"tasks/{t}.yaml": task_yaml(t, message(t), agent="asker") for t in tasks}
    repo.commit(files, "Add the asker and its tasks")
    server = serve_bg(repo, "--poll-interval", "30")  # the safety poll can't be what notices
    waiting = wait_for(
        lambda: all(
            (d := toolcalls_of(repo, t)) and d[0]["status"]["phase"] == "AwaitingHumanInput" for t in tasks
        ),
        timeout=60,
        what="both questions to wait for a person",
    )
    assert waiting
    answer_call = the_call(repo, "live-answer")["metadata"]["name"]
    closed_call = the_call(repo, "live-closed")["metadata"]["name"]
    started = time.monotonic()
    answered = cli("--repo", str(repo.path), "respond", answer_call, "--message", "Teal")
    assert answered.returncode == 0, answered.stderr
    git(repo.path, "branch", "-q", "-D", f"acp/questions/{closed_call}")
    wait_for(
        lambda: repo.phase("live-answer") == "FinalAnswer" and repo.phase("live-closed") == "FinalAnswer",
        timeout=20,
        what="both tasks to finish",
    )
    assert time.monotonic() - started < 15  # well under the 30 s safety poll
    assert output(repo, "live-answer") == "Human said: Teal"
    assert output(repo, "live-closed") == "Human said: Error: the question was closed without an answer"
    assert server.proc.poll() is None, server.stderr()


# -- HumanLayer -----------------------------------------------------------------------------------

HL_KEY = "hl-e2e-key-4f1c9b-do-not-leak"
BAD_KEY = "hl-e2e-wrong-key-7d2e-do-not-leak"
HL_TASKS = {"slack-yes": "approver", "slack-no": "approver", "email-q": "asker"}


def _secret(repo: AcpRepo, name: str, value: str) -> None:
    (repo.secrets / name).mkdir()
    (repo.secrets / name / "HUMANLAYER_API_KEY").write_text(value + "\n")


def test_humanlayer_approvals_and_questions_survive_a_restart_without_asking_twice(
    acp_repo: AcpRepo, stub: Stub, marker: str, tmp_path: Path
) -> None:
    repo = acp_repo
    counter = tmp_path / "counter"
    _secret(repo, "humanlayer", HL_KEY)
    _secret(repo, "humanlayer-bad", BAD_KEY)
    key = "  apiKeyFrom:\n    secretKeyRef: {name: humanlayer, key: HUMANLAYER_API_KEY}\n"
    stub.rules(
        {
            "match": f"^{message('slack-yes')}$",
            "when": "first",
            "toolCalls": [call("gated__count", label="yes")],
        },
        {
            "match": f"^{message('slack-no')}$",
            "when": "first",
            "toolCalls": [call("gated__count", label="no")],
        },
        {
            "match": f"^{message('email-q')}$",
            "when": "first",
            "toolCalls": [call("boss__human_contact", message="What is the budget?")],
        },
        {"when": "tool", "content": "Result: {tool}"},
    )
    server = (
        mcpserver_yaml("gated", marker=marker, counter=counter) + "  approvalContactChannel:\n    name: ops\n"
    )
    files = {
        "contactchannels/ops.yaml": channel_yaml(
            "ops", "  type: slack\n" + key + "  slack:\n    channelOrUserID: C0OPS\n"
        ),
        "contactchannels/boss.yaml": channel_yaml(
            "boss",
            "  type: email\n"
            + key
            + "  email:\n    address: boss@example.com\n    contextAboutUser: the budget owner\n",
        ),
        "contactchannels/broken.yaml": channel_yaml(
            "broken",
            "  type: slack\n"
            + key.replace("humanlayer,", "humanlayer-bad,")
            + "  slack:\n    channelOrUserID: C0BAD\n",
        ),
        "mcpservers/gated.yaml": server,
        "agents/approver.yaml": tool_agent_yaml("approver", servers=("gated",)),
        "agents/asker.yaml": asker_yaml("asker", "boss"),
    }
    files |= {f"tasks/{t}.yaml": task_yaml(t, message(t), agent=a) for t, a in HL_TASKS.items()}
    repo.commit(files, "HumanLayer channels")

    with HumanLayerFake(project_keys={HL_KEY: ("acme-agents", "acme")}) as hl:
        flags = ("--humanlayer-url", hl.url, "--humanlayer-poll-interval", "0.2")
        first = once(repo, *flags)
        ops = (repo.status("contactchannels", "ops") or {})["status"]
        assert (ops["status"], ops["projectSlug"], ops["orgSlug"]) == ("Ready", "acme-agents", "acme")
        broken = (repo.status("contactchannels", "broken") or {})["status"]
        assert broken["status"] == "Error"
        assert broken["statusDetail"].startswith(
            'HumanLayer refused the API key (401): check secret "humanlayer-bad"'
        )
        ids = {task: the_call(repo, task)["status"]["externalCallID"] for task in HL_TASKS}
        assert [the_call(repo, t)["status"]["phase"] for t in HL_TASKS] == [
            "AwaitingHumanApproval",
            "AwaitingHumanApproval",
            "AwaitingHumanInput",
        ]
        posted = {
            p["body"]["call_id"]: p["body"] for p in hl.posts("function_calls") + hl.posts("contact_requests")
        }
        assert set(posted) == set(ids.values())
        assert posted[ids["slack-yes"]]["spec"] == {
            "fn": "gated__count",
            "kwargs": {"label": "yes"},
            "channel": {"slack": {"channel_or_user_id": "C0OPS"}},
        }
        assert posted[ids["email-q"]]["spec"] == {
            "msg": "What is the budget?",
            "channel": {"email": {"address": "boss@example.com", "context_about_user": "the budget owner"}},
        }
        assert all(r["authorized"] for r in hl.requests() if r["path"] != "/humanlayer/v1/project")

        # A restart while nobody has answered: the same requests are looked up, none is sent again.
        looked = len(hl.requests())
        second = once(repo, *flags)
        assert (len(hl.posts("function_calls")), len(hl.posts("contact_requests"))) == (2, 1)
        gets = [r["path"] for r in hl.requests()[looked:] if r["method"] == "GET"]
        assert {
            f"/humanlayer/v1/function_calls/{ids['slack-yes']}",
            f"/humanlayer/v1/contact_requests/{ids['email-q']}",
        } <= set(gets)
        assert not counter.exists()

        hl.approve(ids["slack-yes"], comment="ship it")
        hl.reject(ids["slack-no"], "not on a Friday")
        hl.answer(ids["email-q"], "5000 EUR")
        third = once(repo, *flags)
        assert (len(hl.posts("function_calls")), len(hl.posts("contact_requests"))) == (2, 1)

    assert output(repo, "slack-yes") == "Result: 1"
    assert output(repo, "slack-no") == "Result: Rejected: not on a Friday"
    assert output(repo, "email-q") == "Result: 5000 EUR"
    assert counter.read_text().splitlines() == ["yes"]  # the approved call ran once, the rejected never
    yes = the_call(repo, "slack-yes")["status"]
    assert yes["approval"]["decidedBy"] == "slack C0OPS"
    assert yes["approval"]["comment"] == "ship it"
    assert the_call(repo, "email-q")["status"]["humanContact"]["respondedBy"] == "email boss@example.com"
    # The key is nowhere: not in the status branch's history, not in what serve printed.
    history = git(repo.path, "log", "-p", STATUS_BRANCH)
    everything = git(repo.path, "log", "-p", "--all")
    for text in (first.stderr, second.stderr, third.stderr, history, everything):
        assert HL_KEY not in text
        assert BAD_KEY not in text


def test_while_serving_a_humanlayer_answer_is_polled_for(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    repo = acp_repo
    _secret(repo, "humanlayer", HL_KEY)
    stub.rules(
        {
            "match": f"^{message('polled')}$",
            "when": "first",
            "toolCalls": [call("ops__human_contact", message="Deploy now?")],
        },
        {"when": "tool", "content": "Result: {tool}"},
    )
    key = "  apiKeyFrom:\n    secretKeyRef: {name: humanlayer, key: HUMANLAYER_API_KEY}\n"
    files = {
        "contactchannels/ops.yaml": channel_yaml(
            "ops", "  type: slack\n" + key + "  slack:\n    channelOrUserID: C0OPS\n"
        ),
        "agents/asker.yaml": asker_yaml("asker", "ops"),
        "tasks/polled.yaml": task_yaml("polled", message("polled"), agent="asker"),
    }
    repo.commit(files, "A slack question")
    with HumanLayerFake(project_keys={HL_KEY: ("acme-agents", "acme")}) as hl:
        server = serve_bg(repo, "--humanlayer-url", hl.url, "--humanlayer-poll-interval", "0.2")
        [posted] = wait_for(lambda: hl.posts("contact_requests"), timeout=60, what="the question to be asked")
        hl.answer(posted["body"]["call_id"], "yes, go")
        wait_for(lambda: repo.phase("polled") == "FinalAnswer", timeout=20, what="the answer to be read")
        assert len(hl.posts("contact_requests")) == 1
        assert server.proc.poll() is None, server.stderr()
    assert output(repo, "polled") == "Result: yes, go"


def test_an_approval_humanlayer_never_received_is_asked_once_on_the_next_run(
    acp_repo: AcpRepo, stub: Stub, marker: str, tmp_path: Path
) -> None:
    """The POST fails after the call id was committed (what a crash there leaves): the next run
    finds nothing at HumanLayer under that id (404) and asks then, with the same id, once."""
    repo = acp_repo
    counter = tmp_path / "counter"
    _secret(repo, "humanlayer", HL_KEY)
    stub.rules(
        {"match": f"^{message('lost')}$", "when": "first", "toolCalls": [call("gated__count", label="lost")]},
        {"when": "tool", "content": "Result: {tool}"},
    )
    key = "  apiKeyFrom:\n    secretKeyRef: {name: humanlayer, key: HUMANLAYER_API_KEY}\n"
    server = (
        mcpserver_yaml("gated", marker=marker, counter=counter) + "  approvalContactChannel:\n    name: ops\n"
    )
    repo.commit(
        {
            "contactchannels/ops.yaml": channel_yaml(
                "ops", "  type: slack\n" + key + "  slack:\n    channelOrUserID: C0OPS\n"
            ),
            "mcpservers/gated.yaml": server,
            "agents/approver.yaml": tool_agent_yaml("approver", servers=("gated",)),
            "tasks/lost.yaml": task_yaml("lost", message("lost"), agent="approver"),
        },
        "A slack approval",
    )
    with HumanLayerFake(project_keys={HL_KEY: ("acme-agents", "acme")}) as hl:
        flags = ("--humanlayer-url", hl.url, "--humanlayer-poll-interval", "0.2")
        hl.fail_next("POST", "/humanlayer/v1/function_calls", 503, retry_after=3600)
        once(repo, *flags)  # exits: the retry is an hour away and only a person can move the call
        status = the_call(repo, "lost")["status"]
        call_id = status["externalCallID"]
        assert status["phase"] == "AwaitingHumanApproval"
        assert "last error (retrying): HumanLayer answered 503 to POST" in status["statusDetail"]
        assert hl.calls("function_calls") == {}

        once(repo, *flags)  # restart: GET 404, then the POST, with the recorded id
        assert list(hl.calls("function_calls")) == [call_id]
        assert [p["body"]["call_id"] for p in hl.posts("function_calls")] == [call_id, call_id]
        assert "last error" not in the_call(repo, "lost")["status"]["statusDetail"]

        hl.approve(call_id)
        once(repo, *flags)
        assert len(hl.posts("function_calls")) == 2
    assert output(repo, "lost") == "Result: 1"
    assert counter.read_text().splitlines() == ["lost"]
