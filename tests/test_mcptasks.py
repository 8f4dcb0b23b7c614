"""Tool calls on MCP tasks (controllers/mcptasks.py): transition tables over the real State, with the
MCP boundary faked (tests/fakes FakeMCP scripts what tasks/get answers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx2
import pytest

from gitops_acp.controllers import registry
from gitops_acp.controllers.mcptasks import INTERRUPTED_TASK, answer_content
from gitops_acp.errors import MCPError, MCPRefusedError
from gitops_acp.humans import forges
from gitops_acp.humans.branches import Decision
from gitops_acp.mcp import TaskState, ToolInfo, ToolResult
from gitops_acp.mcp.models import InputRequest
from gitops_acp.resources.kinds.toolcall import ToolCallApproval, ToolCallHumanContact, ToolCallMCPTask
from gitops_acp.resources.meta import Kind, ToolCallPhase
from gitops_acp.resources.models import ToolCall
from tests.conftest import git
from tests.fakes import FakeContext, FakeLLM, FakeMCP, ready, tool_calls
from tests.fakes.forges import FakeForge
from tests.test_metrics import sample
from tests.test_tools import AGENT, COUNT, ECHO, LLM, SERVER, TASK, call_named, reconcile, tool_world

JOB = ToolInfo(
    name="count",  # the world's non-idempotent tool; the server runs it as a task here
    description="",
    input_schema={"type": "object"},
    annotations={"idempotentHint": False},
)
WORKING = TaskState(task_id="T1", status="working", poll_interval=0.25)
DONE = TaskState(task_id="T1", status="completed", result=ToolResult(text="42 rows", is_error=False))


def world(*replies: TaskState | MCPError, tool: str = "count") -> tuple[FakeContext, ToolCall]:
    mcp = FakeMCP(replies={tool: ToolResult(text="", is_error=False, task=WORKING)})
    mcp.task_replies["T1"] = list(replies)
    ctx = tool_world(tool_calls((f"srv__{tool}", '{"text": "x", "label": "x"}')), mcp=mcp)
    reconcile(ctx, Kind.Task, "t1")
    return ctx, call_named(ctx)


def task_of(ctx: FakeContext) -> ToolCallMCPTask:
    task = call_named(ctx).status.mcp_task
    assert task is not None
    return task


def test_the_task_id_is_committed_before_the_wait_and_the_result_ends_the_call() -> None:
    ctx, call = world(WORKING, DONE)
    counted = sample("gitops_acp_tool_calls_total", server="srv", tool="count", outcome="success")
    result = reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert result.requeue_after == 0.25  # the server's pollIntervalMs, on a timer
    assert result.progress  # a running tool keeps `serve --once` going
    assert ctx.phases(Kind.ToolCall, call.metadata.name) == ["Pending", "Running", "Running"]
    # The checkpoint after Running holds the task id, and nothing was waited for before it.
    committed = task_of(ctx)
    assert (committed.server, committed.task_id, committed.status) == ("srv", "T1", "working")
    assert "MCP task T1 on MCP server srv is working" in call_named(ctx).status.status_detail
    assert len(ctx.mcp.task_replies["T1"]) == 2  # no tasks/get before the id was committed
    reconcile(ctx, Kind.ToolCall, call.metadata.name)  # working: nothing to commit
    # The handle is not the tool's outcome: counted once the task ends.
    assert sample("gitops_acp_tool_calls_total", server="srv", tool="count", outcome="success") == counted
    reconcile(ctx, Kind.ToolCall, call.metadata.name)  # completed
    assert sample("gitops_acp_tool_calls_total", server="srv", tool="count", outcome="success") == counted + 1
    done = call_named(ctx).status
    assert (done.phase, done.result, done.attempt) == ("Succeeded", "42 rows", 1)
    assert done.mcp_task is not None
    assert done.mcp_task.status == "completed"
    assert len(ctx.mcp.calls) == 1


def test_progress_alone_is_committed_at_most_every_30_seconds() -> None:
    said = [TaskState(task_id="T1", status="working", status_message=f"{n}% done") for n in (10, 20, 30)]
    ctx, call = world(*said)
    found_running(ctx, call)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)  # first look: noted
    assert task_of(ctx).status_message == "10% done"
    commits = len(ctx.checkpoints)
    ctx.clock_value += 10
    reconcile(ctx, Kind.ToolCall, call.metadata.name)  # 20%: 10 s later, not a commit
    assert len(ctx.checkpoints) == commits
    ctx.clock_value += 25
    reconcile(ctx, Kind.ToolCall, call.metadata.name)  # 30%: 35 s after the last note
    assert len(ctx.checkpoints) == commits + 1
    assert task_of(ctx).status_message == "30% done"
    assert "30% done" in call_named(ctx).status.status_detail


def found_running(ctx: FakeContext, call: ToolCall) -> None:
    """What a kill while the reconciler waits for the task leaves on the status branch."""
    task = ToolCallMCPTask(server="srv", task_id="T1", status="working")
    running = call.status.model_copy(update={"phase": ToolCallPhase.Running, "attempt": 1, "mcp_task": task})
    ctx.observe(call.model_copy(update={"status": running}))


def test_after_a_restart_the_same_task_is_followed_and_the_tool_never_called_again() -> None:
    ctx, call = world(WORKING, DONE)
    found_running(ctx, call)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert call_named(ctx).status.phase == "Running"
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert call_named(ctx).status.phase == "Succeeded"
    assert ctx.mcp.calls == []


@pytest.mark.parametrize(
    ("tool", "phase", "error", "calls"),
    [
        ("count", "Failed", f"{INTERRUPTED_TASK} (MCP task T1: unknown task T1)", 0),
        ("echo", "Succeeded", None, 1),  # read-only: called again, attempt 2
    ],
)
def test_a_task_the_server_no_longer_knows(tool: str, phase: str, error: str | None, calls: int) -> None:
    ctx, call = world(MCPRefusedError("unknown task T1"), tool=tool)
    ctx.mcp.replies[tool] = ToolResult(text="again", is_error=False)
    found_running(ctx, call)
    result = reconcile(ctx, Kind.ToolCall, call.metadata.name)
    if calls:
        assert result.requeue_after == 0.0
        assert call_named(ctx).status.mcp_task is None
        reconcile(ctx, Kind.ToolCall, call.metadata.name)
    status = call_named(ctx).status
    assert (status.phase, status.error) == (phase, error)
    assert len(ctx.mcp.calls) == calls
    if calls:
        assert status.attempt == 2


def test_a_look_that_cannot_be_made_is_tried_again_without_ending_the_call() -> None:
    ctx, call = world(MCPError("connection lost"), DONE)
    found_running(ctx, call)
    result = reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert result.requeue_after == 2.0
    status = call_named(ctx).status
    assert status.phase == "Running"
    assert "cannot look at it now: connection lost" in status.status_detail
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert call_named(ctx).status.phase == "Succeeded"


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (
            TaskState(task_id="T1", status="failed", error="disk full (JSON-RPC error -32603)"),
            "failed: disk full",
        ),
        (
            TaskState(task_id="T1", status="cancelled", status_message="shutting down"),
            "cancelled task T1: shut",
        ),
        (
            TaskState(task_id="T1", status="completed", result=ToolResult(text="bad input", is_error=True)),
            "bad input",
        ),
    ],
)
def test_a_task_that_ends_badly_fails_the_call_with_the_servers_words(state: TaskState, error: str) -> None:
    ctx, call = world(state)
    found_running(ctx, call)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    status = call_named(ctx).status
    assert status.phase == "Failed"
    assert error in (status.error or "")


def test_input_required_without_a_contact_channel_is_declined_once_with_the_reason() -> None:
    asking = TaskState(
        task_id="T1",
        status="input_required",
        input_requests=(InputRequest(key="k1", method="elicitation/create", message="Sure?", schema=None),),
    )
    ctx, call = world(asking, asking, DONE)  # still shown once after the answer: not asked twice
    found_running(ctx, call)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert ctx.mcp.task_answers == [("T1", {"k1": {"action": "decline"}})]
    task = task_of(ctx)
    assert task.answered_inputs == ["k1"]
    assert task.declined is not None
    assert "task t1 has no contact channel" in task.declined
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert len(ctx.mcp.task_answers) == 1
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert call_named(ctx).status.phase == "Succeeded"


def test_a_call_ended_by_its_cancelled_task_cancels_the_mcp_task_once() -> None:
    ctx, call = world(WORKING)
    found_running(ctx, call)
    ended = call_named(ctx).status.model_copy(
        update={"phase": ToolCallPhase.Failed, "error": "cancelled: Task removed"}
    )
    ctx.observe(call.model_copy(update={"status": ended}))
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert ctx.mcp.task_cancels == ["T1"]
    task = task_of(ctx)
    assert task.cancel_requested_at is not None
    assert task.status == "cancelled"
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert ctx.mcp.task_cancels == ["T1"]


ONE = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TWO = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}, "size": {"enum": ["S", "M"]}},
    "required": ["name"],
}


@pytest.mark.parametrize(
    ("response", "schema", "content", "problem"),
    [
        ("Lisbon", {}, {"response": "Lisbon"}, ""),
        ("3", ONE, {"n": 3}, ""),
        ("3.5", ONE, None, '"n" must be integer'),
        ("", ONE, None, "the response is empty"),
        ({"name": "Ann", "ok": "yes"}, TWO, {"name": "Ann", "ok": True}, ""),
        ("Ann", TWO, None, "the form has 3 fields (name, ok, size): write a mapping"),
        ({"ok": True}, TWO, None, "required field(s) missing: name"),
        ({"name": "A", "colour": "red"}, TWO, None, 'the form has no field "colour"'),
        ({"name": "A", "size": "XL"}, TWO, None, '"size" must be None'),
    ],
)
def test_answer_content(response: Any, schema: dict[str, Any], content: Any, problem: str) -> None:
    got, why = answer_content(response, schema)
    assert got == content
    assert why.startswith(problem)


CHANNEL = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: team}
spec: {type: git}
"""
ASKER = AGENT + "  humanContactChannels: [{name: team}]\n"  # the agent, asking the channel `team`
FORGE_CHANNEL = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: team}
spec:
  git:
    forge: github
    apiUrl: API_URL
    repository: acme/agents
    tokenFrom: {secretKeyRef: {name: forge, key: FORGE_TOKEN}}
