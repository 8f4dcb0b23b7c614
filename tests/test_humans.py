"""Questions to humans and HumanLayer channels (transition tables with FakeContext), and question branches
on a real repository."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_acp.controllers import registry
from gitops_acp.controllers.base import Settings
from gitops_acp.controllers.http import HttpReply
from gitops_acp.controllers.kinds.task import toolcall_name
from gitops_acp.humans.approvals import Decision
from gitops_acp.humans.questions import propose, read_response, response_path
from gitops_acp.mcp import ToolInfo
from gitops_acp.resources.meta import Kind
from gitops_acp.resources.models import Agent, ContactChannel, Task, ToolCall
from gitops_acp.store.git import GitRepo
from tests.conftest import git
from tests.fakes import FakeContext, FakeLLM, FakeMCP, final, ready, tool_calls

KEY = "hl-secret-key-do-not-leak"
BASE = "http://humanlayer.test"
RECONCILER = ("gitops-acp", "gitops-acp@localhost")

LLM = """
apiVersion: acp.gitops.dev/v1alpha1
kind: LLM
metadata: {name: gpt}
spec:
  provider: openai
  apiKeyFrom: {secretKeyRef: {name: openai, key: API_KEY}}
  parameters: {baseUrl: "http://127.0.0.1:9/v1"}
"""
CHANNELS = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: team}
spec:
  type: git
  git: {timeout: 1h}
---
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: ops}
spec:
  type: slack
  apiKeyFrom: {secretKeyRef: {name: humanlayer, key: HUMANLAYER_API_KEY}}
  slack: {channelOrUserID: C0OPS, contextAboutChannelOrUser: the on-call engineers}
---
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: boss}
spec:
  type: email
  apiKeyFrom: {secretKeyRef: {name: humanlayer, key: HUMANLAYER_API_KEY}}
  email: {address: boss@example.com, contextAboutUser: the budget owner}
"""
AGENT = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Agent
metadata: {name: helper}
spec:
  llmRef: {name: gpt}
  system: You help.
  humanContactChannels: [{name: team}, {name: ops}, {name: boss}]
"""
TASK = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Task
metadata: {name: t1}
spec:
  agentRef: {name: helper}
  userMessage: Plan the offsite.
"""
SERVER = """
apiVersion: acp.gitops.dev/v1alpha1
kind: MCPServer
metadata: {name: srv}
spec:
  transport: stdio
  command: python
  approvalContactChannel: {name: ops}
"""
COUNT = ToolInfo(name="count", description="Count", input_schema={"type": "object"}, annotations=None)


class FakeHumanLayer:
    """HumanLayer's API as a function for FakeContext.replies: calls by id, the key checked."""

    def __init__(self, ctx: FakeContext, *, key: str = KEY) -> None:
        self.ctx = ctx
        self.key = key
        self.calls: dict[str, dict[str, Any]] = {}
        self.script: list[HttpReply | OSError] = []  # replies to give first, whatever is asked
        ctx.replies = self

    def __call__(self, method: str, url: str, body: dict[str, Any] | None) -> HttpReply | OSError:
        headers = self.ctx.requests[-1][3]
        if self.script:
            return self.script.pop(0)
        if headers.get("Authorization") != f"Bearer {self.key}":
            return HttpReply(401, {"detail": "invalid api key"})
        path = url.removeprefix(BASE)
        if path == "/humanlayer/v1/project":
            return HttpReply(200, {"project_slug": "acme-agents", "org_slug": "acme"})
        if method == "POST":
            assert body is not None
            if body["call_id"] in self.calls:
                return HttpReply(409, {"detail": "exists"})
            self.calls[body["call_id"]] = {**body, "status": {"requested_at": "2026-01-01T00:00:00Z"}}
            return HttpReply(200, self.calls[body["call_id"]])
        call = self.calls.get(path.rsplit("/", 1)[1])
        return HttpReply(200, call) if call is not None else HttpReply(404, {"detail": "not found"})

    def posts(self) -> list[dict[str, Any]]:
        return [body for method, _, body, _ in self.ctx.requests if method == "POST" and body is not None]

    def respond(self, call_id: str, **status: Any) -> None:
        self.calls[call_id]["status"].update({"responded_at": "2026-01-01T00:05:00Z", **status})


