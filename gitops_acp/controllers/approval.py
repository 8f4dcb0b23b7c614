"""Approval of tool calls (contract §5): a branch whose merge is the decision, or HumanLayer for slack/email.

    Pending ──(the server's approvalContactChannel covers this tool)──► AwaitingHumanApproval
                (branch acp/approvals/<toolcall> created first; with a forge, its pull request found
                 or opened; then the phase committed with the branch and the pull request's number)
            ── the forge refuses (bad token, unknown repository) ──► ErrorRequestingHumanApproval
            ── the forge is unreachable or rate-limited ──► stays Pending, tried again later
    AwaitingHumanApproval ── approvals/<toolcall>.yaml on main, approved ──► ReadyToExecuteApprovedTool
                          ── decision rejected (comment) ──────────────────────────► ToolCallRejected
                          ── branch deleted or pull request closed without merging, timeout,
                             arguments edited (without allowArgumentEdits), decider not an
                             approver ──────────────────────────────────────────────► ToolCallRejected
                          ── on main, but the forge cannot be asked who merged ──► stays, retried

Who decided is chosen in controllers/deciders.py: with a forge, who it says merged the pull request
(or an approving reviewer), never the merge commit's author; `decidedVia` records which.

A pull request is found by its head branch before one is opened, so a crash between opening it
and committing its number finds the same one again instead of opening a second. The decision is
always read from `main` (a merged pull request put the file there); the forge is only asked whether
a pull request was closed without merging, at most once per poll interval (a webhook asks sooner).

Slack and email channels (controllers/humanlayer.py) take the same phases:

    Pending ──(externalCallID committed first)──► AwaitingHumanApproval ── POST function_calls
    AwaitingHumanApproval ── GET function_calls/<id>: approved ──► ReadyToExecuteApprovedTool
                          ── approved: false (comment) ──────────► ToolCallRejected
                          ── HumanLayer refuses the request (4xx) ──► ErrorRequestingHumanApproval
                          ── channel in Error ──────────────────► ToolCallRejected (the channel's reason)

A rejection is a terminal, *successful* call whose result is `Rejected: <comment>`: the model reads
the human's words and carries on (ACP's behaviour, kept).
"""

from __future__ import annotations

import json
from typing import Any

from gitops_acp.controllers import deciders, pullrequests
from gitops_acp.controllers import humanlayer_calls as humanlayer
from gitops_acp.controllers.base import DONE, Context, Result, parse_rfc3339, rfc3339
from gitops_acp.controllers.calls import cannot_ask
from gitops_acp.controllers.catalog import Entry
from gitops_acp.humans import humanlayer as api
from gitops_acp.humans.approvals import approval_path, branch_name, digest
from gitops_acp.resources.meta import API_VERSION, Condition, Kind, ToolCallPhase
from gitops_acp.resources.models import (
    ContactChannel,
    MCPServer,
    Task,
    ToolCall,
    ToolCallApproval,
    ToolCallStatus,
)

__all__ = ["check", "is_approver", "needs_approval", "request"]


def needs_approval(entry: Entry, ctx: Context) -> tuple[bool, ContactChannel | None]:
    """Whether a call of `entry` waits for a human, and the channel that decides (None: not declared)."""
    loaded = ctx.state.desired(Kind.MCPServer, entry.target)
    server = loaded.resource if loaded is not None else None
    if not isinstance(server, MCPServer) or not server.spec.needs_approval(entry.tool):
        return False, None
    ref = server.spec.approval_contact_channel
    channel = ctx.state.desired(Kind.ContactChannel, ref.name) if ref is not None else None
    if channel is None or not isinstance(channel.resource, ContactChannel):
        return True, None
    return True, channel.resource


