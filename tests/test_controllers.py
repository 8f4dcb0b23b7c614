"""Controller transition tables: given declared and observed state and the LLM's replies → phases."""

from __future__ import annotations

import asyncio

import pytest

from gitops_acp.controllers.base import Settings, parse_rfc3339
from gitops_acp.controllers.kinds.agent import AgentController
from gitops_acp.controllers.kinds.llm import LLMController
from gitops_acp.controllers.kinds.task import TaskController, toolcall_name
from gitops_acp.controllers.kinds.toolcall import ToolCallController
from gitops_acp.errors import PermanentLLMError, TemporaryLLMError
from gitops_acp.resources.meta import LABEL_TASK, LABEL_TOOLCALL_REQUEST, Kind
from gitops_acp.resources.models import Task, ToolCall
from tests.fakes import FakeContext, FakeLLM, final, ready, tool_calls

LLM_YAML = """
apiVersion: acp.gitops.dev/v1alpha1
kind: LLM
metadata: {name: gpt}
spec:
  provider: openai
  apiKeyFrom: {secretKeyRef: {name: openai, key: API_KEY}}
  parameters: {model: gpt-test, baseUrl: "http://127.0.0.1:9/v1", temperature: "0.3", maxTokens: 77}
"""
AGENT_YAML = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Agent
metadata: {name: helper}
spec:
  llmRef: {name: gpt}
  system: You help.
"""
TASK_YAML = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Task
metadata: {name: t1}
spec:
  agentRef: {name: helper}
  userMessage: What is 2+2?
"""


def run(coro):
    return asyncio.run(coro)


def world(*parts: str, llm: FakeLLM | None = None, settings: Settings | None = None) -> FakeContext:
    ctx = FakeContext("\n---\n".join(parts), llm=llm, settings=settings)
    return ctx


def ready_world(llm: FakeLLM | None = None, agent: str = AGENT_YAML, **kw) -> FakeContext:
    ctx = world(LLM_YAML, agent, TASK_YAML, llm=llm, **kw)
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.Agent, "helper")
    return ctx


def task(ctx: FakeContext, name: str = "t1") -> Task:
    obj = ctx.observed(Kind.Task, name)
    assert isinstance(obj, Task)
    return obj


# -- Task ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "mark_ready", "detail"),
    [
        ((LLM_YAML, TASK_YAML), (), 'Waiting for Agent "helper" to exist'),
        ((LLM_YAML, AGENT_YAML, TASK_YAML), (), 'Waiting for agent "helper" to become ready'),
    ],
)
def test_task_waits_in_pending_for_its_agent(parts, mark_ready, detail) -> None:
    ctx = world(*parts)
    result = run(TaskController().reconcile("t1", ctx))
    assert result.requeue_after is None  # woken by the agent, not by polling
    assert ctx.phases(Kind.Task, "t1") == ["Pending"]
    assert task(ctx).status.status_detail.startswith(detail)
    run(TaskController().reconcile("t1", ctx))
    assert len(ctx.checkpoints) == 1  # nothing changed: nothing committed
    assert ctx.llm.requests == []


def test_task_runs_to_final_answer_with_one_checkpoint_per_step() -> None:
    ctx = ready_world(FakeLLM([final("4", prompt=12, completion=3)]))
    result = run(TaskController().reconcile("t1", ctx))
    assert result.requeue_after is None
    assert ctx.phases(Kind.Task, "t1") == ["ReadyForLLM", "FinalAnswer"]
    status = task(ctx).status
    assert status.output == "4"
    assert [(m.role, m.content) for m in status.context_window] == [
        ("system", "You help."),
        ("user", "What is 2+2?"),
        ("assistant", "4"),
    ]
    assert status.turns == 1
    assert (status.usage.prompt_tokens, status.usage.completion_tokens) == (12, 3)
    assert status.start_time
    assert status.completion_time
    assert status.user_msg_preview == "What is 2+2?"
    config, messages, _ = ctx.llm.requests[0]
    assert (config.model, config.temperature, config.max_tokens) == ("gpt-test", 0.3, 77)
    assert config.api_key == "test-key"
    assert messages[0] == {"role": "system", "content": "You help."}


