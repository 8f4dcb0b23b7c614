"""Tools: the MCPServer controller, the catalog, durable MCP tool calls, sub-agents (transition tables)."""

from __future__ import annotations

import asyncio
import json

import pytest

from gitops_acp.controllers import registry
from gitops_acp.controllers.delegation import child_task_name
from gitops_acp.controllers.kinds.agent import AgentController
from gitops_acp.controllers.kinds.mcpserver import MCPServerController
from gitops_acp.controllers.kinds.task import toolcall_name
from gitops_acp.controllers.mcptools import INTERRUPTED
from gitops_acp.errors import MCPError
from gitops_acp.humans.approvals import Decision
from gitops_acp.mcp import ServerState, ToolInfo, ToolResult
from gitops_acp.resources.meta import LABEL_PARENT_TOOLCALL, Kind
from gitops_acp.resources.models import Task, ToolCall
from tests.fakes import FakeContext, FakeLLM, FakeMCP, final, ready, tool_calls

LLM = """
apiVersion: acp.gitops.dev/v1alpha1
kind: LLM
metadata: {name: gpt}
spec:
  provider: openai
  apiKeyFrom: {secretKeyRef: {name: openai, key: API_KEY}}
  parameters: {baseUrl: "http://127.0.0.1:9/v1"}
"""
SERVER = """
apiVersion: acp.gitops.dev/v1alpha1
kind: MCPServer
metadata: {name: srv}
spec:
  transport: stdio
  command: python
  args: [-m, server]
  env:
  - {name: MODE, value: test}
  - {name: TOKEN, valueFrom: {secretKeyRef: {name: srv, key: SRV_TOKEN}}}
  timeout: 5s
"""
AGENT = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Agent
metadata: {name: helper}
spec:
  llmRef: {name: gpt}
  system: You help.
  mcpServers: [{name: srv}]
