"""Approvals of tool calls through git (DESIGN §5), end to end: real CLI, real git, the real MCP server.

One repository, two `serve --once` runs with people deciding in between (the reconciler is stopped
while they do). Every call is `count` (it appends its label to a counter file), so "the tool ran
exactly once / never" is read from that file:

task          server   channel                      the human                  the call ends
merged        gated    humans                       merge --no-ff (Alice)      Succeeded, decided by Alice
refused       gated    humans                       decision: rejected, merge  Rejected: not today
closed        gated    humans                       git branch -D              Rejected: closed unmerged
tampered      gated    humans                       edit arguments, merge      Rejected: arguments changed
edited        lenient  editors (allowArgumentEdits) edit arguments, merge      Succeeded, new arguments
offline       gated    humans                       gitops-acp approve         Succeeded, by the local user
by-alice      guarded  bobs (approvers: bob)        merge --no-ff (Alice)      Rejected: not an approver
by-bob        guarded  bobs                         merge --no-ff (Bob)        Succeeded, decided by Bob
fast-forward  guarded  bobs                         merge --ff-only            Rejected: fast-forward
partial       partial  humans, tools: [count]       (echo runs at once) merge  Succeeded

Then ten approvals pending at once, decided in a shuffled order (approve, reject, merge, branch -D)
while `serve` runs in the background.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import git
from tests.e2e.conftest import (
    API,
    CLI,
    IDENTITY,
    STATUS_BRANCH,
    AcpRepo,
    Background,
    Stub,
    call,
    cli,
    mcpserver_yaml,
    module_repo,
    moves_of,
    no_servers_left,
    serve_args,
    status_files,
    task_yaml,
    tool_agent_yaml,
    toolcalls_of,
    wait_for,
)

pytestmark = pytest.mark.e2e

ALICE = ("Alice", "alice@example.com")
BOB = ("Bob", "bob@example.com")
LOCAL_USER = "Test Human <human@example.com>"  # the identity the fixtures give every test's git
#: Each task's MCP server (its agent has the same name); its `count` call's label is the task's name.
TASKS = {
    "merged": "gated",
    "refused": "gated",
    "closed": "gated",
    "tampered": "gated",
    "edited": "lenient",
    "offline": "gated",
    "by-alice": "guarded",
    "by-bob": "guarded",
    "fast-forward": "guarded",
    "partial": "partial",
}
PARTIAL_ECHO = "echo needs no approval e2e-7a41"


def message(task: str) -> str:
    return f"Approval scenario {task}: count it."


# -- repository content ---------------------------------------------------------------------------


def channel_yaml(name: str, git_settings: str = "") -> str:
    """A ContactChannel of type git; `git_settings` is the body of its `git:` block (indented 4)."""
    text = f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: {name}\nspec:\n  type: git\n"
    return text + (f"  git:\n{git_settings}" if git_settings else "")


def gated_server_yaml(
    name: str, *, marker: str, counter: Path, channel: str, approval: dict[str, list[str]] | None = None
) -> str:
    """The MCP test server with `approvalContactChannel` (and an `approval` block, when given)."""
    text = mcpserver_yaml(name, marker=marker, counter=counter)
    text += f"  approvalContactChannel:\n    name: {channel}\n"
    if approval is not None:
        text += f"  approval: {json.dumps(approval)}\n"
    return text


# -- serve --once, watched ------------------------------------------------------------------------

#: How long `serve --once` gets to exit by itself once everything it could do is on the status branch.
EXIT_GRACE = 8.0


@dataclass
class Once:
    """A `serve --once` run: its exit code and stderr, and whether it exited by itself."""

    returncode: int
    stderr: str = field(repr=False)
    exited_by_itself: bool
    seconds: float  # from start to exit
    exit_lag: float  # from the expected state on the status branch to exit (or to SIGTERM)


def serve_once_until(repo: AcpRepo, done: Callable[[], Any], *, timeout: float = 90) -> Once:
    """Run `serve --once`; once `done()` holds, give it EXIT_GRACE to exit, else SIGTERM it.

    Stopping it (instead of failing here) keeps every other assertion of the module meaningful
    when `--once` does not notice it is idle; `exited_by_itself` is asserted on by its own test.
    """
    started = time.monotonic()
    stderr_path = repo.logs / f"once-{time.monotonic_ns()}.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [*CLI, *serve_args(repo, once=True)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=os.environ.copy(),
        )
    try:
        reached = wait_for(
            lambda: proc.poll() is not None or done(),
            timeout=timeout,
            interval=0.1,
            what="serve --once to exit or reach the expected state",
        )
        assert reached
        reached_at = time.monotonic()
        try:
            proc.wait(timeout=EXIT_GRACE)
            by_itself = True
        except subprocess.TimeoutExpired:
            by_itself = False
            proc.send_signal(signal.SIGTERM)  # a clean stop: every checkpoint handed over is committed
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    now = time.monotonic()
    return Once(
        proc.returncode,
        stderr_path.read_text(errors="replace"),
        by_itself,
        seconds=now - started,
        exit_lag=now - reached_at,
    )


# -- the human's side: plain git in the work tree ---------------------------------------------------


def git_as(repo: AcpRepo, who: tuple[str, str], *args: str) -> str:
    """Run git in the work tree as `who` (environment, since the fixtures' GIT_AUTHOR_* beat `-c`)."""
    name, email = who
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    out = subprocess.run(["git", *args], cwd=repo.path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout.strip()


def merge(repo: AcpRepo, toolcall: str, *, who: tuple[str, str] = ALICE, ff: bool = False) -> str:
    """Merge the call's approval branch into main (checked out); return main's new tip."""
    mode = "--ff-only" if ff else "--no-ff"
    git_as(repo, who, "merge", "-q", mode, "--no-edit", f"acp/approvals/{toolcall}")
    return repo.main_sha()


def edit_on_branch(
    repo: AcpRepo, toolcall: str, change: dict[str, Any], *, who: tuple[str, str] = ALICE
) -> None:
    """Check out the approval branch, update the approval file's spec with `change`, commit, back to main."""
    path = f"approvals/{toolcall}.yaml"
    git_as(repo, who, "checkout", "-q", f"acp/approvals/{toolcall}")
    try:
        document = yaml.safe_load((repo.path / path).read_text())
        document["spec"].update(change)
        (repo.path / path).write_text(yaml.safe_dump(document, sort_keys=False))
        git_as(repo, who, "commit", "-q", "-am", f"Decide {toolcall}")
    finally:
        git_as(repo, who, "checkout", "-q", "main")


def branches(repo: AcpRepo) -> set[str]:
    return set(
        git(repo.path, "for-each-ref", "--format=%(refname:short)", "refs/heads/acp/approvals/").split()
    )


def phases(repo: AcpRepo, toolcall: str) -> list[str]:
    """The phases a ToolCall went through, in order (checkpoints that changed only the detail folded)."""
    found: list[str] = []
    for _, new, _ in moves_of(repo, "ToolCall", "toolcalls", toolcall):
        if not found or found[-1] != new:
            found.append(new)
    return found


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def counted(counter: Path) -> list[str]:
    """The labels `count` recorded, one per run, in order."""
    return counter.read_text().splitlines() if counter.exists() else []


def the_toolcall(
    repo: AcpRepo, task: str, tool: str = "count", *, rev: str = STATUS_BRANCH
) -> dict[str, Any]:
    """The task's one call of `tool` (any server's), at `rev`."""
    (document,) = [
        d for d in toolcalls_of(repo, task, rev) if d["spec"]["toolRef"]["name"].endswith(f"__{tool}")
    ]
    return document


# -- the shared run -------------------------------------------------------------------------------


@dataclass
class Run:
    """What the module's two `serve --once` runs left, and what the people did in between."""

    repo: AcpRepo
    counter: Path
    names: dict[str, str]  # task -> the name of its `count` call
    first: Once
    status_after_first: str  # the tip of acp/status when the first run ended
    main: dict[str, str] = field(default_factory=dict)  # before, after first, decided, after second
    counted_after_first: list[str] = field(default_factory=list)
    branches_after_first: set[str] = field(default_factory=set)
    proposals: dict[str, str] = field(default_factory=dict, repr=False)  # task -> its approval file
    proposal_commits: dict[str, str] = field(default_factory=dict, repr=False)  # task -> `%an <%ae>%n%P%n%B`
    proposal_shas: dict[str, str] = field(default_factory=dict)  # task -> its approval branch's commit
    branches_after_second: set[str] = field(default_factory=set)
    decisions: dict[str, str] = field(default_factory=dict)  # task -> main's tip right after its decision
    second: Once | None = None
    chats: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def toolcall(self, task: str, rev: str = STATUS_BRANCH) -> dict[str, Any]:
        return the_toolcall(self.repo, task, rev=rev)

    def task_status(self, task: str, rev: str = STATUS_BRANCH) -> dict[str, Any]:
        document = self.repo.status("tasks", task, rev=rev)
        assert document is not None, task
        status: dict[str, Any] = document["status"]
        return status

    def last_request(self, task: str) -> dict[str, Any]:
        """The last chat completion request the stub received for `task`."""
        mine = [c for c in self.chats if _first_user(c) == message(task)]
        assert mine, f"the stub saw no request of {task}"
        body: dict[str, Any] = mine[-1]["body"]
        return body


def _first_user(chat: dict[str, Any]) -> str | None:
    return next((m.get("content") for m in chat["body"]["messages"] if m.get("role") == "user"), None)


def _all_waiting(repo: AcpRepo) -> bool:
    """Whether every task's `count` call awaits approval and `partial`'s echo has run."""
    found = {
        (d["spec"]["taskRef"]["name"], d["spec"]["toolRef"]["name"].split("__")[-1]): d["status"]["phase"]
        for (plural, _), d in status_files(repo).items()
        if plural == "toolcalls"
    }
    return (
        all(found.get((t, "count")) == "AwaitingHumanApproval" for t in TASKS)
        and found.get(("partial", "echo")) == "Succeeded"
    )


def _rules() -> list[dict[str, Any]]:
    """One `count` call per task (labelled with its name); `partial` also echoes; then the tool's text."""
    rules: list[dict[str, Any]] = [
        {
            "match": f"^{message(task)}$",
            "when": "first",
            "toolCalls": [call(f"{server}__count", label=task)]
            + ([call("partial__echo", text=PARTIAL_ECHO)] if task == "partial" else []),
        }
        for task, server in TASKS.items()
    ]
    return [*rules, {"when": "tool", "content": "{tool}"}]


def _files(marker: str, counter: Path) -> dict[str, str]:
    def server(name: str, channel: str, approval: dict[str, list[str]] | None = None) -> str:
        return gated_server_yaml(name, marker=marker, counter=counter, channel=channel, approval=approval)

    files = {
        "contactchannels/humans.yaml": channel_yaml("humans"),
        "contactchannels/editors.yaml": channel_yaml("editors", "    allowArgumentEdits: true\n"),
        "contactchannels/bobs.yaml": channel_yaml("bobs", "    approvers: [bob@example.com]\n"),
        "mcpservers/gated.yaml": server("gated", "humans"),
        "mcpservers/lenient.yaml": server("lenient", "editors"),
        "mcpservers/guarded.yaml": server("guarded", "bobs"),
        "mcpservers/partial.yaml": server("partial", "humans", {"tools": ["count"], "except": []}),
    }
    for name in set(TASKS.values()):
        files[f"agents/{name}.yaml"] = tool_agent_yaml(name, servers=(name,))
    for task, name in TASKS.items():
        files[f"tasks/{task}.yaml"] = task_yaml(task, message(task), agent=name)
    return files


def _decide(run: Run) -> None:
    """What the people do while no reconciler runs (the table in the module docstring)."""
    repo, names, decisions = run.repo, run.names, run.decisions
    # The fast-forward first: only then is main still the commit every approval branch grew from.
    decisions["fast-forward"] = merge(repo, names["fast-forward"], who=BOB, ff=True)
    decisions["merged"] = merge(repo, names["merged"], who=ALICE)
    edit_on_branch(repo, names["refused"], {"decision": "rejected", "comment": "not today"})
    decisions["refused"] = merge(repo, names["refused"], who=ALICE)
    git(repo.path, "branch", "-q", "-D", f"acp/approvals/{names['closed']}")
    edit_on_branch(repo, names["tampered"], {"arguments": {"label": "tampered-by-human"}})
    decisions["tampered"] = merge(repo, names["tampered"], who=ALICE)
    edit_on_branch(repo, names["edited"], {"arguments": {"label": "edited-by-human"}})
    decisions["edited"] = merge(repo, names["edited"], who=ALICE)
    decisions["by-alice"] = merge(repo, names["by-alice"], who=ALICE)
    decisions["by-bob"] = merge(repo, names["by-bob"], who=BOB)
    decisions["partial"] = merge(repo, names["partial"], who=ALICE)
    approved = cli("--repo", str(repo.path), "approve", names["offline"], "--comment", "ok")
    assert approved.returncode == 0, approved.stderr
    assert names["offline"] in approved.stdout
    decisions["offline"] = repo.main_sha()


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("approvals")
    counter = base / "counter"
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, _):
        stub_process.rules(*_rules())
        before = repo.commit(_files(marker, counter), "Add approval channels, gated MCP servers and tasks")

        first = serve_once_until(repo, lambda: _all_waiting(repo))
        names = {task: the_toolcall(repo, task)["metadata"]["name"] for task in TASKS}
        result = Run(
            repo=repo,
            counter=counter,
            names=names,
            first=first,
            status_after_first=git(repo.path, "rev-parse", STATUS_BRANCH),
            main={"before": before, "after first": repo.main_sha()},
            counted_after_first=counted(counter),
            branches_after_first=branches(repo),
        )
        for task, name in names.items():
            branch = f"acp/approvals/{name}"
            if branch in result.branches_after_first:
                result.proposals[task] = git(repo.path, "show", f"{branch}:approvals/{name}.yaml")
                log = git(repo.path, "log", "-1", "--format=%an <%ae>%n%P%n%B", branch)
                result.proposal_commits[task] = log
                result.proposal_shas[task] = git(repo.path, "rev-parse", branch)

        _decide(result)
        result.main["decided"] = repo.main_sha()
        result.second = serve_once_until(repo, lambda: repo.finished_tasks() >= set(TASKS))
        result.main["after second"] = repo.main_sha()
        result.branches_after_second = branches(repo)
        result.chats = stub_process.chats()
        yield result


# -- both runs ------------------------------------------------------------------------------------


def test_serve_once_exits_by_itself_while_approvals_are_pending(run: Run) -> None:
    # Nothing can progress until a person decides: --once must see that and exit 0 (DESIGN §5).
    assert run.first.exited_by_itself, (
        f"serve --once was still running {EXIT_GRACE}s after every call awaited approval"
    )
    assert run.first.returncode == 0, run.first.stderr


def test_serve_once_exits_by_itself_after_the_decisions(run: Run) -> None:
    assert run.second is not None
    assert run.second.exited_by_itself, f"serve --once was still running {EXIT_GRACE}s after every task ended"
    assert run.second.returncode == 0, run.second.stderr


def test_no_tracebacks(run: Run) -> None:
    assert run.second is not None
    assert "Traceback" not in run.first.stderr + run.second.stderr


def test_serve_never_writes_main(run: Run) -> None:
    assert run.main["after first"] == run.main["before"]
    assert run.main["after second"] == run.main["decided"]
    # On main's own line only the people's commits are new (the fast-forward brought the proposal's).
    line = git(run.repo.path, "rev-list", "--first-parent", f"{run.main['before']}..main").split()
    assert set(line) == set(run.decisions.values())
    authors = {sha: git(run.repo.path, "log", "-1", "--format=%an <%ae>", sha) for sha in line}
    assert set(authors.values()) == {
        "Alice <alice@example.com>",
        "Bob <bob@example.com>",
        LOCAL_USER,
        IDENTITY,
    }
    assert [sha for sha, who in authors.items() if who == IDENTITY] == [run.decisions["fast-forward"]]


def test_the_branches_of_finished_calls_are_deleted(run: Run) -> None:
    # Every call ended in the second run; its branch went after its terminal checkpoint (the
    # fast-forwarded one too, whose commit is on main: deleting a branch never loses a commit).
    assert run.second is not None
    assert all(run.toolcall(task)["status"]["phase"] in ("Succeeded", "ToolCallRejected") for task in TASKS)
    assert run.branches_after_second == set()
    assert git(run.repo.path, "cat-file", "-t", run.proposal_shas["merged"]) == "commit"


# -- waiting --------------------------------------------------------------------------------------


def test_every_gated_call_waits_and_nothing_runs(run: Run) -> None:
    for task, name in run.names.items():
        status = run.toolcall(task, rev=run.status_after_first)["status"]
        assert status["phase"] == "AwaitingHumanApproval", (task, status)
        channel = {"gated": "humans", "lenient": "editors", "guarded": "bobs", "partial": "humans"}[
            TASKS[task]
        ]
        assert status["approval"] == {"branch": f"acp/approvals/{name}", "channel": channel}
        assert not status.get("result")
        assert run.task_status(task, rev=run.status_after_first)["phase"] == "ToolCallsPending", task
    assert run.counted_after_first == []
    assert run.branches_after_first == {f"acp/approvals/{name}" for name in run.names.values()}


def test_the_proposal_shows_the_tool_the_arguments_the_request_and_the_annotations(run: Run) -> None:
    name = run.names["merged"]
    document = yaml.safe_load(run.proposals["merged"])
    assert document["apiVersion"] == API
    assert document["kind"] == "Approval"
    assert document["metadata"]["name"] == name
    spec = document["spec"]
    assert spec["task"] == "merged"
    assert spec["toolCall"] == name
    assert spec["tool"] == "gated__count"
    assert spec["arguments"] == {"label": "merged"}
    assert spec["argumentsDigest"].startswith("sha256:")
    assert spec["request"] == message("merged")
    assert spec["toolAnnotations"]["idempotentHint"] is False
    assert spec["toolAnnotations"]["destructiveHint"] is False
    assert spec["decision"] == "approved"
    assert spec["comment"] == ""

    author, parents, *body = run.proposal_commits["merged"].splitlines()
    assert author == IDENTITY
    assert parents.split() == [run.main["before"]]  # main's tip then, plus this one commit
    text = "\n".join(body)
    assert "gated__count" in text
    assert '"label": "merged"' in text
    assert message("merged") in text
    assert "idempotentHint=False" in text
    changed = git(run.repo.path, "diff", "--name-only", run.main["before"], run.proposal_shas["merged"])
    assert changed.split() == [f"approvals/{name}.yaml"]


# -- 1. approve by merging ----------------------------------------------------------------------------


def test_approved_by_a_merge_the_tool_runs_once(run: Run) -> None:
    document = run.toolcall("merged")
    status = document["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == "1"
    assert status["approval"]["decidedBy"] == "Alice <alice@example.com>"
    assert status["approval"]["decidedVia"] == "commit author"  # no forge, no signers: the author
    assert status["approval"]["decidedAt"]
    assert counted(run.counter).count("merged") == 1
    assert phases(run.repo, run.names["merged"]) == [
        "Pending",
        "AwaitingHumanApproval",
        "ReadyToExecuteApprovedTool",
        "Running",
        "Succeeded",
    ]

    task = run.task_status("merged")
    assert task["phase"] == "FinalAnswer", task
    assert task["output"] == "1"
    tool_message = task["contextWindow"][3]
    assert tool_message == {"role": "tool", "toolCallId": document["spec"]["toolCallId"], "content": "1"}

    merge_commit = run.decisions["merged"]
    parents = git(run.repo.path, "log", "-1", "--format=%P", merge_commit).split()
    assert len(parents) == 2
    assert git(run.repo.path, "log", "-1", "--format=%an <%ae>", merge_commit) == "Alice <alice@example.com>"
    assert git(run.repo.path, "log", "-1", "--format=%an <%ae>", parents[1]) == IDENTITY
    assert (
        yaml.safe_load(git(run.repo.path, "show", f"main:approvals/{run.names['merged']}.yaml"))["spec"][
            "decision"
        ]
        == "approved"
    )


# -- 2. reject by editing the decision ----------------------------------------------------------------


def test_rejected_by_editing_the_decision_the_model_reads_the_comment(run: Run) -> None:
    document = run.toolcall("refused")
    status = document["status"]
    assert status["phase"] == "ToolCallRejected", status
    assert status["result"] == "Rejected: not today"
    assert status["approval"]["decidedBy"] == "Alice <alice@example.com>"
    assert status["approval"]["comment"] == "not today"
    assert "refused" not in counted(run.counter)
    sent = run.last_request("refused")["messages"][-1]
    assert sent == {
        "role": "tool",
        "tool_call_id": document["spec"]["toolCallId"],
        "content": "Rejected: not today",
    }
    task = run.task_status("refused")
    assert task["phase"] == "FinalAnswer", task
    assert task["output"] == "Rejected: not today"


# -- 3. reject by deleting the branch -----------------------------------------------------------------


def test_rejected_by_deleting_the_branch(run: Run) -> None:
    status = run.toolcall("closed")["status"]
    assert status["phase"] == "ToolCallRejected", status
    assert status["result"] == "Rejected: closed without merging"
    assert "closed" not in counted(run.counter)
    assert run.task_status("closed")["phase"] == "FinalAnswer"


# -- 4. arguments edited before merging ---------------------------------------------------------------


def test_edited_arguments_are_refused_by_default(run: Run) -> None:
    status = run.toolcall("tampered")["status"]
    assert status["phase"] == "ToolCallRejected", status
    assert status["result"].startswith("Rejected: ")
    assert "arguments" in status["result"]
    assert "changed" in status["result"]
    assert not {"tampered", "tampered-by-human"} & set(counted(run.counter))
    assert run.task_status("tampered")["phase"] == "FinalAnswer"


def test_edited_arguments_are_used_when_the_channel_allows_it(run: Run) -> None:
    document = run.toolcall("edited")
    status = document["status"]
    assert status["phase"] == "Succeeded", status
    assert status["approval"]["decidedBy"] == "Alice <alice@example.com>"
    labels = counted(run.counter)
    assert labels.count("edited-by-human") == 1
    assert "edited" not in labels
    assert json.loads(document["spec"]["arguments"]) == {"label": "edited-by-human"}
    assert run.task_status("edited")["phase"] == "FinalAnswer"


# -- 6. decided with the CLI while the reconciler was stopped -----------------------------------------


def test_approved_with_the_cli_while_stopped(run: Run) -> None:
    status = run.toolcall("offline")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["approval"]["decidedBy"] == LOCAL_USER
    assert status["approval"]["comment"] == "ok"
    assert counted(run.counter).count("offline") == 1
    assert run.task_status("offline")["phase"] == "FinalAnswer"
    recorded = yaml.safe_load(git(run.repo.path, "show", f"main:approvals/{run.names['offline']}.yaml"))
    assert recorded["spec"]["decision"] == "approved"
    assert recorded["spec"]["comment"] == "ok"


# -- 7. approvers -------------------------------------------------------------------------------------


def test_a_merge_by_someone_not_an_approver_is_refused(run: Run) -> None:
    status = run.toolcall("by-alice")["status"]
    assert status["phase"] == "ToolCallRejected", status
    assert "bob@example.com" in status["result"]
    assert "alice@example.com" in status["result"]
    assert "by-alice" not in counted(run.counter)


def test_a_merge_by_an_approver_is_accepted(run: Run) -> None:
    status = run.toolcall("by-bob")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["approval"]["decidedBy"] == "Bob <bob@example.com>"
    assert counted(run.counter).count("by-bob") == 1


def test_a_fast_forward_merge_is_refused_when_approvers_are_set(run: Run) -> None:
    status = run.toolcall("fast-forward")["status"]
    assert status["phase"] == "ToolCallRejected", status
    assert "fast-forward" in status["result"]
    assert "fast-forward" not in counted(run.counter)


# -- 8. approval for some tools only ------------------------------------------------------------------


def test_only_the_listed_tools_wait(run: Run) -> None:
    echo = the_toolcall(run.repo, "partial", "echo")
    assert phases(run.repo, echo["metadata"]["name"]) == ["Pending", "Running", "Succeeded"]
    assert echo["status"]["result"] == PARTIAL_ECHO
    assert "approval" not in echo["status"]
    assert f"acp/approvals/{echo['metadata']['name']}" not in run.branches_after_first
    # echo had run by the end of the first serve; count waited for its merge.
    first = run.repo.status("toolcalls", echo["metadata"]["name"], rev=run.status_after_first)
    assert first is not None
    assert first["status"]["phase"] == "Succeeded"
    assert run.toolcall("partial", rev=run.status_after_first)["status"]["phase"] == "AwaitingHumanApproval"
    assert run.toolcall("partial")["status"]["phase"] == "Succeeded"
    assert counted(run.counter).count("partial") == 1
    assert run.task_status("partial")["phase"] == "FinalAnswer"


def test_every_approved_call_ran_exactly_once_and_nothing_else_ran(run: Run) -> None:
    assert sorted(counted(run.counter)) == sorted(
        ["merged", "edited-by-human", "offline", "by-bob", "partial"]
    )


# -- 5. ten at once, decided while serve runs ---------------------------------------------------------

TEN = [f"many-{n:02d}" for n in range(10)]
#: The longest a decision may take to end its call while serve runs (it polls refs every 0.2 s here).
PROMPT = 20.0
ENDED = ("Succeeded", "ToolCallRejected")


def test_ten_pending_approvals_decided_in_any_order_while_serving(
    acp_repo: AcpRepo, stub: Stub, marker: str, serve_bg: Callable[..., Background]
) -> None:
    repo = acp_repo
    counter = repo.logs / "counter"
    stub.rules(
        {"when": "first", "toolCalls": [call("gated__count", label="{user}")]},
        {"when": "tool", "content": "{tool}"},
    )
    repo.commit(
        {
            "contactchannels/humans.yaml": channel_yaml("humans"),
            "mcpservers/gated.yaml": gated_server_yaml(
                "gated", marker=marker, counter=counter, channel="humans"
            ),
            "agents/gated.yaml": tool_agent_yaml("gated", servers=("gated",)),
            **{f"tasks/{t}.yaml": task_yaml(t, t, agent="gated") for t in TEN},
        },
        "Ten tasks whose calls need approval",
    )
    server = serve_bg(repo)

    def calls() -> dict[str, dict[str, Any]]:
        """Each task's call by task (tasks without one yet left out)."""
        found = {}
        for (plural, _), document in status_files(repo).items():
            if plural == "toolcalls":
                found[document["spec"]["taskRef"]["name"]] = document
        return found

    def all_waiting() -> dict[str, str] | None:
        now = calls()
        if set(now) != set(TEN) or any(d["status"]["phase"] != "AwaitingHumanApproval" for d in now.values()):
            return None
        return {task: document["metadata"]["name"] for task, document in now.items()}

    names: dict[str, str] = wait_for(
        all_waiting, timeout=60, interval=0.2, what="ten calls awaiting approval"
    )
    assert counted(counter) == []

    # Decided back to back in a shuffled order, each call's expected (phase, result, decided by).
    order = list(TEN)
    random.Random(20240521).shuffle(order)
    plan = dict(zip(order, ["approve"] * 3 + ["reject"] * 3 + ["merge"] * 3 + ["delete"], strict=True))
    expected: dict[str, tuple[str, str, str | None]] = {}
    decided_at: dict[str, float] = {}
    for n, task in enumerate(order):
        name, how = names[task], plan[task]
        if how == "approve":
            done = cli("--repo", str(repo.path), "approve", name)
            assert done.returncode == 0, done.stderr
            expected[task] = ("Succeeded", "1", LOCAL_USER)
        elif how == "reject":
            reason = f'no {task}: "not now"'  # YAML-significant characters, kept as written
            done = cli("--repo", str(repo.path), "reject", name, "--reason", reason)
            assert done.returncode == 0, done.stderr
            expected[task] = ("ToolCallRejected", f"Rejected: {reason}", LOCAL_USER)
        elif how == "merge":
            merge(repo, name, who=BOB)
            expected[task] = ("Succeeded", "1", "Bob <bob@example.com>")
        else:
            git(repo.path, "branch", "-q", "-D", f"acp/approvals/{name}")
            expected[task] = ("ToolCallRejected", "Rejected: closed without merging", None)
        decided_at[task] = time.time()  # wall clock, as the call's completionTime
        # A decision moves its own call only: the ones nobody decided yet still wait.
        now = calls()
        assert all(now[other]["status"]["phase"] == "AwaitingHumanApproval" for other in order[n + 1 :]), how

    def all_ended() -> dict[str, dict[str, Any]] | None:
        now = calls()
        return now if all(d["status"]["phase"] in ENDED for d in now.values()) else None

    final = wait_for(all_ended, timeout=PROMPT + 30, interval=0.1, what="every decided call to end")
    lags = {t: _seconds(final[t]["status"]["completionTime"]) - decided_at[t] for t in TEN}
    late = {t: round(lag, 1) for t, lag in lags.items() if lag > PROMPT}
    assert not late, f"calls that ended more than {PROMPT}s after their decision: {late}"
    for task, (phase, result, by) in expected.items():
        status = final[task]["status"]
        assert (status["phase"], status["result"]) == (phase, result), (task, plan[task])
        assert status["approval"].get("decidedBy") == by, (task, plan[task])

    def all_finished() -> bool:
        return repo.finished_tasks() >= set(TEN)

    wait_for(all_finished, timeout=60, interval=0.2, what="all ten tasks to finish")
    assert sorted(counted(counter)) == sorted(
        t for t, (phase, _, _) in expected.items() if phase == "Succeeded"
    )
    for task, (_, result, _) in expected.items():
        document = repo.status("tasks", task)
        assert document is not None
        assert document["status"]["output"] == result, task  # the model read the rejection
    assert server.proc.poll() is None, server.stderr()
    assert "Traceback" not in server.stderr()