@pytest.mark.parametrize(
    ("window", "expected_roles"),
    [
        ("[{role: user, content: hi}]", ["system", "user"]),
        ("[{role: system, content: mine}, {role: user, content: hi}]", ["system", "user"]),
    ],
)
def test_context_window_input_gets_the_agent_system_prompt_only_when_it_has_none(
    window, expected_roles
) -> None:
    ctx = ready_world(FakeLLM([final("ok")]))
    ctx.declare(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata: {name: t2}\n"
        f"spec:\n  agentRef: {{name: helper}}\n  contextWindow: {window}\n",
        path="t2.yaml",
    )
    run(TaskController().reconcile("t2", ctx))
    sent = [m["role"] for m in ctx.llm.requests[0][1]]
    assert sent == expected_roles
    first = ctx.llm.requests[0][1][0]["content"]
    assert first == ("mine" if "mine" in window else "You help.")


def test_transient_error_backs_off_then_recovers() -> None:
    ctx = ready_world(FakeLLM([TemporaryLLMError("503 overloaded", status_code=503), final("4")]))
    controller = TaskController()
    result = run(controller.reconcile("t1", ctx))
    status = task(ctx).status
    assert ctx.phases(Kind.Task, "t1") == ["ReadyForLLM", "ErrorBackoff"]
    assert status.attempts == 1
    assert status.error == "503 overloaded"
    delay = parse_rfc3339(status.next_attempt_time) - ctx.clock
    assert 0.5 <= delay <= 1.0  # base 1 s with jitter in [0.5, 1]
    assert result.requeue_after == pytest.approx(delay, abs=1e-3)
    assert result.progress
    # woken early: stays put, asks to come back when due
    again = run(controller.reconcile("t1", ctx))
    assert len(ctx.checkpoints) == 2
    assert again.requeue_after == pytest.approx(delay, abs=1e-3)
    ctx.clock += delay + 0.01
    run(controller.reconcile("t1", ctx))
    assert ctx.phases(Kind.Task, "t1") == ["ReadyForLLM", "ErrorBackoff", "ReadyForLLM", "FinalAnswer"]
    assert task(ctx).status.attempts == 0
    assert task(ctx).status.error is None


def test_retry_after_is_honoured() -> None:
    ctx = ready_world(FakeLLM([TemporaryLLMError("429 slow down", status_code=429, retry_after=7.0)]))
    result = run(TaskController().reconcile("t1", ctx))
    assert result.requeue_after == pytest.approx(7.0)


def test_permanent_error_fails_at_once_with_the_provider_message() -> None:
    error = PermanentLLMError("LLM request failed: 400 Bad Request: context too long", status_code=400)
    ctx = ready_world(FakeLLM([error, final("never")]))
    result = run(TaskController().reconcile("t1", ctx))
    assert result.requeue_after is None
    assert ctx.phases(Kind.Task, "t1") == ["ReadyForLLM", "Failed"]
    assert task(ctx).status.error == "LLM request failed: 400 Bad Request: context too long"
    assert task(ctx).status.status == "Error"
    assert len(ctx.llm.requests) == 1


def test_transient_errors_are_bounded() -> None:
    errors = [TemporaryLLMError(f"500 attempt {i}", status_code=500) for i in range(1, 4)]
    ctx = ready_world(FakeLLM(list(errors)), settings=Settings(backoff_base=0.01, max_llm_attempts=3))
    controller = TaskController()
    for _ in range(3):
        run(controller.reconcile("t1", ctx))
        ctx.clock += 1
    status = task(ctx).status
    assert status.phase == "Failed"
    assert status.error == "giving up after 3 attempts: 500 attempt 3"
    assert len(ctx.llm.requests) == 3


