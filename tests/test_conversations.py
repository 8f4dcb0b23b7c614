"""Follow-ups and forks in the task controller (DESIGN §12), over the real State and its rules."""

from __future__ import annotations

import asyncio

import pytest

from gitops_acp.controllers.kinds.task import TaskController, toolcall_name
from gitops_acp.controllers.kinds.toolcall import ToolCallController
from gitops_acp.errors import StaleError, UserError
from gitops_acp.resources.loader import load_file
from gitops_acp.resources.meta import Kind
from gitops_acp.resources.models import Message, Task, TaskStatus
from tests.fakes import FakeContext, FakeLLM, final, ready, tool_calls

RESOURCES = """
apiVersion: acp.gitops.dev/v1alpha1
kind: LLM
metadata: {name: gpt}
spec:
  provider: openai
  apiKeyFrom: {secretKeyRef: {name: openai, key: API_KEY}}
  parameters: {model: gpt-test, baseUrl: "http://127.0.0.1:9/v1"}
---
apiVersion: acp.gitops.dev/v1alpha1
kind: Agent
metadata: {name: helper}
spec:
  llmRef: {name: gpt}
  system: You help.
"""
AGENT_LIMITS = RESOURCES + "  limits: LIMITS\n"


def task_yaml(follow_ups: list[str], name: str = "t1", extra: str = "") -> str:
    text = f"""
apiVersion: acp.gitops.dev/v1alpha1
kind: Task
metadata: {{name: {name}}}
spec:
  agentRef: {{name: helper}}
  userMessage: What is 2+2?
{extra}"""
    if follow_ups:
        text += "  followUps:\n" + "".join(f"    - content: {f!r}\n" for f in follow_ups)
    return text


def run(coro):
    return asyncio.run(coro)


def world(replies, follow_ups: list[str] = (), resources: str = RESOURCES, extra: str = "") -> FakeContext:
    ctx = FakeContext(resources, llm=FakeLLM(list(replies)))
    ctx.declare(task_yaml(list(follow_ups), extra=extra), path="tasks/t1.yaml")
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.Agent, "helper")
    return ctx


def send(ctx: FakeContext, follow_ups: list[str], extra: str = "") -> None:
    """A new commit of main: the task's file with these follow-ups."""
    ctx.declare(task_yaml(follow_ups, extra=extra), path="tasks/t1.yaml")


def status(ctx: FakeContext, name: str = "t1") -> TaskStatus:
    obj = ctx.observed(Kind.Task, name)
    assert isinstance(obj, Task)
    assert obj.status is not None
    return obj.status


def conversation(ctx: FakeContext, name: str = "t1") -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in status(ctx, name).context_window]


def test_follow_ups_continue_the_same_context_window_one_exchange_at_a_time() -> None:
    ctx = world([final("4"), final("6"), final("8")])
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    assert status(ctx).output == "4"
    send(ctx, ["And 3+3?", "And 4+4?"])  # two arrive at once: each gets its own answer, in order
    run(controller.reconcile("t1", ctx))
    assert ctx.phases(Kind.Task, "t1") == [
        "ReadyForLLM",
        "FinalAnswer",
        "ReadyForLLM",
        "FinalAnswer",
        "ReadyForLLM",
        "FinalAnswer",
    ]
    assert conversation(ctx) == [
        ("system", "You help."),
        ("user", "What is 2+2?"),
        ("assistant", "4"),
        ("user", "And 3+3?"),
        ("assistant", "6"),
        ("user", "And 4+4?"),
        ("assistant", "8"),
    ]
    final_status = status(ctx)
    assert final_status.output == "8"  # the newest answer
    assert final_status.follow_ups_applied == 2
    assert final_status.turns == 3  # limits count the whole conversation
    assert final_status.status_detail == "LLM final response received (follow-up 2)"
    # the model saw the whole conversation each time
    assert [m["content"] for m in ctx.llm.requests[2][1]] == [c for _, c in conversation(ctx)[:-1]]
    # The follow-up and its count are in the same checkpoint (a crash cannot separate them).
    reopen = [objs[0] for objs in ctx.checkpoints if objs[0].status.phase == "ReadyForLLM"][1]
    assert reopen.status.follow_ups_applied == 1
    assert reopen.status.context_window[-1] == Message(role="user", content="And 3+3?")
    assert reopen.status.completion_time is None
    run(controller.reconcile("t1", ctx))
    assert len(ctx.llm.requests) == 3  # nothing new: nothing taken twice


