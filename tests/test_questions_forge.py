"""Questions to humans on a channel with a forge: transitions against the in-memory Context and a real
client talking HTTP to the fake forge (backed by a real git repository)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2
import pytest

from gitops_acp.controllers import registry
from gitops_acp.controllers.base import Result
from gitops_acp.errors import PermanentForgeError
from gitops_acp.humans import forges
from gitops_acp.humans.approvals import Decision
from gitops_acp.resources.meta import Kind
from gitops_acp.resources.models import ToolCall
from tests.conftest import git
from tests.fakes import FakeContext, FakeLLM, FakeMCP, final, ready, tool_calls
from tests.fakes.forges import FakeForge, Scripted
from tests.test_humans import LLM, TASK
from tests.test_tools import call_named

CHANNEL = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: team}
spec:
  git:
    forge: github
    apiUrl: API_URL
    repository: acme/agents
    tokenFrom: {secretKeyRef: {name: forge, key: FORGE_TOKEN}}
    labels: [agents]
    reviewers: [bob]
"""
AGENT = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Agent
metadata: {name: helper}
spec:
  llmRef: {name: gpt}
  system: You help.
  humanContactChannels: [{name: team}]
"""
QUESTION = "Which city should the offsite be in? " + "We have three options, all in Europe.\nLisbon?"

Body = Callable[[FakeContext, FakeForge, ToolCall], Awaitable[None]]


async def reconcile(ctx: FakeContext, kind: Kind, name: str) -> Result:
    return await registry()[kind].reconcile(name, ctx)


def scenario(repo: Path, body: Body, *, approvers: list[str] | None = None) -> None:
    """Run `body` with task t1's `team__human_contact` call (still Pending) on the fake's GitHub."""
    channel = CHANNEL + (f"    approvers: [{', '.join(approvers)}]\n" if approvers else "")

    async def main() -> None:
        with FakeForge(repo) as fake:
            async with httpx2.AsyncClient() as http:
                ctx = FakeContext(
                    "\n---\n".join((LLM, channel.replace("API_URL", fake.api_url("github")), AGENT, TASK)),
                    llm=FakeLLM(
                        [tool_calls(("team__human_contact", json.dumps({"message": QUESTION}))), final("ok")]
                    ),
                    mcp=FakeMCP(),
                    environ={"API_KEY": "k"},
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
                for kind, name in ((Kind.ContactChannel, "team"), (Kind.Agent, "helper"), (Kind.Task, "t1")):
                    await reconcile(ctx, kind, name)
                call = call_named(ctx)
                assert call.status.phase == "Pending"
                # FakeContext proposes without git: give the real repository the branch a forge needs.
                git(repo, "branch", f"acp/questions/{call.metadata.name}")
                await body(ctx, fake, call)

    asyncio.run(main())


def test_the_pull_request_is_opened_and_recorded_in_the_same_checkpoint(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        before = len(ctx.checkpoints)
        await reconcile(ctx, Kind.ToolCall, name)
        waiting = call_named(ctx)
        assert len(ctx.checkpoints) == before + 1  # the phase and the pull request, in one commit
        assert waiting.status.phase == "AwaitingHumanInput"
        (pull,) = fake.pulls["github"].values()
        contact = waiting.status.human_contact
        assert (contact.branch, contact.pull_request) == (f"acp/questions/{name}", pull.number)
        assert contact.pull_request_url.endswith(f"/pull/{pull.number}")
        assert f"#{pull.number}" in waiting.status.status_detail
        assert pull.head == f"acp/questions/{name}"
        assert (
            pull.title
            == "Question from task t1: Which city should the offsite be in? We have three options, …"
        )
        assert "> Which city should the offsite be in?" in pull.body
        assert "\n> Lisbon?\n" in pull.body  # every line of the question quoted
        assert "**Task request:** Plan the offsite." in pull.body
        assert f"`responses/{name}.yaml`" in pull.body
        assert "close it without merging" in pull.body
        assert (pull.base, pull.labels, pull.reviewers) == ("main", ["agents"], ["bob"])
        _, message = ctx.questions[name]
        assert message.startswith(pull.title + "\n")  # the branch's commit says the same

    scenario(repo, body)


def test_a_crash_after_opening_finds_the_same_pull_request(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        # The previous run opened the pull request, then died before committing its number.
        opened = await ctx.forges["team"].open_pull_request(  # type: ignore[union-attr]
            head=f"acp/questions/{call.metadata.name}",
            base="main",
            title="t",
            body="b",
            labels=[],
            reviewers=[],
        )
        await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        assert call_named(ctx).status.human_contact.pull_request == opened.number
        assert len(fake.pulls["github"]) == 1

    scenario(repo, body)


def test_an_unreachable_forge_keeps_the_question_pending_then_opens(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        ctx.forges["team"].attempts = 1  # type: ignore[union-attr]
        fake.script = [Scripted(status=503)]
        result = await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        pending = call_named(ctx)
        assert pending.status.phase == "Pending"
        assert "Opening the pull request failed, will retry in" in pending.status.status_detail
        assert (result.requeue_after, result.progress) == (10.0, False)  # the client's max_wait
        await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        assert call_named(ctx).status.phase == "AwaitingHumanInput"
        assert len(fake.pulls["github"]) == 1

    scenario(repo, body)


def test_a_rate_limit_waits_as_long_as_the_forge_says(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        fake.script = [Scripted(status=429, headers={"Retry-After": "120"})]
        result = await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        assert call_named(ctx).status.phase == "Pending"
        assert result.requeue_after == pytest.approx(120, abs=2)
        assert fake.pulls["github"] == {}

    scenario(repo, body)


def test_a_refusal_is_error_requesting_human_input_which_the_model_reads(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        ctx.forges["team"].token = "revoked"  # type: ignore[union-attr]
        await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        failed = call_named(ctx)
        assert failed.status.phase == "ErrorRequestingHumanInput"
        assert failed.status.error.startswith("could not open the question's pull request: ")
        assert "token was refused" in failed.status.error
        assert "revoked" not in failed.status.error
        assert fake.pulls["github"] == {}
        await reconcile(ctx, Kind.Task, "t1")
        assert ctx.llm.requests[1][1][-1]["content"] == f"Error: {failed.status.error}"

    scenario(repo, body)


def test_closed_without_merging_fails_the_question_after_the_next_poll(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        waiting = await reconcile(ctx, Kind.ToolCall, name)
        assert waiting.requeue_after is not None
        assert 55 < waiting.requeue_after <= 60  # the forge poll interval, not "wait forever"
        assert not waiting.progress
        number = call_named(ctx).status.human_contact.pull_request
        seen = len(fake.requests)
        fake.close("github", number)
        await reconcile(ctx, Kind.ToolCall, name)  # within the poll interval: the forge is not asked
        assert len(fake.requests) == seen
        assert call_named(ctx).status.phase == "AwaitingHumanInput"
        ctx.forges["team"].invalidate()  # type: ignore[union-attr]  # what a webhook does
        await reconcile(ctx, Kind.ToolCall, name)
        failed = call_named(ctx)
        assert (failed.status.phase, failed.status.error) == (
            "Failed",
            "the question was closed without an answer",
        )
        assert failed.status.human_contact.pull_request == number

    scenario(repo, body)


def answer(ctx: FakeContext, name: str, *, author: str) -> None:
    document, _ = ctx.questions[name]
    ctx.responses[name] = Decision(
        spec={**document["spec"], "response": "Lisbon"},
        decided_by=author,
        decided_at=ctx.clock,
        fast_forward=False,
    )


def test_who_answered_is_who_the_forge_says_merged(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        number = call_named(ctx).status.human_contact.pull_request
        fake.merge("github", number, by=("Mallory", "mallory@example.com"), login="bob")
        answer(ctx, name, author="Mallory <mallory@example.com>")
        await reconcile(ctx, Kind.ToolCall, name)
        answered = call_named(ctx)
        assert (answered.status.phase, answered.status.result) == ("Succeeded", "Lisbon")
        contact = answered.status.human_contact
        assert (contact.responded_by, contact.responded_via) == ("bob", "github merged_by")
        assert answered.status.status_detail == "Answered by bob (github merged_by)"
        assert fake.pulls["github"][number].comments == []  # merged: left alone
        assert ctx.fake_humans.deleted == [f"acp/questions/{name}"]

    scenario(repo, body, approvers=["bob"])


def test_an_answer_pushed_to_main_by_a_non_approver_fails_and_closes_the_pull_request(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        number = call_named(ctx).status.human_contact.pull_request
        answer(ctx, name, author="Bob <bob@example.com>")  # pushed straight to main, claiming Bob
        await reconcile(ctx, Kind.ToolCall, name)
        failed = call_named(ctx)
        assert failed.status.phase == "Failed"
        assert failed.status.error.startswith(
            f"the answer cannot count: github cannot say who merged it (pull request #{number} is open"
        )
        pull = fake.pulls["github"][number]
        assert pull.state == "closed"
        (comment,) = pull.comments
        assert comment.startswith(f"gitops-acp: question `{name}` was ended without an answer: the answer")
        assert ctx.fake_humans.deleted == [f"acp/questions/{name}"]

    scenario(repo, body, approvers=["bob"])


def test_a_revoked_token_while_waiting_is_noted_and_the_question_keeps_waiting(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        ctx.forges["team"] = PermanentForgeError('ContactChannel "team": secret "forge" has no key')
        result = await reconcile(ctx, Kind.ToolCall, name)
        waiting = call_named(ctx)
        assert waiting.status.phase == "AwaitingHumanInput"
        assert waiting.status.status_detail.startswith(
            "Waiting for an answer; the pull request's state cannot be read: "
        )
        assert result.requeue_after == ctx.settings.error_retry

    scenario(repo, body)