def test_tool_calls_are_recorded_in_one_checkpoint_and_unknown_tools_fail_visibly() -> None:
    ctx = ready_world(
        FakeLLM([tool_calls(("web__fetch", '{"url": "x"}'), ("calc__add", "not json")), final("done")])
    )
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    status = task(ctx).status
    assert status.phase == "ToolCallsPending"
    request = status.tool_call_request_id
    assert request is not None
    assert len(request) == 7
    pending = ctx.checkpoints[-1]
    names = [obj.metadata.name for obj in pending]
    assert names == ["t1", toolcall_name("t1", request, 1), toolcall_name("t1", request, 2)]
    call = pending[1]
    assert isinstance(call, ToolCall)
    assert call.metadata.labels == {LABEL_TASK: "t1", LABEL_TOOLCALL_REQUEST: request}
    assert (call.spec.tool_call_id, call.spec.tool_ref.name, call.spec.tool_type) == (
        "call_1",
        "web__fetch",
        "MCP",
    )
    assert call.status.phase == "Pending"

    tools = ToolCallController()
    for name in names[1:]:
        run(tools.reconcile(name, ctx))
    errors = [ctx.observed(Kind.ToolCall, n).status.error for n in names[1:]]
    assert errors[0].startswith('unknown tool "web__fetch"')
    assert errors[1].startswith('unknown tool "calc__add"')

    run(controller.reconcile("t1", ctx))
    assert task(ctx).status.phase == "FinalAnswer"
    sent = ctx.llm.requests[1][1]
    assert [m["role"] for m in sent[-3:]] == ["assistant", "tool", "tool"]
    assert [m["toolCallId"] for m in sent[-2:]] == ["call_1", "call_2"]  # the LLM's order
    assert sent[-2]["content"].startswith('Error: unknown tool "web__fetch"')  # never an empty string


def test_task_removed_from_main_is_cancelled() -> None:
    ctx = ready_world(FakeLLM([tool_calls(("web__fetch", "{}"))]))
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    ctx.undeclare(Kind.Task, "t1")
    run(controller.reconcile("t1", ctx))
    status = task(ctx).status
    assert status.phase == "Cancelled"
    assert "removed from main" in status.status_detail
    call = ctx.observed(Kind.ToolCall, toolcall_name("t1", status.tool_call_request_id, 1))
    assert call.status.phase == "Failed"  # cancelled with its task, in the same commit
    assert len(ctx.checkpoints[-1]) == 2


@pytest.mark.parametrize(
    ("limits", "replies", "clock_step", "reason"),
    [
        ("{maxTurns: 1}", [tool_calls(("x__y", "{}"))], 0, "maxTurns 1"),
        ("{maxTokens: 10}", [tool_calls(("x__y", "{}"))], 0, "maxTokens 10"),
        ("{timeout: 30s}", [tool_calls(("x__y", "{}"))], 31, "timeout 30s"),
    ],
)
def test_agent_limits_cancel_the_task(limits, replies, clock_step, reason) -> None:
    agent = AGENT_YAML + f"  limits: {limits}\n"
    ctx = ready_world(FakeLLM(list(replies)), agent=agent)
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    name = toolcall_name("t1", task(ctx).status.tool_call_request_id, 1)
    run(ToolCallController().reconcile(name, ctx))
    ctx.clock += clock_step
    run(controller.reconcile("t1", ctx))
    status = task(ctx).status
    assert status.phase == "Cancelled"
    assert reason in status.error
    assert len(ctx.llm.requests) == 1


def test_agent_going_away_keeps_the_context_window() -> None:
    ctx = ready_world(FakeLLM([tool_calls(("x__y", "{}")), final("back")]))
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    name = toolcall_name("t1", task(ctx).status.tool_call_request_id, 1)
    run(ToolCallController().reconcile(name, ctx))
    ctx.undeclare(Kind.Agent, "helper")
    run(controller.reconcile("t1", ctx))
    window = task(ctx).status.context_window
    assert task(ctx).status.phase == "Pending"
    assert len(window) == 4  # system, user, assistant (tool call), tool result
    ctx.declare(AGENT_YAML, path="agent.yaml")
    run(controller.reconcile("t1", ctx))
    assert task(ctx).status.phase == "FinalAnswer"
    assert len(task(ctx).status.context_window) == 5