async def request(call: ToolCall, entry: Entry, channel: ContactChannel | None, ctx: Context) -> Result:
    """Propose the approval branch, then commit AwaitingHumanApproval."""
    status = call.status or ToolCallStatus()
    if channel is None:  # a missing channel never means "no approval needed"
        return await _reject(
            call, ctx, "the approval channel of this tool's MCP server does not exist", by=""
        )
    if str(channel.spec.type) != "git":
        return await _ask_humanlayer(call, channel, ctx)
    arguments = json.loads(call.spec.arguments or "{}")
    task = _task(call, ctx)
    asked = _last_user_message(task)
    document = {
        "apiVersion": API_VERSION,
        "kind": "Approval",
        "metadata": {"name": call.metadata.name},
        "spec": {
            "task": call.spec.task_ref.name,
            "toolCall": call.metadata.name,
            "tool": entry.function,
            "arguments": arguments,
            "argumentsDigest": digest(arguments),
            "request": asked,
            "toolAnnotations": entry.annotations or {},
            "decision": "approved",
            "comment": "",
        },
    }
    hints = ", ".join(f"{k}={v}" for k, v in sorted((entry.annotations or {}).items())) or "none"
    message = (
        f"Approve {entry.function} for task {call.spec.task_ref.name}\n\n"
        f"Tool: {entry.function} ({entry.description or 'no description'})\n"
        f"Annotations: {hints}\n"
        f"Arguments: {json.dumps(arguments, ensure_ascii=False, sort_keys=True)}\n"
        f"Task request: {asked}\n\n"
        f"Merge this branch to approve. To reject, set `decision: rejected` and a `comment` in\n"
        f"{approval_path(call.metadata.name)} and merge, or delete the branch without merging.\n"
    )
    branch = await ctx.humans.propose_approval(call.metadata.name, document, message)
    approval = ToolCallApproval(branch=branch, channel=channel.metadata.name)
    how = f"merge {branch} into main"
    if pullrequests.has_forge(channel):
        opened = await pullrequests.open_for(
            call,
            channel,
            ctx,
            branch=branch,
            title=f"Approve {entry.function} for task {call.spec.task_ref.name}",
            body=_pull_request_body(call, entry, arguments, asked),
        )
        if isinstance(opened, Result):
            return opened
        if isinstance(opened, pullrequests.Refused):
            await cannot_ask(
                call,
                ctx,
                f"could not open the approval pull request: {opened.reason}",
                phase=ToolCallPhase.ErrorRequestingHumanApproval,
            )
            return DONE
        approval = approval.model_copy(update={"pull_request": opened.number, "pull_request_url": opened.url})
        how = f"merge pull request #{opened.number} ({opened.url})"
    waiting = status.model_copy(
        update={
            "phase": ToolCallPhase.AwaitingHumanApproval,
            "status": Condition.Pending,
            "status_detail": f"Waiting for approval: {how} (or gitops-acp approve {call.metadata.name})",
            "start_time": status.start_time or rfc3339(ctx.now()),
            "approval": approval,
        }
    )
    await ctx.state.checkpoint(call.model_copy(update={"status": waiting}))
    return DONE


def _pull_request_body(call: ToolCall, entry: Entry, arguments: Any, asked: str) -> str:
    """What a reviewer decides from: the tool, a table of the arguments, the request, how to decide."""
    rows = (
        [
            f"| `{_cell(key)}` | `{_cell(json.dumps(value, ensure_ascii=False))}` |"
            for key, value in sorted(arguments.items())
        ]
        if isinstance(arguments, dict) and arguments
        else ["| (none) | |"]
    )
    hints = entry.annotations or {}
    flags = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in sorted(hints.items())) or "none"
    warning = (
        "\n> **Destructive:** the tool declares that it may change or delete things.\n"
        if hints.get("destructiveHint")
        else ""
    )
    path = approval_path(call.metadata.name)
    return (
        f"The agent of task **{call.spec.task_ref.name}** asks to call **`{entry.function}`**"
        f" ({entry.description or 'no description'}).\n\n"
        "| argument | value |\n| --- | --- |\n" + "\n".join(rows) + "\n\n"
        f"**Task request:** {asked or '(none)'}\n\n"
        f"**Tool annotations:** {flags}\n{warning}\n"
        "**Approve:** merge this pull request.\n\n"
        f"**Reject:** close it without merging, or set `decision: rejected` and a `comment` in `{path}` "
        "on this branch and merge (the model reads the comment).\n\n"
        f"Tool call `{call.metadata.name}`; the reconciler reads the decision from `{path}` "
        "on the base branch.\n"
    )


