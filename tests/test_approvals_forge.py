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
from tests.test_tools import AGENT, COUNT, ECHO, LLM, SERVER, TASK, call_named

CHANNEL = """
apiVersion: acp.gitops.dev/v1alpha1
kind: ContactChannel
metadata: {name: reviewers}
spec:
  git:
    forge: github
    apiUrl: API_URL
    repository: acme/agents
    tokenFrom: {secretKeyRef: {name: forge, key: FORGE_TOKEN}}
    labels: [acp-approval]
    reviewers: [alice]
"""

Body = Callable[[FakeContext, FakeForge, ToolCall], Awaitable[None]]


async def reconcile(ctx: FakeContext, kind: Kind, name: str) -> Result:
    return await registry()[kind].reconcile(name, ctx)


def scenario(repo: Path, body: Body) -> None:
    """Run `body` with a task whose `srv__count` call (still Pending) needs approval on the fake's GitHub."""

    async def main() -> None:
        with FakeForge(repo) as fake:
            async with httpx2.AsyncClient() as http:
                server = SERVER + "  approvalContactChannel: {name: reviewers}\n"
                mcp = FakeMCP()
                mcp.connect("srv", ECHO, COUNT)
                ctx = FakeContext(
                    "\n---\n".join(
                        (LLM, server, AGENT, TASK, CHANNEL.replace("API_URL", fake.api_url("github")))
                    ),
                    llm=FakeLLM([tool_calls(("srv__count", '{"label": "x|y"}'))]),
                    mcp=mcp,
                    environ={"API_KEY": "k", "SRV_TOKEN": "t"},
                )
                ctx.forges["reviewers"] = forges.connect(
                    "github",
                    api_url=fake.api_url("github"),
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


def test_the_decision_on_main_wins_over_the_pull_request_state(repo: Path) -> None:
    async def body(ctx: FakeContext, fake: FakeForge, call: ToolCall) -> None:
        name = call.metadata.name
        await reconcile(ctx, Kind.ToolCall, name)
        document, _ = ctx.proposals[name]
        ctx.decisions[name] = Decision(
            spec=document["spec"],
            decided_by="Alice <a@example.com>",
            decided_at=ctx.clock,
            fast_forward=False,
        )
        seen = len(fake.requests)
        await reconcile(ctx, Kind.ToolCall, name)
        assert call_named(ctx).status.phase == "Succeeded"
        assert len(fake.requests) == seen  # a decision on main needs no forge request

    scenario(repo, body)


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