# -- LLM ----------------------------------------------------------------------------------------


def test_llm_validates_with_a_real_request_carrying_its_parameters() -> None:
    ctx = world(LLM_YAML)
    result = run(LLMController().reconcile("gpt", ctx))
    status = ctx.observed(Kind.LLM, "gpt").status
    assert (status.ready, status.status) == (True, "Ready")
    assert status.status_detail == "openai provider validated successfully"
    config, messages, _ = ctx.llm.requests[0]
    assert config.max_tokens == 1
    assert (config.model, config.temperature, config.base_url) == ("gpt-test", 0.3, "http://127.0.0.1:9/v1")
    assert messages == [{"role": "user", "content": "test"}]
    assert not result.progress  # re-validation is a watchdog, not work


def test_llm_missing_secret_is_an_error_naming_it_and_not_sticky() -> None:
    ctx = world(LLM_YAML)
    ctx.secrets = type(ctx.secrets)(None, environ={})
    controller = LLMController()
    result = run(controller.reconcile("gpt", ctx))
    status = ctx.observed(Kind.LLM, "gpt").status
    assert status.status == "Error"
    assert 'secret "openai"' in status.status_detail
    assert "API_KEY" in status.status_detail
    assert result.requeue_after is not None
    ctx.secrets = type(ctx.secrets)(None, environ={"API_KEY": "now-here"})
    run(controller.reconcile("gpt", ctx))
    assert ctx.observed(Kind.LLM, "gpt").status.status == "Ready"


def test_llm_is_revalidated_only_when_spec_or_secret_changes() -> None:
    ctx = world(LLM_YAML)
    controller = LLMController()
    run(controller.reconcile("gpt", ctx))
    run(controller.reconcile("gpt", ctx))
    assert len(ctx.llm.requests) == 1
    ctx.secrets = type(ctx.secrets)(None, environ={"API_KEY": "rotated"})
    run(controller.reconcile("gpt", ctx))
    assert len(ctx.llm.requests) == 2
    ctx.declare(LLM_YAML.replace("maxTokens: 77", "maxTokens: 78"), path="llm.yaml")
    run(controller.reconcile("gpt", ctx))
    assert len(ctx.llm.requests) == 3


def test_llm_validation_failure_reports_the_provider_message() -> None:
    ctx = world(LLM_YAML, llm=FakeLLM([PermanentLLMError("401 Unauthorized: bad key", status_code=401)]))
    run(LLMController().reconcile("gpt", ctx))
    status = ctx.observed(Kind.LLM, "gpt").status
    assert status.status == "Error"
    assert "401 Unauthorized: bad key" in status.status_detail


def test_llm_removed_from_main_deletes_its_status() -> None:
    ctx = world(LLM_YAML)
    controller = LLMController()
    run(controller.reconcile("gpt", ctx))
    ctx.undeclare(Kind.LLM, "gpt")
    run(controller.reconcile("gpt", ctx))
    assert ctx.removed == [(Kind.LLM, "gpt")]


# -- Agent --------------------------------------------------------------------------------------


def test_agent_is_pending_until_its_llm_is_ready() -> None:
    ctx = world(AGENT_YAML)
    controller = AgentController()
    run(controller.reconcile("helper", ctx))
    assert ctx.observed(Kind.Agent, "helper").status.status_detail == 'waiting for LLM "gpt" (not found)'
    ctx.declare(LLM_YAML, path="llm.yaml")
    run(controller.reconcile("helper", ctx))
    assert ctx.observed(Kind.Agent, "helper").status.status == "Pending"
    ready(ctx, Kind.LLM, "gpt")
    run(controller.reconcile("helper", ctx))
    status = ctx.observed(Kind.Agent, "helper").status
    assert (status.ready, status.status) == (True, "Ready")
    assert set(controller.dependencies(ctx.desired(Kind.Agent, "helper").resource)) == {(Kind.LLM, "gpt")}