def test_a_follow_up_sent_while_the_task_runs_waits_for_the_answer() -> None:
    ctx = world([tool_calls(("x__y", "{}")), final("done"), final("again")])
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    assert status(ctx).phase == "ToolCallsPending"
    send(ctx, ["one more"])
    run(controller.reconcile("t1", ctx))
    assert status(ctx).phase == "ToolCallsPending"  # not taken while the task waits on its tools
    assert status(ctx).follow_ups_applied == 0
    name = toolcall_name("t1", status(ctx).tool_call_request_id, 1)
    run(ToolCallController().reconcile(name, ctx))
    run(controller.reconcile("t1", ctx))
    roles = [role for role, _ in conversation(ctx)]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert status(ctx).output == "again"


def test_state_refuses_to_leave_final_answer_without_a_new_follow_up() -> None:
    ctx = world([final("4")])
    run(TaskController().reconcile("t1", ctx))
    done = ctx.observed(Kind.Task, "t1")
    assert isinstance(done, Task)
    again = done.model_copy(update={"status": done.status.model_copy(update={"phase": "ReadyForLLM"})})
    with pytest.raises(StaleError):
        run(ctx.state.checkpoint(again))


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ([], "spec.followUps[0] was removed from main after it was taken"),
        (["Edited afterwards"], "spec.followUps[0] was changed on main after it was taken"),
    ],
)
def test_an_answered_follow_up_removed_or_changed_is_a_status_error_not_a_rewrite(changed, expected) -> None:
    ctx = world([final("4"), final("6"), final("never")])
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    send(ctx, ["And 3+3?"])
    run(controller.reconcile("t1", ctx))
    window = conversation(ctx)
    send(ctx, changed)
    run(controller.reconcile("t1", ctx))
    broken = status(ctx)
    assert broken.phase == "FinalAnswer"
    assert (broken.status, broken.ready) == ("Error", False)
    assert broken.status_detail.startswith(expected)
    assert "fork" in broken.status_detail
    assert conversation(ctx) == window  # the committed conversation is untouched
    count = len(ctx.checkpoints)
    run(controller.reconcile("t1", ctx))
    assert len(ctx.checkpoints) == count  # recorded once
    send(ctx, [*changed, "more"])  # nothing new is taken while main disagrees
    run(controller.reconcile("t1", ctx))
    assert len(ctx.llm.requests) == 2
    assert conversation(ctx) == window
    send(ctx, ["And 3+3?"])  # put back: the error clears, and the conversation goes on
    run(controller.reconcile("t1", ctx))
    fixed = status(ctx)
    assert (fixed.status, fixed.ready, fixed.error) == ("Ready", True, None)
    assert conversation(ctx) == window


def test_maxturns_counts_the_whole_conversation() -> None:
    ctx = world([final("4"), final("6")], resources=AGENT_LIMITS.replace("LIMITS", "{maxTurns: 2}"))
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    send(ctx, ["a"])
    run(controller.reconcile("t1", ctx))
    send(ctx, ["a", "b"])
    run(controller.reconcile("t1", ctx))
    done = status(ctx)
    assert done.phase == "Cancelled"
    assert "maxTurns 2" in done.error
    assert len(ctx.llm.requests) == 2


def test_the_timeout_counts_from_the_newest_follow_up_not_the_idle_time_before_it() -> None:
    ctx = world([final("4"), final("6")], resources=AGENT_LIMITS.replace("LIMITS", "{timeout: 30s}"))
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    ctx.clock += 3600  # the person answers an hour later
    send(ctx, ["a"])
    run(controller.reconcile("t1", ctx))
    assert status(ctx).phase == "FinalAnswer"
    assert status(ctx).output == "6"