def run(coro):
    return asyncio.run(coro)


def reconcile(ctx: FakeContext, kind: Kind, name: str):
    return run(registry()[kind].reconcile(name, ctx))


def world(*replies, extra: str = "", key: str = KEY) -> tuple[FakeContext, FakeHumanLayer]:
    mcp = FakeMCP()
    mcp.connect("srv", COUNT)
    ctx = FakeContext(
        "\n---\n".join(p for p in (LLM, CHANNELS, AGENT, TASK, extra) if p),
        llm=FakeLLM(list(replies)),
        mcp=mcp,
        environ={"API_KEY": "k", "HUMANLAYER_API_KEY": key},
        settings=Settings(humanlayer_url=BASE, humanlayer_poll=5.0),
    )
    humanlayer = FakeHumanLayer(ctx)
    ready(ctx, Kind.LLM, "gpt")
    for channel in ("team", "ops", "boss"):
        reconcile(ctx, Kind.ContactChannel, channel)
    if extra:
        reconcile(ctx, Kind.MCPServer, "srv")
    reconcile(ctx, Kind.Agent, "helper")
    return ctx, humanlayer


def the_call(ctx: FakeContext, index: int = 1) -> ToolCall:
    task = ctx.observed(Kind.Task, "t1")
    assert isinstance(task, Task)
    call = ctx.observed(Kind.ToolCall, toolcall_name("t1", task.status.tool_call_request_id, index))
    assert isinstance(call, ToolCall)
    return call


def ask(ctx: FakeContext) -> ToolCall:
    reconcile(ctx, Kind.Task, "t1")
    reconcile(ctx, Kind.ToolCall, the_call(ctx).metadata.name)
    return the_call(ctx)


# -- the catalog ----------------------------------------------------------------------------------


def test_the_agent_offers_one_human_contact_tool_per_ready_channel() -> None:
    ctx, _ = world(final("ok"))
    agent = ctx.observed(Kind.Agent, "helper")
    assert isinstance(agent, Agent)
    assert agent.status.status == "Ready"
    assert [(c.name, c.type) for c in agent.status.valid_human_contact_channels] == [
        ("team", "git"),
        ("ops", "slack"),
        ("boss", "email"),
    ]
    reconcile(ctx, Kind.Task, "t1")
    tools = {t.name: t for t in ctx.llm.requests[0][2]}
    assert set(tools) == {"team__human_contact", "ops__human_contact", "boss__human_contact"}
    assert tools["ops__human_contact"].description == "the on-call engineers"
    assert tools["boss__human_contact"].description == "the budget owner"
    assert tools["team__human_contact"].description.startswith("Ask a human a question")
    assert tools["team__human_contact"].parameters["required"] == ["message"]


# -- questions through git ------------------------------------------------------------------------


def test_a_git_question_waits_on_a_branch_a_person_can_answer_from() -> None:
    ctx, _ = world(tool_calls(("team__human_contact", '{"message": "Which city?\\nWe have 3 options."}')))
    call = ask(ctx)
    assert (call.spec.tool_type, call.status.phase) == ("HumanContact", "AwaitingHumanInput")
    assert call.status.human_contact.branch == f"acp/questions/{call.metadata.name}"
    assert call.status.human_contact.channel == "team"
    document, message = ctx.questions[call.metadata.name]
    assert document["kind"] == "HumanResponse"
    assert document["spec"] == {
        "task": "t1",
        "toolCall": call.metadata.name,
        "question": "Which city?\nWe have 3 options.",
        "response": "",
    }
    assert message.startswith("Question from task t1: Which city?\n")
    assert "Plan the offsite." in message
    assert f"gitops-acp respond {call.metadata.name}" in message
    assert response_path(call.metadata.name) in message