"""
TASK = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Task
metadata: {name: t1}
spec:
  agentRef: {name: helper}
  userMessage: Use the tools.
"""
ECHO = ToolInfo(
    name="echo",
    description="Echo text",
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    annotations={"readOnlyHint": True},
)
COUNT = ToolInfo(
    name="count",
    description="Count (not idempotent)",
    input_schema={
        "type": "object",
        "properties": {"label": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
    },
    annotations={"idempotentHint": False},
)


def run(coro):
    return asyncio.run(coro)


def reconcile(ctx: FakeContext, kind: Kind, name: str):
    return run(registry()[kind].reconcile(name, ctx))


def tool_world(*replies, mcp: FakeMCP | None = None, extra: str = "") -> FakeContext:
    mcp = mcp or FakeMCP()
    mcp.connect("srv", ECHO, COUNT)
    ctx = FakeContext(
        "\n---\n".join(p for p in (LLM, SERVER, AGENT, TASK, extra) if p),
        llm=FakeLLM(list(replies)),
        mcp=mcp,
        environ={"API_KEY": "k", "SRV_TOKEN": "s3cret-token"},
    )
    ready(ctx, Kind.LLM, "gpt")
    reconcile(ctx, Kind.MCPServer, "srv")
    reconcile(ctx, Kind.Agent, "helper")
    return ctx


def call_named(ctx: FakeContext, index: int = 1, task: str = "t1") -> ToolCall:
    t = ctx.observed(Kind.Task, task)
    assert isinstance(t, Task)
    name = toolcall_name(task, t.status.tool_call_request_id, index)
    call = ctx.observed(Kind.ToolCall, name)
    assert isinstance(call, ToolCall)
    return call


# -- MCPServer ----------------------------------------------------------------------------------


def test_mcpserver_starts_a_session_with_resolved_env_and_publishes_tools() -> None:
    mcp = FakeMCP()
    ctx = FakeContext(SERVER, mcp=mcp, environ={"SRV_TOKEN": "s3cret-token"})
    controller = MCPServerController()
    run(controller.reconcile("srv", ctx))
    config = mcp.ensured[-1]
    assert (config.transport, config.command, config.args) == ("stdio", "python", ("-m", "server"))
    assert dict(config.env) == {"MODE": "test", "TOKEN": "s3cret-token"}
    assert "s3cret-token" not in repr(config)
    assert ctx.observed(Kind.MCPServer, "srv").status.status == "Pending"

    mcp.connect("srv", ECHO, COUNT)
    run(controller.reconcile("srv", ctx))
    status = ctx.observed(Kind.MCPServer, "srv").status
    assert (status.connected, status.status) == (True, "Ready")
    assert status.status_detail == "Connected successfully with 2 tools"
    assert [t.name for t in status.tools] == ["echo", "count"]
    assert status.tools[1].input_schema["properties"]["label"]["anyOf"][1] == {"type": "null"}
    assert status.tools[0].annotations == {"readOnlyHint": True}

    mcp.servers["srv"] = ServerState(
        connected=False, tools=(), error="exited with code 3", restarts=1, protocol_version=None
    )
    run(controller.reconcile("srv", ctx))
    status = ctx.observed(Kind.MCPServer, "srv").status
    assert (status.connected, status.status, status.status_detail) == (False, "Error", "exited with code 3")
    assert [t.name for t in status.tools] == ["echo", "count"]  # the catalog survives a restart

    ctx.undeclare(Kind.MCPServer, "srv")
    run(controller.reconcile("srv", ctx))
    assert mcp.stopped == ["srv"]
    assert ctx.removed == [(Kind.MCPServer, "srv")]


def test_mcpserver_missing_secret_is_an_error() -> None:
    ctx = FakeContext(SERVER, environ={})
    run(MCPServerController().reconcile("srv", ctx))
    status = ctx.observed(Kind.MCPServer, "srv").status
    assert status.status == "Error"
    assert 'secret "srv" has no key SRV_TOKEN' in status.status_detail


def test_agent_lists_servers_and_tools_and_refuses_overlong_names() -> None:
    ctx = tool_world()
    status = ctx.observed(Kind.Agent, "helper").status
    assert status.status == "Ready"
    assert [(s.name, s.tools) for s in status.valid_mcp_servers] == [("srv", ["echo", "count"])]
    ctx.mcp.connect("srv", ToolInfo(name="x" * 70, description="", input_schema={}, annotations=None))
    reconcile(ctx, Kind.MCPServer, "srv")
    run(AgentController().reconcile("helper", ctx))
    status = ctx.observed(Kind.Agent, "helper").status
    assert status.status == "Error"
    assert "75 characters long; LLM providers allow 64" in status.status_detail


# -- MCP tool calls -------------------------------------------------------------------------------


def test_a_tool_call_runs_durably_and_its_result_reaches_the_model() -> None:
    ctx = tool_world(tool_calls(("srv__echo", '{"text": "hi"}')), final("It said hi"))
    reconcile(ctx, Kind.Task, "t1")
    tools_offered = ctx.llm.requests[0][2]
    assert [t.name for t in tools_offered] == ["srv__echo", "srv__count"]
    assert tools_offered[0].parameters == ECHO.input_schema
    call = call_named(ctx)
    assert call.spec.tool_type == "MCP"
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert ctx.phases(Kind.ToolCall, call.metadata.name) == ["Pending", "Running", "Succeeded"]
    call = call_named(ctx)
    assert (call.status.attempt, call.status.result) == (1, "echo ok")
    assert ctx.mcp.calls == [("srv", "echo", {"text": "hi"})]
    reconcile(ctx, Kind.Task, "t1")
    assert ctx.observed(Kind.Task, "t1").status.phase == "FinalAnswer"
    assert ctx.llm.requests[1][1][-1] == {"role": "tool", "content": "echo ok", "toolCallId": "call_1"}


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (ToolResult(text="label must not be empty", is_error=True), "label must not be empty"),
        (MCPError('MCP server "srv": tool call timed out after 5s'), "timed out after 5s"),
    ],
)
def test_tool_errors_fail_the_call_with_text_the_model_reads(reply, error) -> None:
    mcp = FakeMCP(replies={"count": reply})
    ctx = tool_world(tool_calls(("srv__count", '{"label": ""}')), final("sorry"), mcp=mcp)
    reconcile(ctx, Kind.Task, "t1")
    reconcile(ctx, Kind.ToolCall, call_named(ctx).metadata.name)
    call = call_named(ctx)
    assert call.status.phase == "Failed"
    assert error in call.status.error
    reconcile(ctx, Kind.Task, "t1")
    assert error in ctx.llm.requests[1][1][-1]["content"]


