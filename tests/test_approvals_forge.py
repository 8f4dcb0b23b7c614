"""The approval and channel controllers with a forge: transitions against the in-memory Context and a
real client talking HTTP to the fake forge (backed by a real git repository)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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
from tests.fakes import FakeContext, FakeLLM, FakeMCP, ready, tool_calls
from tests.fakes.forges import FakeForge, Scripted
from tests.fakes.openapi import GitHubOpenAPI
from tests.test_tools import AGENT, COUNT, ECHO, LLM, SERVER, TASK, call_named

CHANNEL = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: reviewers}
spec:
  git:
    forge: FORGE
    apiUrl: API_URL
    repository: acme/agents
    tokenFrom: {secretKeyRef: {name: forge, key: FORGE_TOKEN}}
    labels: [acp-approval]
    reviewers: [alice]
"""

Body = Callable[[FakeContext, FakeForge, ToolCall], Awaitable[None]]


async def reconcile(ctx: FakeContext, kind: Kind, name: str) -> Result:
    return await registry()[kind].reconcile(name, ctx)


def scenario(
    repo: Path,
    body: Body,
    *,
    forge: str = "github",
    approvers: list[str] | None = None,
    openapi: GitHubOpenAPI | None = None,
    timeout: str | None = None,
) -> None:
    """Run `body` with a task whose `srv__count` call (still Pending) needs approval on the fake `forge`.

    With `openapi`, every GitHub exchange is checked against GitHub's OpenAPI description.
    """
    channel = CHANNEL.replace("FORGE", forge)
    if approvers is not None:
        channel += f"    approvers: [{', '.join(approvers)}]\n"
    if timeout is not None:
        channel += f"    timeout: {timeout}\n"

    async def main() -> None:
        with FakeForge(repo, openapi=openapi) as fake:
            async with httpx2.AsyncClient() as http:
                server = SERVER + "  approvalContactChannel: {name: reviewers}\n"
                mcp = FakeMCP()
                mcp.connect("srv", ECHO, COUNT)
                ctx = FakeContext(
                    "\n---\n".join(
                        (LLM, server, AGENT, TASK, channel.replace("API_URL", fake.api_url(forge)))
                    ),
                    llm=FakeLLM([tool_calls(("srv__count", '{"label": "x|y"}'))]),
                    mcp=mcp,
                    environ={"API_KEY": "k", "SRV_TOKEN": "t"},
                )
                ctx.forges["reviewers"] = forges.connect(
                    forge,
                    api_url=forges.api_url_for(forge, fake.api_url(forge)),
                    repository=fake.repository,
                    token=fake.token,
                    http=http,
                    budget=forges.RateBudget(),
                )
                ready(ctx, Kind.LLM, "gpt")
                for kind, name in ((Kind.MCPServer, "srv"), (Kind.Agent, "helper"), (Kind.Task, "t1")):
                    await reconcile(ctx, kind, name)
                call = call_named(ctx)
                # FakeContext proposes without git: give the real repository the branch a forge needs.
                git(repo, "branch", f"acp/approvals/{call.metadata.name}")
                await body(ctx, fake, call)
            assert fake.violations == []

    asyncio.run(main())