def test_an_answer_merged_on_main_is_the_result_with_who_answered() -> None:
    ctx, _ = world(tool_calls(("team__human_contact", '{"message": "Which city?"}')), final("Lisbon it is"))
    call = ask(ctx)
    document, _ = ctx.questions[call.metadata.name]
    ctx.responses[call.metadata.name] = Decision(
        spec={**document["spec"], "response": "Lisbon"},
        decided_by="Alice <alice@example.com>",
        decided_at=ctx.clock + 60,
        fast_forward=False,
    )
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    call = the_call(ctx)
    assert (call.status.phase, call.status.result) == ("Succeeded", "Lisbon")
    assert call.status.human_contact.responded_by == "Alice <alice@example.com>"
    assert call.status.human_contact.responded_at.startswith("2027-01-15T08:")
    assert call.status.status_detail == "Answered by Alice <alice@example.com> (commit author)"
    assert call.status.human_contact.responded_via == "commit author"
    reconcile(ctx, Kind.Task, "t1")
    assert ctx.llm.requests[1][1][-1] == {"role": "tool", "toolCallId": "call_1", "content": "Lisbon"}


@pytest.mark.parametrize(
    ("human", "error"),
    [
        ("delete", "the question was closed without an answer"),
        ("timeout", "nobody answered within 1h"),
        ("empty", "was merged without a response"),
    ],
)
def test_unanswered_questions_end_with_a_reason_the_model_reads(human: str, error: str) -> None:
    ctx, _ = world(tool_calls(("team__human_contact", '{"message": "Which city?"}')), final("ok"))
    name = ask(ctx).metadata.name
    if human == "delete":
        ctx.branches.clear()
    elif human == "timeout":
        waiting = reconcile(ctx, Kind.ToolCall, name)
        assert (waiting.requeue_after, waiting.progress) == (pytest.approx(3600, abs=1), False)
        ctx.clock += 3601
    else:
        document, _ = ctx.questions[name]
        ctx.responses[name] = Decision(
            spec=document["spec"], decided_by="A <a@x>", decided_at=0, fast_forward=False
        )
    reconcile(ctx, Kind.ToolCall, name)
    call = the_call(ctx)
    assert call.status.phase == "Failed"
    assert error in call.status.error
    reconcile(ctx, Kind.Task, "t1")
    assert ctx.llm.requests[1][1][-1]["content"] == f"Error: {call.status.error}"


def test_question_branches_on_a_real_repository(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = {"apiVersion": "acp.gitops.dev/v1alpha1", "kind": "HumanResponse", "spec": {"response": ""}}
    main = git(repo, "rev-parse", "main")
    with GitRepo.open(repo) as r:
        branch = propose(
            r, main="main", toolcall="t-a-tc-01", document=document, message="Q", identity=RECONCILER
        )
        assert read_response(r, main="main", toolcall="t-a-tc-01", reconciler=RECONCILER) is None
    assert (branch, git(repo, "rev-parse", "main")) == ("acp/questions/t-a-tc-01", main)
    assert git(repo, "status", "--porcelain") == ""
    git(repo, "checkout", "-q", branch)
    (repo / "responses/t-a-tc-01.yaml").write_text(yaml.safe_dump({**document, "spec": {"response": "yes"}}))
    git(repo, "commit", "-qam", "answer")
    git(repo, "checkout", "-q", "main")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Alice")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "alice@example.com")
    git(repo, "merge", "--no-ff", "-q", "-m", "merge", branch)
    with GitRepo.open(repo) as r:
        found = read_response(r, main="main", toolcall="t-a-tc-01", reconciler=RECONCILER)
    assert found is not None
    assert (found.spec["response"], found.decided_by) == ("yes", "Alice <alice@example.com>")


# -- ContactChannel validation against HumanLayer -------------------------------------------------


def test_a_slack_channel_is_ready_with_its_project_after_one_real_request() -> None:
    ctx, _ = world()
    channel = ctx.observed(Kind.ContactChannel, "ops")
    assert isinstance(channel, ContactChannel)
    assert (channel.status.status, channel.status.project_slug, channel.status.org_slug) == (
        "Ready",
        "acme-agents",
        "acme",
    )
    method, url, _, headers = ctx.requests[0]
    assert (method, url, headers["Authorization"]) == (
        "GET",
        f"{BASE}/humanlayer/v1/project",
        f"Bearer {KEY}",
    )


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (
            HttpReply(401, {"detail": "invalid"}),
            'HumanLayer refused the API key (401): check secret "humanlayer"',
        ),
        (
            OSError("connection refused"),
            "cannot reach HumanLayer at http://humanlayer.test/humanlayer/v1/project",
        ),
        (HttpReply(500, {"error": "boom"}), "HumanLayer answered 500 to GET"),
    ],
)
def test_a_channel_whose_key_fails_is_an_error_that_names_the_secret_not_the_key(reply, detail) -> None:
    ctx, humanlayer = world()
    humanlayer.script = [reply]
    result = reconcile(ctx, Kind.ContactChannel, "ops")
    channel = ctx.observed(Kind.ContactChannel, "ops")
    assert (channel.status.status, channel.status.ready) == ("Error", False)
    assert detail in channel.status.status_detail
    assert KEY not in channel.status.status_detail
    assert (result.requeue_after, result.progress) == (30.0, False)