@pytest.mark.parametrize(("tool", "reruns"), [("count", False), ("echo", True)])
def test_a_call_found_running_is_rerun_only_when_idempotent(tool: str, reruns: bool) -> None:
    ctx = tool_world(tool_calls((f"srv__{tool}", '{"text": "x", "label": "x"}')))
    reconcile(ctx, Kind.Task, "t1")
    call = call_named(ctx)
    # what a crash between "Running committed" and "result committed" leaves behind
    running = call.status.model_copy(update={"phase": "Running", "attempt": 1})
    ctx.observe(call.model_copy(update={"status": running}))
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    call = call_named(ctx)
    if reruns:
        assert (call.status.phase, call.status.attempt) == ("Succeeded", 2)
        assert len(ctx.mcp.calls) == 1
    else:
        assert (call.status.phase, call.status.error) == ("Failed", INTERRUPTED)
        assert ctx.mcp.calls == []


def test_a_call_waits_for_its_server_to_connect() -> None:
    ctx = tool_world(tool_calls(("srv__echo", '{"text": "x"}')))
    reconcile(ctx, Kind.Task, "t1")
    ctx.mcp.servers["srv"] = ServerState(
        connected=False, tools=(), error=None, restarts=1, protocol_version=None
    )
    reconcile(ctx, Kind.ToolCall, call_named(ctx).metadata.name)
    call = call_named(ctx)
    assert call.status.phase == "Pending"
    assert 'Waiting for MCP server "srv" to connect' in call.status.status_detail
    assert ctx.mcp.calls == []
    ctx.mcp.connect("srv", ECHO, COUNT)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert call_named(ctx).status.phase == "Succeeded"


# -- sub-agents -----------------------------------------------------------------------------------


def agents(*pairs: tuple[str, list[str]]) -> str:
    docs = []
    for name, subs in pairs:
        docs.append(
            "apiVersion: acp.gitops.dev/v1alpha1\nkind: Agent\n"
            f"metadata: {{name: {name}}}\nspec:\n  llmRef: {{name: gpt}}\n  system: I am {name}.\n"
            f"  description: Agent {name}.\n  subAgents: {json.dumps([{'name': s} for s in subs])}\n"
        )
    return "\n---\n".join(docs)


def delegation_world(replies, pairs, *, root_agent: str) -> FakeContext:
    task = TASK.replace("name: helper", f"name: {root_agent}")
    ctx = FakeContext(LLM + "\n---\n" + agents(*pairs) + "\n---\n" + task, llm=FakeLLM(list(replies)))
    ready(ctx, Kind.LLM, "gpt")
    for name, _ in reversed(pairs):
        reconcile(ctx, Kind.Agent, name)
    return ctx