def test_the_next_follow_up_waits_for_the_answer_to_reach_response_url() -> None:
    extra = '  responseUrl: "http://127.0.0.1:9/hook"\n'
    ctx = world([final("4"), final("6")], extra=extra)
    ctx.post_replies = [503]
    controller = TaskController()
    result = run(controller.reconcile("t1", ctx))
    assert result.requeue_after is not None  # the first answer's delivery backs off
    send(ctx, ["a"], extra=extra)
    run(controller.reconcile("t1", ctx))
    assert status(ctx).follow_ups_applied == 0
    ctx.clock += 3600
    run(controller.reconcile("t1", ctx))
    assert [body["output"] for _, body, _ in ctx.posts] == ["4", "4", "6"]  # each answer delivered
    assert status(ctx).delivery["state"] == "Delivered"


# -- forks --------------------------------------------------------------------------------------

PARENT = [
    Message(role="system", content="You help."),
    Message(role="user", content="What is 2+2?"),
    Message(role="assistant", content="4"),
]
SHA = "a" * 40


def fork_world(
    replies, *, message: str | None, window=PARENT, commit: str | None = SHA
) -> tuple[FakeContext, list[tuple[str, str | None]]]:
    ctx = FakeContext(RESOURCES, llm=FakeLLM(list(replies)))
    asked: list[tuple[str, str | None]] = []

    async def read(task: str, commit: str | None) -> tuple[str, list[Message]]:
        asked.append((task, commit))
        if isinstance(window, Exception):
            raise window
        return commit or "b" * 40, list(window)

    ctx.fork_window = read
    body = f"  userMessage: {message!r}\n" if message else ""
    at = f", commit: '{commit}'" if commit else ""
    ctx.declare(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: f1}\nspec:\n"
        f"  agentRef: {{name: helper}}\n  forkFrom: {{task: t1{at}}}\n{body}",
        path="tasks/f1.yaml",
    )
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.Agent, "helper")
    return ctx, asked


def test_a_fork_with_a_message_goes_on_from_the_checkpoint() -> None:
    ctx, asked = fork_world([final("5")], message="And 2+3?")
    run(TaskController().reconcile("f1", ctx))
    assert asked == [("t1", SHA)]
    assert conversation(ctx, "f1")[-2:] == [("user", "And 2+3?"), ("assistant", "5")]
    assert [m["content"] for m in ctx.llm.requests[0][1]] == ["You help.", "What is 2+2?", "4", "And 2+3?"]
    assert ctx.phases(Kind.Task, "f1") == ["ReadyForLLM", "FinalAnswer"]


def test_a_fork_without_a_message_of_an_answer_has_answered_and_takes_follow_ups() -> None:
    ctx, _ = fork_world([final("9")], message=None)
    run(TaskController().reconcile("f1", ctx))
    assert ctx.phases(Kind.Task, "f1") == ["FinalAnswer"]
    assert status(ctx, "f1").output == "4"
    assert ctx.llm.requests == []
    ctx.declare(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: f1}\nspec:\n"
        f"  agentRef: {{name: helper}}\n  forkFrom: {{task: t1, commit: '{SHA}'}}\n"
        "  followUps: [{content: 'And 4+5?'}]\n",
        path="tasks/f1.yaml",
    )
    run(TaskController().reconcile("f1", ctx))
    assert status(ctx, "f1").output == "9"
    assert status(ctx, "f1").follow_ups_applied == 1


def test_a_fork_without_a_commit_starts_from_the_newest_checkpoint_and_says_which() -> None:
    ctx, asked = fork_world([final("5")], message="And 2+3?", commit=None)
    run(TaskController().reconcile("f1", ctx))
    assert asked == [("t1", None)]
    first = ctx.checkpoints[0][0]
    assert first.status.status_detail == f"Forked from t1@{'b' * 12}: ready to send to LLM"
    assert status(ctx, "f1").output == "5"