def test_a_channel_key_is_checked_against_its_channel() -> None:
    extra = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: scoped}
spec:
  type: slack
  channelApiKeyFrom: {secretKeyRef: {name: humanlayer, key: HUMANLAYER_API_KEY}}
  channelId: ch-42
  slack: {channelOrUserID: C0OPS}
"""
    ctx, humanlayer = world()
    ctx.declare(extra, "scoped.yaml")
    humanlayer.script = [HttpReply(404, {"detail": "nope"})]
    reconcile(ctx, Kind.ContactChannel, "scoped")
    assert ctx.requests[-1][1] == f"{BASE}/humanlayer/v1/contact_channel/ch-42"
    assert "no contact channel ch-42" in ctx.observed(Kind.ContactChannel, "scoped").status.status_detail
    humanlayer.script = [HttpReply(200, {"id": "ch-42", "project_slug": "p", "org_slug": "o"})]
    reconcile(ctx, Kind.ContactChannel, "scoped")
    status = ctx.observed(Kind.ContactChannel, "scoped").status
    assert (status.status, status.verified_channel_id, status.project_slug) == ("Ready", "ch-42", "p")


def test_a_missing_key_secret_is_an_error_naming_the_field() -> None:
    ctx, _ = world()
    ctx.declare(CHANNELS.replace("HUMANLAYER_API_KEY", "NOT_THERE"), "channels.yaml")
    reconcile(ctx, Kind.ContactChannel, "boss")
    detail = ctx.observed(Kind.ContactChannel, "boss").status.status_detail
    assert 'ContactChannel "boss"' in detail
    assert "NOT_THERE" in detail


# -- approvals through HumanLayer -----------------------------------------------------------------


def approval_world(*replies) -> tuple[FakeContext, FakeHumanLayer, ToolCall]:
    agent = AGENT.replace(
        "humanContactChannels: [{name: team}, {name: ops}, {name: boss}]", "mcpServers: [{name: srv}]"
    )
    ctx, humanlayer = world(*replies, extra=SERVER)
    ctx.declare(agent, "agent.yaml")
    reconcile(ctx, Kind.Agent, "helper")
    seen: list[str | None] = []
    inner = humanlayer.__call__

    def spy(method: str, url: str, body: dict[str, Any] | None) -> HttpReply | OSError:
        if method == "POST":  # the call id must be committed before HumanLayer hears of it
            task = ctx.observed(Kind.Task, "t1")
            name = toolcall_name("t1", task.status.tool_call_request_id, 1)
            seen.append(ctx.observed(Kind.ToolCall, name).status.external_call_id)
        return inner(method, url, body)

    ctx.replies = spy
    humanlayer.seen = seen  # type: ignore[attr-defined]
    return ctx, humanlayer, ask(ctx)


def test_a_slack_approval_commits_its_call_id_before_asking_and_runs_once_approved() -> None:
    ctx, humanlayer, call = approval_world(tool_calls(("srv__count", '{"n": 1}')))
    assert call.status.phase == "AwaitingHumanApproval"
    call_id = call.status.external_call_id
    assert call_id
    assert humanlayer.seen == [call_id]
    [posted] = humanlayer.posts()
    assert posted == {
        "run_id": call.metadata.name,
        "call_id": call_id,
        "spec": {
            "fn": "srv__count",
            "kwargs": {"n": 1},
            "channel": {
                "slack": {
                    "channel_or_user_id": "C0OPS",
                    "context_about_channel_or_user": "the on-call engineers",
                }
            },
        },
    }
    assert ctx.mcp.calls == []
    waiting = reconcile(ctx, Kind.ToolCall, call.metadata.name)  # nobody answered yet
    assert (waiting.requeue_after, waiting.progress) == (5.0, False)
    humanlayer.respond(call_id, approved=True, comment="go")
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    call = the_call(ctx)
    assert ctx.phases(Kind.ToolCall, call.metadata.name)[-3:] == [
        "ReadyToExecuteApprovedTool",
        "Running",
        "Succeeded",
    ]
    assert (call.status.approval.decided_by, call.status.approval.comment) == ("slack C0OPS", "go")
    assert call.status.approval.decided_at == "2026-01-01T00:05:00.000000Z"
    assert len(ctx.mcp.calls) == 1
    assert len(humanlayer.posts()) == 1


def test_a_slack_rejection_gives_the_model_the_comment() -> None:
    ctx, humanlayer, call = approval_world(tool_calls(("srv__count", "{}")), final("ok"))
    humanlayer.respond(call.status.external_call_id, approved=False, comment="not on a Friday")
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    call = the_call(ctx)
    assert (call.status.phase, call.status.result) == ("ToolCallRejected", "Rejected: not on a Friday")
    assert ctx.mcp.calls == []
    reconcile(ctx, Kind.Task, "t1")
    assert ctx.llm.requests[1][1][-1]["content"] == "Rejected: not on a Friday"


def test_a_request_humanlayer_never_received_is_posted_again_with_the_same_id() -> None:
    ctx, humanlayer, call = approval_world(tool_calls(("srv__count", "{}")))
    call_id = call.status.external_call_id
    humanlayer.calls.clear()  # as if the process died between the commit and the POST
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert [p["call_id"] for p in humanlayer.posts()] == [call_id, call_id]
    assert call_id in humanlayer.calls


def test_api_errors_back_off_honour_retry_after_and_show_in_status() -> None:
    ctx, humanlayer, call = approval_world(tool_calls(("srv__count", "{}")))
    humanlayer.script = [HttpReply(503, None, retry_after=42.0)]
    waiting = reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert waiting.requeue_after == 42.0
    assert "last error (retrying): HumanLayer answered 503 to GET" in the_call(ctx).status.status_detail
    humanlayer.script = [OSError("connection reset")]
    waiting = reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert waiting.requeue_after == 15.0
    waiting = reconcile(ctx, Kind.ToolCall, call.metadata.name)
    assert waiting.requeue_after == 5.0
    assert "last error" not in the_call(ctx).status.status_detail


def test_a_request_humanlayer_refuses_ends_the_call() -> None:
    ctx, humanlayer, call = approval_world(tool_calls(("srv__count", "{}")))
    humanlayer.calls.clear()
    humanlayer.script = [HttpReply(404, None), HttpReply(422, {"detail": "kwargs too large"})]
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    call = the_call(ctx)
    assert (call.status.phase, call.status.status) == ("ErrorRequestingHumanApproval", "Error")
    assert call.status.error == "HumanLayer refused the request (422): kwargs too large"


def test_an_approval_channel_in_error_rejects_with_its_reason() -> None:
    agent = AGENT.replace(
        "humanContactChannels: [{name: team}, {name: ops}, {name: boss}]", "mcpServers: [{name: srv}]"
    )
    ctx, humanlayer = world(tool_calls(("srv__count", "{}")), extra=SERVER, key="some-other-key")
    ctx.declare(agent, "agent.yaml")
    reconcile(ctx, Kind.Agent, "helper")
    call = ask(ctx)
    assert call.status.phase == "ToolCallRejected"
    assert call.status.result.startswith(
        'Rejected: approval channel "ops" is not usable: HumanLayer refused the API key'
    )
    assert humanlayer.posts() == []


# -- questions through HumanLayer -----------------------------------------------------------------


def test_an_email_question_is_answered_through_humanlayer() -> None:
    ctx, humanlayer = world(tool_calls(("boss__human_contact", '{"message": "Budget?"}')), final("ok"))
    call = ask(ctx)
    assert call.status.phase == "AwaitingHumanInput"
    [posted] = humanlayer.posts()
    assert posted["spec"] == {
        "msg": "Budget?",
        "channel": {"email": {"address": "boss@example.com", "context_about_user": "the budget owner"}},
    }
    assert posted["call_id"] == call.status.external_call_id
    assert ctx.requests[-1][1] == f"{BASE}/humanlayer/v1/contact_requests"
    humanlayer.respond(call.status.external_call_id, response="5000 EUR")
    reconcile(ctx, Kind.ToolCall, call.metadata.name)
    call = the_call(ctx)
    assert (call.status.phase, call.status.result) == ("Succeeded", "5000 EUR")
    assert call.status.human_contact.responded_by == "email boss@example.com"
    for _, _, body, _headers in ctx.requests:
        assert KEY not in str(body)
    assert KEY not in str(ctx.checkpoints)


# -- serve's flags --------------------------------------------------------------------------------


def test_the_humanlayer_url_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from gitops_acp.cli.commands.serve import options_from
    from gitops_acp.cli.main import build_parser
    from gitops_acp.errors import UserError

    monkeypatch.delenv("HUMANLAYER_API_BASE", raising=False)
    assert (
        options_from(build_parser().parse_args(["serve"])).settings.humanlayer_url
        == "https://api.humanlayer.dev"
    )
    monkeypatch.setenv("HUMANLAYER_API_BASE", "http://127.0.0.1:9999")
    settings = options_from(build_parser().parse_args(["serve", "--humanlayer-poll-interval", "2"])).settings
    assert (settings.humanlayer_url, settings.humanlayer_poll) == ("http://127.0.0.1:9999", 2.0)
    flagged = build_parser().parse_args(["serve", "--humanlayer-url", "https://hl.internal"])
    assert options_from(flagged).settings.humanlayer_url == "https://hl.internal"
    with pytest.raises(UserError, match="--humanlayer-url ftp://x: expected an http"):
        options_from(build_parser().parse_args(["serve", "--humanlayer-url", "ftp://x"]))


def test_a_channel_with_approvers_takes_answers_only_from_them() -> None:
    ctx, _ = world(tool_calls(("team__human_contact", '{"message": "Which city?"}')))
    ctx.declare(
        CHANNELS.replace("git: {timeout: 1h}", "git: {approvers: [bob@example.com]}"), "channels.yaml"
    )
    name = ask(ctx).metadata.name
    document, _ = ctx.questions[name]
    spec = {**document["spec"], "response": "Lisbon"}
    ctx.responses[name] = Decision(
        spec=spec, decided_by="Mallory <m@example.com>", decided_at=0, fast_forward=False
    )
    reconcile(ctx, Kind.ToolCall, name)
    call = the_call(ctx)
    assert call.status.phase == "Failed"
    assert call.status.error == (
        "the answer came from Mallory <m@example.com>, who may not answer this channel"
        " (approvers: bob@example.com)"
    )

    ctx, _ = world(tool_calls(("team__human_contact", '{"message": "Which city?"}')))
    ctx.declare(
        CHANNELS.replace("git: {timeout: 1h}", "git: {approvers: [bob@example.com]}"), "channels.yaml"
    )
    name = ask(ctx).metadata.name
    ctx.responses[name] = Decision(
        spec=spec, decided_by="Bob <bob@example.com>", decided_at=0, fast_forward=False
    )
    reconcile(ctx, Kind.ToolCall, name)
    assert (the_call(ctx).status.phase, the_call(ctx).status.result) == ("Succeeded", "Lisbon")


def test_a_question_to_a_channel_that_broke_since_fails_with_its_reason() -> None:
    ctx, humanlayer = world(tool_calls(("ops__human_contact", '{"message": "Deploy?"}')))
    reconcile(ctx, Kind.Task, "t1")  # the model asks while the channel was fine
    humanlayer.key = "rotated-elsewhere"
    reconcile(ctx, Kind.ContactChannel, "ops")
    reconcile(ctx, Kind.ToolCall, the_call(ctx).metadata.name)
    call = the_call(ctx)
    assert call.status.phase == "Failed"
    assert call.status.error.startswith(
        'contact channel "ops" is not usable: HumanLayer refused the API key (401)'
    )
    assert humanlayer.posts() == []