def test_delegation_runs_a_child_task_and_returns_its_answer() -> None:
    ctx = delegation_world(
        [
            tool_calls(("delegate_to_agent__child", '{"message": "What is 6x7?"}')),
            final("42"),
            final("The child says 42"),
        ],
        [("parent", ["child"]), ("child", [])],
        root_agent="parent",
    )
    reconcile(ctx, Kind.Task, "t1")
    offered = [t.name for t in ctx.llm.requests[0][2]]
    assert offered == ["delegate_to_agent__child"]
    call = call_named(ctx)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    child_name = child_task_name(call.metadata.name)
    assert [o.metadata.name for o in ctx.checkpoints[-1]] == [call.metadata.name, child_name]  # one commit
    child = ctx.observed(Kind.Task, child_name)
    assert child.metadata.labels[LABEL_PARENT_TOOLCALL] == call.metadata.name
    assert child.spec.user_message == "What is 6x7?"
    reconcile(ctx, Kind.Task, child_name)
    assert ctx.observed(Kind.Task, child_name).status.output == "42"
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert call_named(ctx).status.result == "42"
    reconcile(ctx, Kind.Task, "t1")
    assert ctx.observed(Kind.Task, "t1").status.output == "The child says 42"


def test_delegation_depth_is_limited() -> None:
    chain = [(f"a{i}", [f"a{i + 1}"]) for i in range(1, 7)] + [("a7", [])]
    replies = [tool_calls((f"delegate_to_agent__a{i + 1}", '{"message": "go on"}')) for i in range(1, 7)]
    ctx = delegation_world(replies, chain, root_agent="a1")
    task, calls = "t1", []
    for _ in range(5):  # tasks at depths 1..5 each ask their sub-agent
        reconcile(ctx, Kind.Task, task)
        call = call_named(ctx, task=task)
        reconcile(ctx, Kind.ToolCall, call.metadata.name)
        calls.append(call_named(ctx, task=task))
        task = child_task_name(call.metadata.name)
    assert [c.status.phase for c in calls] == ["AwaitingSubAgent"] * 4 + ["Failed"]
    assert calls[-1].status.error == "delegation depth limit (5) reached: a1 -> a2 -> a3 -> a4 -> a5 -> a6"
    assert all(len(c.metadata.name) <= 63 for c in calls)


def test_cancelling_the_parent_cancels_the_child() -> None:
    ctx = delegation_world(
        [tool_calls(("delegate_to_agent__child", '{"message": "slow work"}'))],
        [("parent", ["child"]), ("child", [])],
        root_agent="parent",
    )
    reconcile(ctx, Kind.Task, "t1")
    call = call_named(ctx)
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    child_name = child_task_name(call.metadata.name)
    ctx.undeclare(Kind.Task, "t1")
    reconcile(ctx, Kind.Task, "t1")
    assert ctx.observed(Kind.Task, "t1").status.phase == "Cancelled"
    assert call_named(ctx).status.phase == "Failed"
    child = ctx.observed(Kind.Task, child_name)
    assert child.status.phase == "Cancelled"
    assert child.status.error == "parent task t1 cancelled"


# -- approvals ------------------------------------------------------------------------------------

CHANNEL = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: reviewers}
spec:
  type: git
  git: {approvers: [alice@example.com], timeout: 1h}