def test_a_fork_that_cannot_be_read_fails_with_the_reason() -> None:
    ctx, _ = fork_world([], message="x", window=UserError("that commit is not a checkpoint of it"))
    run(TaskController().reconcile("f1", ctx))
    failed = status(ctx, "f1")
    assert failed.phase == "Failed"
    assert failed.error == f"cannot fork from t1@{SHA[:12]}: that commit is not a checkpoint of it"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("  userMessage: hi\n  followUps: [{content: ''}]\n", "a follow-up needs content"),
        ("  userMessage: hi\n  followUps: [{text: x}]\n", "followUps"),
        ("  forkFrom: {task: t1, commit: abc123}\n", "not a full commit sha"),
        ("  forkFrom: {task: T_1, commit: '" + SHA + "'}\n", "DNS-1123"),
        (
            "  forkFrom: {task: t1, commit: '" + SHA + "'}\n  contextWindow: [{role: user, content: x}]\n",
            "forkFrom",
        ),
        ("  forkFrom: {commit: '" + SHA + "'}\n", "task"),
    ],
)
def test_validate_names_the_file_and_field_of_bad_conversation_fields(spec, message) -> None:
    head = "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: x}\nspec:\n"
    text = f"{head}  agentRef: {{name: a}}\n{spec}"
    result = load_file("tasks/x.yaml", text.encode())
    assert result.errors, text
    line = str(result.errors[0])
    assert line.startswith("tasks/x.yaml:"), line
    assert message in line, line


def test_validate_accepts_follow_ups_and_a_fork_without_a_message() -> None:
    text = (
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: x}\nspec:\n  agentRef: {name: a}\n"
        f"  forkFrom: {{task: t1, commit: '{SHA}'}}\n  followUps: [{{content: more}}]\n---\n"
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: y}\nspec:\n  agentRef: {name: a}\n"
        "  forkFrom: {task: t1}\n"
    )
    result = load_file("tasks/x.yaml", text.encode())
    assert not result.errors, [str(e) for e in result.errors]


def test_describe_shows_each_exchange_and_what_waits() -> None:
    from gitops_acp.cli.commands import describe

    document = {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "t1"},
        "spec": {
            "agentRef": {"name": "helper"},
            "forkFrom": {"task": "t0", "commit": SHA},
            "followUps": [{"content": "And 3+3?"}, {"content": "And 4+4?"}, {"content": "And 5+5?"}],
        },
        "status": {
            "phase": "ReadyForLLM",
            "followUpsApplied": 2,
            "contextWindow": [
                {"role": "system", "content": "You help."},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "", "toolCalls": [{"id": "c1", "function": {"name": "x"}}]},
                {"role": "tool", "toolCallId": "c1", "content": "four"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "And 3+3?"},
                {"role": "assistant", "content": "6"},
                {"role": "user", "content": "And 4+4?"},
            ],
        },
    }
    text = describe.render(Kind.Task, "t1", document, archived=False, events=[])
    conversation = text.split("Conversation:\n", 1)[1].split("Events:", 1)[0]
    assert conversation.splitlines() == [
        f"  forked from: t0@{SHA[:12]}",
        "  message: What is 2+2?",
        "    answer: 4",
        "  follow-up 1: And 3+3?",
        "    answer: 6",
        "  follow-up 2: And 4+4?",
        "    answer: <being answered>",
        "  follow-up 3: And 5+5?",
        "    waiting for the answer before it",
    ]


def test_each_later_exchange_is_its_own_span_under_the_task_span() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gitops_acp.telemetry import tracing
    from tests.test_tracing import PARENT_TRACE, _traced

    exporter = InMemorySpanExporter()
    assert tracing.configure({}, exporter=exporter)
    try:
        tracing.landed("Task", _traced("c", "ReadyForLLM"), _traced("c", "FinalAnswer"), lambda k, n: None)
        for n in (1, 2):
            follow_up = {"followUpsApplied": n, "lastFollowUpTime": "2026-01-01T00:00:00.000000Z"}
            tracing.landed(
                "Task",
                _traced("c", "ReadyForLLM", **follow_up),
                _traced("c", "FinalAnswer", **follow_up),
                lambda k, n: None,
            )
    finally:
        tracing.shutdown()
    first, *later = exporter.get_finished_spans()
    assert first.name == "invoke_agent helper"
    assert first.context.span_id == int("1" * 16, 16)  # the task's committed span
    assert [span.name for span in later] == [
        "invoke_agent helper (follow-up 1)",
        "invoke_agent helper (follow-up 2)",
    ]
    assert len({span.context.span_id for span in [first, *later]}) == 3  # no span id twice
    assert all(span.parent.span_id == first.context.span_id for span in later)
    assert all(span.context.trace_id == int(PARENT_TRACE, 16) for span in later)