"""
FORM = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
ASKING = TaskState(
    task_id="T1",
    status="input_required",
    input_requests=(
        InputRequest(key="k1", method="elicitation/create", message="Which colour?", schema=FORM),
    ),
)


def asking_world(*after: TaskState, asking: TaskState = ASKING) -> tuple[FakeContext, ToolCall]:
    """A task whose agent asks the git channel `team`, its MCP task waiting for input."""
    mcp = FakeMCP(replies={"count": ToolResult(text="", is_error=False, task=WORKING)})
    mcp.task_replies["T1"] = [asking, *after]
    mcp.connect("srv", ECHO, COUNT)
    ctx = FakeContext(
        "\n---\n".join((LLM, SERVER, ASKER, TASK, CHANNEL)),
        llm=FakeLLM([tool_calls(("srv__count", '{"label": "x"}'))]),
        mcp=mcp,
        environ={"API_KEY": "k", "SRV_TOKEN": "s3cret-token"},
    )
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.ContactChannel, "team")
    reconcile(ctx, Kind.MCPServer, "srv")
    reconcile(ctx, Kind.Agent, "helper")
    reconcile(ctx, Kind.Task, "t1")
    call = call_named(ctx)
    found_running(ctx, call)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    return ctx, call_named(ctx)


def test_a_tools_question_goes_to_the_contact_channel_and_the_answer_back_to_the_task() -> None:
    ctx, call = asking_world(ASKING, DONE)  # the answered key may still show once: not asked again
    name = call.metadata.name
    status = call.status
    assert status.phase == "AwaitingHumanInput"
    assert status.human_contact is not None
    assert status.human_contact.branch == f"acp/questions/{name}"
    assert status.mcp_task is not None
    assert (status.mcp_task.input_request, status.mcp_task.question) == ("k1", name)
    document, message = ctx.humans.questions[name]
    assert document["spec"]["question"] == "Which colour?"
    assert document["spec"]["requestedSchema"] == FORM
    assert f"gitops-acp respond {name}" in message
    assert reconcile(ctx, Kind.ToolCall, name).requeue_after is None  # nobody answered: wait for main
    ctx.humans.responses[name] = Decision(
        spec={**document["spec"], "response": "green"},
        decided_by="Alice <alice@example.com>",
        decided_at=1_800_000_100.0,
        fast_forward=False,
    )
    reconcile(ctx, Kind.ToolCall, name)
    assert ctx.mcp.task_answers == [("T1", {"k1": {"action": "accept", "content": {"answer": "green"}}})]
    back = call_named(ctx).status
    assert back.phase == "Running"
    assert back.mcp_task is not None
    assert back.mcp_task.answered_inputs == ["k1"]
    assert back.human_contact is not None
    assert back.human_contact.responded_by == "Alice <alice@example.com>"
    assert f"acp/questions/{name}" in ctx.humans.deleted
    reconcile(ctx, Kind.ToolCall, name)  # input_required with k1 still: polled, not asked again
    assert list(ctx.humans.questions) == [name]
    reconcile(ctx, Kind.ToolCall, name)
    assert call_named(ctx).status.phase == "Succeeded"


def test_a_tools_question_whose_branch_is_deleted_is_cancelled() -> None:
    ctx, call = asking_world(WORKING)
    ctx.humans.branches.discard(f"acp/questions/{call.metadata.name}")
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert ctx.mcp.task_answers == [("T1", {"k1": {"action": "cancel"}})]
    status = call_named(ctx).status
    assert status.phase == "Running"
    assert "closed without an answer" in status.status_detail


def test_a_secret_the_server_repeats_in_its_question_stays_out_of_the_branch() -> None:
    leaky = InputRequest(key="k1", method="elicitation/create", message="Is s3cret-token right?", schema=FORM)
    ctx, call = asking_world(asking=TaskState(task_id="T1", status="input_required", input_requests=(leaky,)))
    document, message = ctx.humans.questions[call.metadata.name]
    assert "s3cret-token" not in repr(document) + message
    assert "[redacted srv/SRV_TOKEN]" in document["spec"]["question"]
    assert "s3cret-token" not in (call.status.status_detail or "")


def test_with_a_forge_the_tools_question_is_a_pull_request_and_closing_it_cancels(repo: Path) -> None:
    async def main() -> None:
        with FakeForge(repo) as fake:
            async with httpx2.AsyncClient() as http:
                mcp = FakeMCP(replies={"count": ToolResult(text="", is_error=False, task=WORKING)})
                mcp.task_replies["T1"] = [ASKING, WORKING]
                mcp.connect("srv", ECHO, COUNT)
                channel = FORGE_CHANNEL.replace("API_URL", fake.api_url("github"))
                ctx = FakeContext(
                    "\n---\n".join(
                        (LLM, SERVER, AGENT + "  humanContactChannels: [{name: team}]\n", TASK, channel)
                    ),
                    llm=FakeLLM([tool_calls(("srv__count", '{"label": "x"}'))]),
                    mcp=mcp,
                    environ={"API_KEY": "k", "SRV_TOKEN": "s3cret-token"},
                )
                ctx.forges["team"] = forges.connect(
                    "github",
                    api_url=fake.api_url("github"),
                    repository=fake.repository,
                    token=fake.token,
                    http=http,
                    budget=forges.RateBudget(),
                )
                ready(ctx, Kind.LLM, "gpt")
                for kind, name in (
                    (Kind.MCPServer, "srv"),
                    (Kind.ContactChannel, "team"),
                    (Kind.Agent, "helper"),
                    (Kind.Task, "t1"),
                ):
                    await registry()[kind].reconcile(name, ctx)
                name = call_named(ctx).metadata.name
                git(repo, "branch", f"acp/questions/{name}")  # FakeContext proposes without git
                await registry()[Kind.ToolCall].reconcile(name, ctx)  # the task handle
                await registry()[Kind.ToolCall].reconcile(name, ctx)  # input_required: asked
                asked = call_named(ctx).status
                (pull,) = fake.pulls["github"].values()
                assert asked.phase == "AwaitingHumanInput"
                assert asked.human_contact is not None
                assert asked.human_contact.pull_request == pull.number
                assert f"#{pull.number}" in (asked.status_detail or "")
                assert pull.title.startswith("Question from tool count (task t1): Which colour?")
                assert pull.head == f"acp/questions/{name}"
                fake.close("github", pull.number)
                ctx.forges["team"].invalidate()  # type: ignore[union-attr]  # what a webhook does
                await registry()[Kind.ToolCall].reconcile(name, ctx)
                assert mcp.task_answers == [("T1", {"k1": {"action": "cancel"}})]
                assert call_named(ctx).status.phase == "Running"

    asyncio.run(main())


def test_an_approved_tool_that_asked_leaves_neither_branch_behind() -> None:
    ctx, call = world(DONE)
    name = call.metadata.name
    approval, question = f"acp/approvals/{name}", f"acp/questions/{name}"
    ctx.humans.branches |= {approval, question}
    ended = call.status.model_copy(
        update={
            "phase": ToolCallPhase.Succeeded,
            "approval": ToolCallApproval(branch=approval, channel="team"),
            "human_contact": ToolCallHumanContact(channel="team", branch=question),
            "mcp_task": ToolCallMCPTask(server="srv", task_id="T1", status="completed"),
        }
    )
    ctx.observe(call.model_copy(update={"status": ended}))
    reconcile(ctx, Kind.ToolCall, name)
    assert sorted(ctx.humans.deleted) == [approval, question]
    assert ctx.mcp.task_cancels == []  # the task had ended: nothing to cancel