"""


def approval_world(*replies, approval: str = "") -> FakeContext:
    server = SERVER + "  approvalContactChannel: {name: reviewers}\n" + approval
    mcp = FakeMCP()
    mcp.connect("srv", ECHO, COUNT)
    ctx = FakeContext(
        "\n---\n".join((LLM, server, AGENT, TASK, CHANNEL)),
        llm=FakeLLM(list(replies)),
        mcp=mcp,
        environ={"API_KEY": "k", "SRV_TOKEN": "t"},
    )
    ready(ctx, Kind.LLM, "gpt")
    reconcile(ctx, Kind.MCPServer, "srv")
    reconcile(ctx, Kind.Agent, "helper")
    reconcile(ctx, Kind.Task, "t1")
    reconcile(ctx, Kind.ToolCall, call_named(ctx).metadata.name)
    return ctx


def decide(
    ctx: FakeContext, spec_update: dict, by: str = "Alice <alice@example.com>", ff: bool = False
) -> None:
    name = call_named(ctx).metadata.name
    document, _ = ctx.proposals[name]
    ctx.decisions[name] = Decision(
        spec={**document["spec"], **spec_update}, decided_by=by, decided_at=ctx.clock, fast_forward=ff
    )


def test_a_call_waits_for_approval_with_a_proposal_a_reviewer_can_decide_from() -> None:
    ctx = approval_world(tool_calls(("srv__count", '{"label": "x"}')))
    call = call_named(ctx)
    assert call.status.phase == "AwaitingHumanApproval"
    assert call.status.approval.branch == f"acp/approvals/{call.metadata.name}"
    document, message = ctx.proposals[call.metadata.name]
    spec = document["spec"]
    assert (spec["tool"], spec["arguments"], spec["decision"]) == ("srv__count", {"label": "x"}, "approved")
    assert spec["argumentsDigest"].startswith("sha256:")
    assert spec["request"] == "Use the tools."
    assert spec["toolAnnotations"] == {"idempotentHint": False}
    assert message.startswith("Approve srv__count for task t1")
    assert '"label": "x"' in message
    assert ctx.mcp.calls == []


def test_approved_by_an_approver_runs_once_and_records_who() -> None:
    ctx = approval_world(tool_calls(("srv__count", '{"label": "x"}')))
    decide(ctx, {})
    reconcile(ctx, Kind.ToolCall, call_named(ctx).metadata.name)
    call = call_named(ctx)
    assert ctx.phases(Kind.ToolCall, call.metadata.name)[-3:] == [
        "ReadyToExecuteApprovedTool",
        "Running",
        "Succeeded",
    ]
    assert call.status.approval.decided_by == "Alice <alice@example.com>"
    assert len(ctx.mcp.calls) == 1


@pytest.mark.parametrize(
    ("update", "by", "ff", "reason"),
    [
        (
            {"decision": "rejected", "comment": "not today"},
            "Alice <alice@example.com>",
            False,
            "Rejected: not today",
        ),
        ({"arguments": {"label": "y"}}, "Alice <alice@example.com>", False, "arguments were changed"),
        ({}, "Mallory <m@example.com>", False, "is not one of the approvers"),
        ({}, "gitops-acp <gitops-acp@localhost>", True, "merged by fast-forward"),
    ],
)
def test_rejections_reach_the_model_and_the_tool_never_runs(update, by, ff, reason) -> None:
    ctx = approval_world(tool_calls(("srv__count", '{"label": "x"}')), final("ok"))
    decide(ctx, update, by=by, ff=ff)
    reconcile(ctx, Kind.ToolCall, call_named(ctx).metadata.name)
    call = call_named(ctx)
    assert (call.status.phase, call.status.status) == ("ToolCallRejected", "Succeeded")
    assert reason in call.status.result
    assert call.status.result.startswith("Rejected: ")
    assert ctx.mcp.calls == []
    reconcile(ctx, Kind.Task, "t1")
    assert ctx.llm.requests[1][1][-1]["content"] == call.status.result


def test_a_deleted_branch_or_a_timeout_rejects() -> None:
    ctx = approval_world(tool_calls(("srv__count", '{"label": "x"}')))
    name = call_named(ctx).metadata.name
    waiting = reconcile(ctx, Kind.ToolCall, name)
    assert waiting.requeue_after == pytest.approx(3600, abs=1)  # the channel's timeout
    ctx.clock += 3601
    reconcile(ctx, Kind.ToolCall, name)
    assert call_named(ctx).status.result == "Rejected: approval timed out after 1h"

    ctx = approval_world(tool_calls(("srv__count", '{"label": "x"}')))
    ctx.branches.clear()
    reconcile(ctx, Kind.ToolCall, call_named(ctx).metadata.name)
    assert call_named(ctx).status.result == "Rejected: closed without merging"


def test_only_listed_tools_need_approval() -> None:
    ctx = approval_world(
        tool_calls(("srv__echo", '{"text": "hi"}')), approval="  approval: {tools: [count]}\n"
    )
    assert call_named(ctx).status.phase == "Succeeded"
    assert ctx.proposals == {}