def test_the_pull_request_is_opened_and_recorded_in_the_same_checkpoint(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        before = len(ctx.checkpoints)
        await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        waiting = call_named(ctx)
        assert len(ctx.checkpoints) == before + 1
        assert waiting.status.phase == "AwaitingHumanApproval"
        (pull,) = fake.pulls["github"].values()
        assert waiting.status.approval.pull_request == pull.number
        assert waiting.status.approval.pull_request_url.endswith(f"/pull/{pull.number}")
        assert pull.title == "Approve srv__count for task t1"
        assert '| `label` | `"x\\|y"` |' in pull.body  # a pipe stays inside its cell
        assert "**Task request:** Use the tools." in pull.body
        assert "`idempotentHint: false`" in pull.body
        assert (pull.labels, pull.reviewers) == (["acp-approval"], ["alice"])

    scenario(repo, body)


def test_a_crash_after_opening_finds_the_same_pull_request(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        # The previous run opened the pull request, then died before committing its number.
        opened = await ctx.forges["reviewers"].open_pull_request(  # type: ignore[union-attr]
            head=f"acp/approvals/{call.metadata.name}",
            base="main",
            title="t",
            body="b",
            labels=[],
            reviewers=[],
        )
        await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        assert call_named(ctx).status.approval.pull_request == opened.number
        assert len(fake.pulls["github"]) == 1

    scenario(repo, body)


def test_an_unreachable_forge_keeps_the_call_pending_then_opens(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        ctx.forges["reviewers"].attempts = 1  # type: ignore[union-attr]
        fake.script = [Scripted(status=503)]
        result = await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        pending = call_named(ctx)
        assert pending.status.phase == "Pending"
        assert "Opening the pull request failed, will retry" in pending.status.status_detail
        assert result.requeue_after
        assert not result.progress
        await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        assert call_named(ctx).status.phase == "AwaitingHumanApproval"
        assert len(fake.pulls["github"]) == 1

    scenario(repo, body)


def test_a_refusal_is_error_requesting_human_approval(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        ctx.forges["reviewers"] = PermanentForgeError('ContactChannel "reviewers": secret "forge" has no key')
        await reconcile(ctx, Kind.ToolCall, call.metadata.name)
        failed = call_named(ctx)
        assert failed.status.phase == "ErrorRequestingHumanApproval"
        assert failed.status.error.startswith("could not open the approval pull request: ")
        assert fake.pulls["github"] == {}

    scenario(repo, body)


def test_closed_rejects_and_open_waits_for_the_next_poll(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        waiting = await reconcile(ctx, Kind.ToolCall, name)
        assert waiting.requeue_after is not None
        assert 55 < waiting.requeue_after <= 60
        assert not waiting.progress
        number = call_named(ctx).status.approval.pull_request
        seen = len(fake.requests)
        fake.close("github", number)
        await reconcile(ctx, Kind.ToolCall, name)  # within the poll interval: the forge is not asked
        assert len(fake.requests) == seen
        assert call_named(ctx).status.phase == "AwaitingHumanApproval"
        ctx.forges["reviewers"].invalidate()  # type: ignore[union-attr]
        await reconcile(ctx, Kind.ToolCall, name)
        rejected = call_named(ctx)
        assert (rejected.status.phase, rejected.status.result) == (
            "ToolCallRejected",
            "Rejected: closed without merging",
        )

    scenario(repo, body)


def decide(ctx: FakeContext, name: str, *, author: str, decision: str = "approved", commit: str = "") -> None:
    """Put the approval file on main (as FakeContext sees main), committed by `author` in `commit`."""
    document, _ = ctx.proposals[name]
    ctx.decisions[name] = Decision(
        spec={**document["spec"], "decision": decision},
        decided_by=author,
        decided_at=ctx.clock,
        fast_forward=False,
        commit=commit,
    )


MALLORY = ("Mallory", "mallory@example.com")


@pytest.mark.parametrize("forge", ["github", "gitea", "gitlab"])
@pytest.mark.parametrize(
    ("merger", "reviews", "author", "phase", "by", "via"),
    [
        # The commit claims Mallory; the forge says alice merged: alice decided.
        ("alice", [], "Mallory <mallory@example.com>", "Succeeded", "alice", "{forge} merged_by"),
        # The commit claims Alice; the forge says mallory merged, and nobody listed approved.
        ("mallory", [("bob", "APPROVED")], "Alice <alice@example.com>", "ToolCallRejected", "mallory", None),
        # mallory merged, alice (an approver) approved in a review.
        ("mallory", [("alice", "APPROVED")], "Mallory <mallory@example.com>", "Succeeded", "alice", "review"),
        # alice approved, then asked for changes: her approval no longer counts (GitLab has no such state).
        (
            "mallory",
            [("alice", "APPROVED"), ("alice", "CHANGES_REQUESTED")],
            "X <x@x>",
            "ToolCallRejected",
            "",
            None,
        ),
    ],
)
def test_the_forge_says_who_decided_never_the_commit_author(
    repo: Path,
    github_openapi: GitHubOpenAPI,
    forge: str,
    merger: str,
    reviews: list[tuple[str, str]],
    author: str,
    phase: str,
    by: str,
    via: str | None,
) -> None:
    if forge == "gitlab" and any(state != "APPROVED" for _, state in reviews):
        pytest.skip("GitLab approvals have no 'changes requested'")

    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        number = call_named(ctx).status.approval.pull_request
        for login, state in reviews:
            fake.review(forge, number, login, state)
        merge = fake.merge(forge, number, by=MALLORY, login=merger)
        decide(ctx, name, author=author, commit=merge)  # the merge brought the file to main
        await reconcile(ctx, Kind.ToolCall, name)
        done = call_named(ctx)
        assert done.status.phase == phase
        approval = done.status.approval
        if phase == "Succeeded":
            assert approval.decided_by == by
            review = "gitlab approval" if forge == "gitlab" else f"{forge} review"
            assert approval.decided_via == (review if via == "review" else via.format(forge=forge))
        else:
            assert approval.decided_by == (merger or None)
            assert "none of them is one of the approvers (alice)" in done.status.result
            assert f"{merger} merged it" in done.status.result
        assert fake.pulls[forge][number].comments == []  # merged: left alone
        assert ctx.fake_humans.deleted == [f"acp/approvals/{name}"]

    scenario(repo, body, forge=forge, approvers=["alice"], openapi=github_openapi)


@pytest.mark.parametrize("forge", ["github", "gitea", "gitlab"])
def test_a_file_changed_on_main_after_the_merge_is_not_the_mergers_decision(
    repo: Path, github_openapi: GitHubOpenAPI, forge: str
) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        number = call_named(ctx).status.approval.pull_request
        merge = fake.merge(forge, number, by=("Alice", "alice@example.com"), login="alice")
        later = "f" * 40  # a push after the merge changed the file (e.g. rejected -> approved)
        assert later != merge
        decide(ctx, name, author="Alice <alice@example.com>", commit=later)
        await reconcile(ctx, Kind.ToolCall, name)
        rejected = call_named(ctx)
        assert rejected.status.phase == "ToolCallRejected"
        assert rejected.status.result == (
            f"Rejected: ffffffffffff changed the file after pull request #{number} was merged "
            f"({merge[:12]}): {forge} cannot say who made that change; approvers (alice) decide by "
            "merging the pull request"
        )
        assert rejected.status.approval.decided_by is None

    scenario(repo, body, forge=forge, approvers=["alice"], openapi=github_openapi)


@pytest.mark.parametrize("forge", ["github", "gitea", "gitlab"])
def test_a_file_on_main_without_a_merged_pull_request_is_refused_and_the_pull_request_closed(
    repo: Path, github_openapi: GitHubOpenAPI, forge: str
) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        number = call_named(ctx).status.approval.pull_request
        fake.review(forge, number, "alice")  # an approving review does not make a direct push count
        decide(ctx, name, author="Alice <alice@example.com>")  # a direct push to main, forging Alice
        await reconcile(ctx, Kind.ToolCall, name)
        rejected = call_named(ctx)
        assert rejected.status.phase == "ToolCallRejected"
        assert rejected.status.result == (
            f"Rejected: {forge} cannot say who merged it (pull request #{number} is open, not merged: "
            "the file reached main another way, e.g. a direct push); approvers (alice) decide by "
            "merging the pull request"
        )
        assert rejected.status.approval.decided_by is None
        pull = fake.pulls[forge][number]
        assert pull.state == "closed"
        (comment,) = pull.comments
        assert comment.startswith(f"gitops-acp: tool call `{name}` was rejected: {forge} cannot say")
        assert ctx.fake_humans.deleted == [f"acp/approvals/{name}"]

    scenario(repo, body, forge=forge, approvers=["alice"], openapi=github_openapi)


def test_without_approvers_a_decision_on_main_records_the_commit_author_and_closes_the_pull_request(
    repo: Path, github_openapi: GitHubOpenAPI
) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        number = call_named(ctx).status.approval.pull_request
        decide(ctx, name, author="Alice <a@example.com>")  # `gitops-acp approve` on a clone: PR open
        await reconcile(ctx, Kind.ToolCall, name)
        done = call_named(ctx)
        assert done.status.phase == "Succeeded"
        assert (done.status.approval.decided_by, done.status.approval.decided_via) == (
            "Alice <a@example.com>",
            "commit author",
        )
        pull = fake.pulls["github"][number]
        assert pull.state == "closed"
        assert pull.comments == [
            f"gitops-acp: tool call `{name}` was approved by Alice <a@example.com> (commit author).\n\n"
            "It was not decided by merging this pull request, so it is closed; the ToolCall's status "
            f"holds the record (`gitops-acp describe toolcall {name}`)."
        ]

    scenario(repo, body, openapi=github_openapi)


def test_a_forge_that_cannot_say_who_merged_leaves_the_call_waiting(
    repo: Path, github_openapi: GitHubOpenAPI
) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        ctx.forges["reviewers"].attempts = 1  # type: ignore[union-attr]
        number = call_named(ctx).status.approval.pull_request
        fake.merge("github", number, by=MALLORY, login="alice")
        decide(ctx, name, author="Alice <alice@example.com>")
        fake.script = [Scripted(status=503)]
        result = await reconcile(ctx, Kind.ToolCall, name)
        waiting = call_named(ctx)
        assert waiting.status.phase == "AwaitingHumanApproval"
        assert "asking the forge who merged failed, will retry" in waiting.status.status_detail
        assert (result.requeue_after, result.progress) == (10.0, False)  # the client's max_wait
        fake.script = [Scripted(status=401)]  # a revoked token: still never approves
        await reconcile(ctx, Kind.ToolCall, name)
        assert call_named(ctx).status.phase == "AwaitingHumanApproval"
        assert "the forge refuses to say who merged" in call_named(ctx).status.status_detail
        await reconcile(ctx, Kind.ToolCall, name)
        approved = call_named(ctx)
        assert approved.status.phase == "Succeeded"
        assert approved.status.approval.decided_by == "alice"

    scenario(repo, body, approvers=["alice"], openapi=github_openapi)


def test_a_timed_out_call_closes_its_pull_request_retried_until_the_forge_answers(
    repo: Path, github_openapi: GitHubOpenAPI
) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        number = call_named(ctx).status.approval.pull_request
        ctx.forges["reviewers"].attempts = 1  # type: ignore[union-attr]
        ctx.clock += 2 * 3600
        ctx.forges["reviewers"].invalidate()  # type: ignore[union-attr]
        fake.script = [Scripted(headers={}), Scripted(status=503)]  # the poll answers, the close does not
        result = await reconcile(ctx, Kind.ToolCall, name)
        rejected = call_named(ctx)
        assert (rejected.status.phase, rejected.status.result) == (
            "ToolCallRejected",
            "Rejected: approval timed out after 1h",
        )
        assert result.requeue_after is not None  # committed first; the cleanup is retried
        assert fake.pulls["github"][number].state == "open"
        assert ctx.fake_humans.deleted == []  # the branch goes only after the pull request
        checkpoints = len(ctx.checkpoints)
        assert (await reconcile(ctx, Kind.ToolCall, name)).requeue_after is None
        pull = fake.pulls["github"][number]
        assert pull.state == "closed"
        assert pull.comments == [
            f"gitops-acp: tool call `{name}` was rejected: approval timed out after 1h.\n\n"
            "It was not decided by merging this pull request, so it is closed; the ToolCall's status "
            f"holds the record (`gitops-acp describe toolcall {name}`)."
        ]
        assert ctx.fake_humans.deleted == [f"acp/approvals/{name}"]
        assert len(ctx.checkpoints) == checkpoints  # tidying commits nothing
        await reconcile(ctx, Kind.ToolCall, name)  # done: no second comment, no request
        assert len(pull.comments) == 1

    scenario(repo, body, openapi=github_openapi, timeout="1h")


@pytest.mark.parametrize(
    ("client", "status", "detail"),
    [
        ("good", "Ready", "github repository acme/agents reachable"),
        ("bad-token", "Error", "token was refused"),
        ("no-secret", "Error", "has no key FORGE_TOKEN"),
    ],
)
def test_the_channel_validates_token_and_repository(
    repo: Path, client: str, status: str, detail: str
) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        if client == "bad-token":
            ctx.forges["reviewers"].token = "nope"  # type: ignore[union-attr]
        if client == "no-secret":  # what Manager.forge raises when the secret does not resolve
            ctx.forges["reviewers"] = PermanentForgeError(
                'ContactChannel "reviewers": secret "forge" has no key FORGE_TOKEN'
            )
        result = await reconcile(ctx, Kind.ContactChannel, "reviewers")
        channel: Any = ctx.observed(Kind.ContactChannel, "reviewers")
        assert channel.status.status == status
        assert detail in channel.status.status_detail
        assert (result.requeue_after is None) == (status == "Ready")

    scenario(repo, body)
