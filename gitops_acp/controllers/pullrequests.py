"""Pull requests for the branches people answer (approvals and questions), on a channel with a forge.

    branch proposed ──► find_pull_request(branch) ── found (opened before a crash): that one
                            └─ none ──► open_pull_request(title, body, the channel's labels, reviewers)
                        ── forge unreachable / rate-limited ──► the call stays Pending, retried later
                        ── forge refuses (token, repository) ──► Refused: the caller ends the call
    waiting ──► poll_state(number), at most once per poll interval per pull request (a webhook
                invalidates it) ──► closed without merging? and when to look again
    decided on main ──► merge_info(number): who merged, whose reviews approve (controllers/deciders.py)
                        ── forge unreachable, rate-limited or refusing ──► the call keeps waiting

Shared by controllers/approval.py and controllers/humancontact.py, which record what was opened in
their own status field and decide what a closed pull request means for their call.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitops_acp.controllers.base import Context, Result
from gitops_acp.errors import ForgeError, TemporaryForgeError
from gitops_acp.humans.forges import MergeInfo, PRState, PullRequest
from gitops_acp.resources.models import ContactChannel, ToolCall, ToolCallStatus

__all__ = ["Refused", "closed", "has_forge", "merge_info", "note", "open_for"]


@dataclass(frozen=True)
class Refused:
    """The forge refused to open the pull request (a bad token, an unknown repository): why."""

    reason: str


def has_forge(channel: ContactChannel | None) -> bool:
    """Whether the channel's branches become pull requests."""
    git = channel.spec.git if channel is not None else None
    return git is not None and str(git.forge) != "none"


async def open_for(
    call: ToolCall, channel: ContactChannel, ctx: Context, *, branch: str, title: str, body: str
) -> PullRequest | Result | Refused:
    """Find the branch's pull request (opened before a crash), or open it.

    A transient failure is noted in the call's statusDetail and comes back as the Result to return
    (the call stays where it is and is tried again after Retry-After or `error_retry`).
    """
    git = channel.spec.git
    assert git is not None
    try:
        client = await ctx.humans.forge(channel)
        found = await client.find_pull_request(branch)
        if found is not None:
            return found
        return await client.open_pull_request(
            head=branch,
            base=ctx.humans.main,
            title=title,
            body=body,
            labels=list(git.labels),
            reviewers=list(git.reviewers),
        )
    except TemporaryForgeError as exc:
        retry = exc.retry_after or ctx.settings.error_retry
        await note(call, ctx, f"Opening the pull request failed, will retry in {retry:.0f}s: {exc}")
        return Result(retry, progress=False)
    except ForgeError as exc:
        return Refused(str(exc))


async def closed(
    call: ToolCall, channel: ContactChannel, number: int, ctx: Context, *, waiting: str
) -> tuple[bool, float]:
    """Whether the pull request was closed without merging, and when it is worth asking again.

    A merged pull request changes nothing here: its merge brought the file to `main`, which is what
    counts. Only "closed without merging" is news that no ref carries. `waiting` starts the note
    written when the forge refuses to tell (a revoked token): the call keeps waiting for `main`.
    """
    try:
        client = await ctx.humans.forge(channel)
        state, wait = await client.poll_state(number)
    except TemporaryForgeError as exc:
        return False, exc.retry_after or ctx.settings.error_retry
    except ForgeError as exc:
        await note(call, ctx, f"{waiting}; the pull request's state cannot be read: {exc}")
        return False, ctx.settings.error_retry
    return state == PRState.CLOSED, wait


async def merge_info(
    call: ToolCall, channel: ContactChannel, number: int, ctx: Context, *, waiting: str
) -> MergeInfo | Result:
    """Ask the forge who merged the pull request and who approved it; a Result to wait on if it cannot say.

    Never approves on a failure: a transient one (unreachable, rate-limited) and a refusal (a
    revoked token) alike are noted in statusDetail, and the call waits and asks again.
    """
    try:
        client = await ctx.humans.forge(channel)
        return await client.merge_info(number)
    except TemporaryForgeError as exc:
        retry = exc.retry_after or ctx.settings.error_retry
        detail = f"{waiting}; asking the forge who merged failed, will retry in {retry:.0f}s: {exc}"
        await note(call, ctx, detail)
        return Result(retry, progress=False)
    except ForgeError as exc:
        await note(call, ctx, f"{waiting}; the forge refuses to say who merged: {exc}")
        return Result(ctx.settings.error_retry, progress=False)


async def note(call: ToolCall, ctx: Context, detail: str) -> None:
    """Record what is happening in statusDetail (committed only when it changed)."""
    status = call.status or ToolCallStatus()
    if status.status_detail != detail:
        await ctx.state.checkpoint(
            call.model_copy(update={"status": status.model_copy(update={"status_detail": detail})})
        )