def test_sub_agent_cycle_is_an_error() -> None:
    a = AGENT_YAML.replace("name: helper", "name: a") + "  subAgents: [{name: b}]\n"
    b = AGENT_YAML.replace("name: helper", "name: b") + "  subAgents: [{name: a}]\n"
    ctx = world(LLM_YAML, a, b)
    ready(ctx, Kind.LLM, "gpt")
    run(AgentController().reconcile("a", ctx))
    status = ctx.observed(Kind.Agent, "a").status
    assert status.status == "Error"
    assert status.status_detail == "sub-agent cycle: a -> b -> a"


def test_timeout_cancels_a_task_still_waiting_on_its_tool_calls() -> None:
    agent = AGENT_YAML + "  limits: {timeout: 30s}\n"
    ctx = ready_world(FakeLLM([tool_calls(("x__y", "{}"))]), agent=agent)
    controller = TaskController()
    run(controller.reconcile("t1", ctx))
    waiting = run(controller.reconcile("t1", ctx))
    assert waiting.requeue_after == pytest.approx(30.0, abs=0.01)  # a watchdog at the deadline
    assert not waiting.progress
    ctx.clock += 31
    run(controller.reconcile("t1", ctx))
    status = task(ctx).status
    assert status.phase == "Cancelled"
    assert "timeout 30s" in status.error
    call = ctx.observed(Kind.ToolCall, toolcall_name("t1", status.tool_call_request_id, 1))
    assert call.status.phase == "Failed"


# -- responseUrl ----------------------------------------------------------------------------------

TASK_WITH_URL = TASK_YAML + "  responseUrl: http://127.0.0.1:9/hook\n"


def delivery_world(*post_replies) -> FakeContext:
    ctx = world(
        LLM_YAML, AGENT_YAML, TASK_WITH_URL, llm=FakeLLM([final("4")]), settings=Settings(backoff_base=1.0)
    )
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.Agent, "helper")
    ctx.post_replies = list(post_replies)
    return ctx


def test_the_final_answer_is_posted_once_and_recorded() -> None:
    ctx = delivery_world(204)
    controller = TaskController()
    assert run(controller.reconcile("t1", ctx)).requeue_after is None
    url, body, headers = ctx.posts[0]
    assert url == "http://127.0.0.1:9/hook"
    assert body["task"] == "t1"
    assert (body["phase"], body["output"]) == ("FinalAnswer", "4")
    assert headers["Idempotency-Key"] == f"t1-{task(ctx).status.completion_time}"
    delivery = task(ctx).status.delivery
    assert (delivery["state"], delivery["statusCode"], delivery["attempts"]) == ("Delivered", 204, 1)
    run(controller.reconcile("t1", ctx))
    assert len(ctx.posts) == 1  # delivered: never again


def test_delivery_retries_transient_failures_with_backoff() -> None:
    ctx = delivery_world(OSError("connection refused"), 503, 200)
    controller = TaskController()
    for _ in range(3):
        result = run(controller.reconcile("t1", ctx))
        early = run(controller.reconcile("t1", ctx))  # woken before nextAttemptTime: no POST
        if result.requeue_after:
            assert early.requeue_after is not None
            ctx.clock += result.requeue_after + 0.01
    delivery = task(ctx).status.delivery
    assert (delivery["state"], delivery["attempts"]) == ("Delivered", 3)
    assert len(ctx.posts) == 3


@pytest.mark.parametrize(("reply", "error"), [(404, "HTTP 404"), (OSError("down"), "cannot reach")])
def test_delivery_gives_up_on_permanent_errors_or_after_max_attempts(reply, error) -> None:
    ctx = delivery_world(*([reply] * 10))
    controller = TaskController()
    for _ in range(10):
        result = run(controller.reconcile("t1", ctx))
        ctx.clock += (result.requeue_after or 0) + 0.01
    delivery = task(ctx).status.delivery
    assert delivery["state"] == "Failed"
    assert error in delivery["lastError"]
    assert len(ctx.posts) == (1 if reply == 404 else 10)  # default max_delivery_attempts: 10