def _cell(text: str) -> str:
    """Keep a value inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


async def check(call: ToolCall, channel: ContactChannel | None, ctx: Context) -> ToolCall | Result:
    """Read the decision; return the call ReadyToExecuteApprovedTool, or a Result to stop on."""
    status = call.status or ToolCallStatus()
    if status.external_call_id is not None:  # asked through HumanLayer
        if channel is None or str(channel.spec.type) == "git":
            return await _reject(
                call, ctx, "the approval channel of this tool's MCP server was removed", by=""
            )
        return await _check_humanlayer(call, channel, ctx)
    git = channel.spec.git if channel is not None else None
    decision = await ctx.humans.approval_decision(call.metadata.name)
    if decision is None:
        if not await ctx.humans.branch_exists(branch_name(call.metadata.name)):
            return await _reject(call, ctx, "closed without merging", by="")
        wait: float | None = None
        number = status.approval.pull_request if status.approval is not None else None
        if channel is not None and number is not None and pullrequests.has_forge(channel):
            gone, wait = await pullrequests.closed(call, channel, number, ctx, waiting="Waiting for approval")
            if gone:
                return await _reject(call, ctx, "closed without merging", by="")
        timeout = git.timeout_seconds if git is not None else None
        if git is not None and timeout is not None and status.start_time:
            remaining = parse_rfc3339(status.start_time) + timeout - ctx.now()
            if remaining <= 0:
                return await _reject(call, ctx, f"approval timed out after {git.timeout}", by="")
            wait = remaining if wait is None else min(wait, remaining)
        return Result(wait, progress=False) if wait is not None else DONE
    spec = decision.spec
    said = None
    number = status.approval.pull_request if status.approval is not None else None
    if channel is not None and number is not None and pullrequests.has_forge(channel):
        asked = await pullrequests.merge_info(call, channel, number, ctx, waiting="Approved on main")
        if isinstance(asked, Result):
            return asked
        said = asked
    decider = deciders.choose(decision, channel=channel, forge=said)
    by, via = decider.identity, decider.via
    proposed = json.loads(call.spec.arguments or "{}")
    original = digest(proposed)
    edited = "arguments" in spec and digest(spec["arguments"]) != original
    if (edited or spec.get("argumentsDigest") != original) and not (git and git.allow_argument_edits):
        return await _reject(
            call,
            ctx,
            "the arguments were changed after the proposal (allowArgumentEdits is off)",
            by=by,
            via=via,
        )
    if decider.refused is not None:
        return await _reject(call, ctx, decider.refused, by=by, via=via)
    comment = str(spec.get("comment") or "")
    if str(spec.get("decision", "approved")).lower() != "approved":
        return await _reject(call, ctx, comment or "rejected", by=by, via=via, at=decision.decided_at)
    approval = (status.approval or ToolCallApproval()).model_copy(
        update={
            "decided_by": by,
            "decided_via": via,
            "decided_at": rfc3339(decision.decided_at),
            "comment": comment or None,
        }
    )
    ready = status.model_copy(
        update={
            "phase": ToolCallPhase.ReadyToExecuteApprovedTool,
            "status_detail": f"Approved by {by} ({via})",
            "approval": approval,
        }
    )
    update: dict[str, Any] = {"status": ready}
    if edited:
        update["spec"] = call.spec.model_copy(update={"arguments": json.dumps(spec["arguments"])})
    approved = call.model_copy(update=update)
    await ctx.state.checkpoint(approved)
    return approved


async def _ask_humanlayer(call: ToolCall, channel: ContactChannel, ctx: Context) -> Result:
    return await humanlayer.ask_through(call, channel, ctx, _PURPOSE)


async def _check_humanlayer(call: ToolCall, channel: ContactChannel, ctx: Context) -> ToolCall | Result:
    """Look the request up at HumanLayer; an answer approves or rejects the call."""
    outcome = await humanlayer.check_through(call, channel, ctx, _PURPOSE)
    if isinstance(outcome, Result):
        return outcome
    status = call.status or ToolCallStatus()
    by = humanlayer.describe(channel)
    at = humanlayer.answered_at(outcome, ctx)
    if not outcome.approved:
        return await _reject(call, ctx, outcome.comment or "rejected", by=by, via=deciders.HUMANLAYER, at=at)
    approval = (status.approval or ToolCallApproval()).model_copy(
        update={
            "decided_by": by,
            "decided_via": deciders.HUMANLAYER,
            "decided_at": rfc3339(at),
            "comment": outcome.comment or None,
        }
    )
    ready = status.model_copy(
        update={
            "phase": ToolCallPhase.ReadyToExecuteApprovedTool,
            "status_detail": f"Approved through {by}",
            "approval": approval,
        }
    )
    approved = call.model_copy(update={"status": ready})
    await ctx.state.checkpoint(approved)
    return approved


def _request_body(call: ToolCall, channel: ContactChannel, call_id: str) -> dict[str, Any]:
    return api.approval_request(
        run_id=call.metadata.name,
        call_id=call_id,
        fn=call.spec.tool_ref.name,
        kwargs=json.loads(call.spec.arguments or "{}"),
        channel=humanlayer.channel_block(channel),
    )


async def _unusable(call: ToolCall, ctx: Context, reason: str) -> Result:
    return await _reject(call, ctx, reason, by="")


_PURPOSE = humanlayer.Purpose(
    question=False,
    waiting=ToolCallPhase.AwaitingHumanApproval,
    refused=ToolCallPhase.ErrorRequestingHumanApproval,
    record=lambda channel: {"approval": ToolCallApproval(channel=channel)},
    awaited="approval",
    body=_request_body,
    unusable=_unusable,
)


def is_approver(identity: str, approvers: list[str]) -> bool:
    """Whether "Name <email>" matches an entry of `approvers` (a name, an email, or the whole identity)."""
    return deciders.matches(identity, approvers)


async def _reject(
    call: ToolCall, ctx: Context, comment: str, *, by: str, via: str | None = None, at: float | None = None
) -> Result:
    status = call.status or ToolCallStatus()
    approval = (status.approval or ToolCallApproval()).model_copy(
        update={
            "decided_by": by or None,
            "decided_via": via if by else None,
            "decided_at": rfc3339(at or ctx.now()),
            "comment": comment,
        }
    )
    rejected = status.model_copy(
        update={
            "phase": ToolCallPhase.ToolCallRejected,
            "status": Condition.Succeeded,
            "status_detail": f"Rejected: {comment}",
            "result": f"Rejected: {comment}",
            "approval": approval,
            "completion_time": rfc3339(ctx.now()),
        }
    )
    await ctx.state.checkpoint(call.model_copy(update={"status": rejected}))
    return DONE


def _task(call: ToolCall, ctx: Context) -> Task | None:
    loaded = ctx.state.desired(Kind.Task, call.spec.task_ref.name)
    task = loaded.resource if loaded is not None else ctx.state.observed(Kind.Task, call.spec.task_ref.name)
    return task if isinstance(task, Task) else None


def _last_user_message(task: Task | None) -> str:
    if task is None:
        return ""
    window = task.status.context_window if task.status else []
    users = [m.content for m in window if m.role == "user"]
    return users[-1] if users else (task.spec.user_message or "")
