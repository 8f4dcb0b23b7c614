"""After a call that waited on a person ends: its pull request told and closed, its branch deleted.

    the call's terminal checkpoint is committed (always first: nothing here can hold a call back)
        ──► its pull request still open (decided by `gitops-acp approve`, a timeout, a cancelled
            task, a decider who is not an approver)? ──► comment how it was decided, close it
        ──► delete acp/approvals/<toolcall> or acp/questions/<toolcall>: on the remote, then here
    the forge or the remote unreachable ──► tried again later (the call stays as it is)

The branch goes last, so a terminal call whose branch is still there is "not tidied yet": start-up
reconciles every call once and finishes the job after a crash. The pull request's state is read
before commenting, so a retry does not comment twice (unless a crash fell between the comment and
the close). A merged or closed pull request is left as it is. A pull request the forge refuses to
touch (a revoked token) is logged and left open: the branch still goes.
"""

from __future__ import annotations

import logging

from gitops_acp.controllers import pullrequests
from gitops_acp.controllers.base import DONE, Context, Result
from gitops_acp.controllers.catalog import split_mcp_name
from gitops_acp.errors import ForgeError, StoreError, TemporaryForgeError
from gitops_acp.humans.forges import PRState
from gitops_acp.resources.meta import TERMINAL_TOOLCALL_PHASES, Kind, ToolCallPhase
from gitops_acp.resources.models import ContactChannel, MCPServer, ToolCall

__all__ = ["comment_for", "tidy"]

log = logging.getLogger("gitops_acp")


async def tidy(call: ToolCall, ctx: Context, *, just_ended: bool) -> Result:
    """Close the ended call's pull request if it is open, then delete its branch; a Result to retry on.

    `just_ended`: the terminal checkpoint was committed in this reconcile, so the pull request is
    looked at even when a person already deleted the branch (GitLab keeps such a merge request open).
    """
    status = call.status
    if status is None or status.phase not in TERMINAL_TOOLCALL_PHASES:
        return DONE
    # Usually one proposal; an approved tool that then asked a question (an MCP task's
    # elicitation, controllers/mcptasks.py) has both.
    for branch, number, channel in _proposals(call, ctx):
        if not just_ended and not await ctx.humans.branch_exists(branch):
            continue
        if number is not None and channel is not None and pullrequests.has_forge(channel):
            try:
                client = await ctx.humans.forge(channel)
                if await client.pull_request_state(number) == PRState.OPEN:
                    question = status.human_contact is not None and branch == status.human_contact.branch
                    await client.comment(number, comment_for(call, question=question))
                    await client.close_pull_request(number)
            except TemporaryForgeError as exc:
                log.info("%s: closing pull request #%d later: %s", call.metadata.name, number, exc)
                return Result(exc.retry_after or ctx.settings.error_retry, progress=False)
            except ForgeError as exc:
                log.warning("%s: pull request #%d left open: %s", call.metadata.name, number, exc)
        try:
            await ctx.humans.delete_branch(branch)
        except StoreError as exc:
            log.info("%s: deleting %s later: %s", call.metadata.name, branch, exc)
            return Result(ctx.settings.error_retry, progress=False)
    return DONE


def comment_for(call: ToolCall, *, question: bool | None = None) -> str:
    """What the pull request is told: how the call was decided, since it was not by merging it.

    `question`: the pull request is the call's question (default: whenever the call asked one)."""
    status = call.status
    assert status is not None
    name = call.metadata.name
    if question is None:
        question = status.human_contact is not None
    if question and status.human_contact is not None:
        contact = status.human_contact
        if status.phase == ToolCallPhase.Succeeded and contact.responded_by:
            how = f"answered by {contact.responded_by} ({contact.responded_via or 'unknown'})"
        else:
            how = f"ended without an answer: {status.error or status.status_detail or status.phase}"
        what = "question"
    else:
        approval = status.approval
        by = f" by {approval.decided_by} ({approval.decided_via})" if approval and approval.decided_by else ""
        if status.phase == ToolCallPhase.ToolCallRejected:
            how = f"rejected{by}: {approval.comment if approval else status.result}"
        elif approval is not None and approval.decided_by:
            how = f"approved{by}"
        else:
            how = f"ended before anyone decided: {status.error or status.status_detail or status.phase}"
        what = "tool call"
    return (
        f"gitops-acp: {what} `{name}` was {how}.\n\n"
        "It was not decided by merging this pull request, so it is closed; the ToolCall's status "
        f"holds the record (`gitops-acp describe toolcall {name}`)."
    )


def _proposals(call: ToolCall, ctx: Context) -> list[tuple[str, int | None, ContactChannel | None]]:
    """The call's branches, each with its pull request's number and the channel whose forge holds it."""
    status = call.status
    assert status is not None
    found: list[tuple[str, int | None, ContactChannel | None]] = []
    contact = status.human_contact
    if contact is not None and contact.branch:
        found.append((contact.branch, contact.pull_request, _channel(contact.channel, ctx)))
    approval = status.approval
    if approval is not None and approval.branch:
        name = approval.channel
        if name is None:  # recorded before git approvals named their channel: the server's
            loaded = ctx.state.desired(Kind.MCPServer, split_mcp_name(call.spec.tool_ref.name)[0])
            server = loaded.resource if loaded is not None else None
            ref = server.spec.approval_contact_channel if isinstance(server, MCPServer) else None
            name = ref.name if ref is not None else None
        found.append((approval.branch, approval.pull_request, _channel(name, ctx)))
    return found


def _channel(name: str | None, ctx: Context) -> ContactChannel | None:
    loaded = ctx.state.desired(Kind.ContactChannel, name) if name else None
    channel = loaded.resource if loaded is not None else None
    return channel if isinstance(channel, ContactChannel) else None
