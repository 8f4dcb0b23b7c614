"""Questions to humans: `<channel>__human_contact({message})`, answered through git or HumanLayer.

git channel (contract §5):

    Pending ──► AwaitingHumanInput (branch acp/questions/<toolcall> created first; with a forge, its
                pull request found or opened; then the phase committed with the branch and the number)
            ── the forge refuses (bad token, unknown repository) ──► ErrorRequestingHumanInput
            ── the forge is unreachable or rate-limited ──► stays Pending, tried again later
    AwaitingHumanInput ── responses/<toolcall>.yaml on main with a response ──► Succeeded, result = response
                       ── merged with an empty response ──────────────────────► Failed (the model reads why)
                       ── branch deleted or pull request closed without merging, the channel's
                          timeout, or an answer from someone not in its `approvers` ──► Failed
                       ── on main, but the forge cannot be asked who merged ──► stays, retried

slack / email channel (HumanLayer, controllers/humanlayer.py):

    Pending ──(externalCallID committed first)──► AwaitingHumanInput ── POST contact_requests
    AwaitingHumanInput ── GET contact_requests/<id>: responded_at set ──► Succeeded, result = response
                       ── HumanLayer refuses the request (4xx) ──────────► ErrorRequestingHumanInput
    Pending ── the channel went into Error since the agent offered it ───────► Failed (its reason)

Who answered and when go to `status.humanContact`. Pending questions are re-checked when `main`
moves or their branch disappears (the reactor), their pull request on the forge's poll interval or
a webhook (controllers/pullrequests.py, shared with approvals), HumanLayer ones on a timer; none of
these waits keeps `serve --once` running.
"""

from __future__ import annotations

import json
from typing import Any

from gitops_acp.controllers import deciders, pullrequests
from gitops_acp.controllers import humanlayer_calls as humanlayer
from gitops_acp.controllers.base import DONE, Context, Result, parse_rfc3339, rfc3339
from gitops_acp.controllers.calls import cannot_ask, finish
from gitops_acp.controllers.catalog import HUMAN_CONTACT_SUFFIX, entry_for_call
from gitops_acp.humans import humanlayer as api
from gitops_acp.humans.questions import branch_name, response_path
from gitops_acp.resources.meta import API_VERSION, Condition, Kind, ToolCallPhase, ToolType
from gitops_acp.resources.models import ContactChannel, Task, ToolCall, ToolCallHumanContact, ToolCallStatus

__all__ = ["HumanContactExecutor"]

CLOSED = "the question was closed without an answer"


class HumanContactExecutor:
    """Asks the human behind a contact channel, and waits for the answer."""

    def offers(self, call: ToolCall, ctx: Context) -> bool:
        entry = entry_for_call(call.spec.task_ref.name, call.spec.tool_ref.name, ctx)
        return entry is not None and entry.type == ToolType.HumanContact

    async def execute(self, call: ToolCall, ctx: Context) -> Result:
        status = call.status or ToolCallStatus()
        name = call.spec.tool_ref.name.removesuffix(HUMAN_CONTACT_SUFFIX)
        loaded = ctx.state.desired(Kind.ContactChannel, name)
        channel = loaded.resource if loaded is not None else None
        if not isinstance(channel, ContactChannel):  # removed while the question waited
            await finish(call, ctx, error=f'the contact channel "{name}" was removed before anyone answered')
            return DONE
        git = str(channel.spec.type) == "git"
        if status.phase == ToolCallPhase.Pending:
            return await (_ask_git(call, channel, ctx) if git else _ask_humanlayer(call, channel, ctx))
        if status.phase == ToolCallPhase.AwaitingHumanInput:
            if status.external_call_id is not None:
                return await _check_humanlayer(call, channel, ctx)
            return await _check_git(call, channel, ctx)
        return DONE


def _question(call: ToolCall) -> str:
    arguments = json.loads(call.spec.arguments or "{}")
    message = arguments.get("message") if isinstance(arguments, dict) else None
    return message if isinstance(message, str) else json.dumps(arguments, ensure_ascii=False)


async def _ask_git(call: ToolCall, channel: ContactChannel, ctx: Context) -> Result:
    """Propose the question branch, then commit AwaitingHumanInput."""
    status = call.status or ToolCallStatus()
    toolcall = call.metadata.name
    task = call.spec.task_ref.name
    question = _question(call)
    document = {
        "apiVersion": API_VERSION,
        "kind": "HumanResponse",
        "metadata": {"name": toolcall},
        "spec": {"task": task, "toolCall": toolcall, "question": question, "response": ""},
    }
    asked = _request(task, ctx)
    message = (
        f"{_title(task, question)}\n\n"
        f"{question}\n\n"
        f"Asked by the agent of task {task} ({f'its request: {asked}' if asked else 'no user message'}).\n\n"
        f"To answer, write your answer as `response:` in {response_path(toolcall)} on this branch\n"
        f"and merge it into main, or run: gitops-acp respond {toolcall} --message '...'\n"
        f"To decline, delete the branch without merging.\n"
    )
    branch = await ctx.humans.propose_question(toolcall, document, message)
    contact = ToolCallHumanContact(channel=channel.metadata.name, branch=branch)
    where = branch
    if pullrequests.has_forge(channel):
        opened = await pullrequests.open_for(
            call,
            channel,
            ctx,
            branch=branch,
            title=_title(task, question),
            body=_pull_request_body(toolcall, task, question, asked),
        )
        if isinstance(opened, Result):
            return opened
        if isinstance(opened, pullrequests.Refused):
            await cannot_ask(
                call,
                ctx,
                f"could not open the question's pull request: {opened.reason}",
                phase=ToolCallPhase.ErrorRequestingHumanInput,
            )
            return DONE
        contact = contact.model_copy(update={"pull_request": opened.number, "pull_request_url": opened.url})
        where = f"pull request #{opened.number} ({opened.url})"
    waiting = status.model_copy(
        update={
            "phase": ToolCallPhase.AwaitingHumanInput,
            "status": Condition.Pending,
            "status_detail": f"Waiting for an answer: write it in {where} and merge into main "
            f"(or gitops-acp respond {toolcall})",
            "start_time": status.start_time or rfc3339(ctx.now()),
            "human_contact": contact,
        }
    )
    await ctx.state.checkpoint(call.model_copy(update={"status": waiting}))
    return DONE


def _title(task: str, question: str) -> str:
    """`Question from task <task>: <the question's first line, shortened>`: a commit's or a PR's title."""
    first = question.strip().splitlines()[0] if question.strip() else "(no question text)"
    return f"Question from task {task}: {first[:60]}{'…' if len(first) > 60 else ''}"


def _pull_request_body(toolcall: str, task: str, question: str, asked: str) -> str:
    """What the person answers from: the question quoted, the task's request, how to answer."""
    quoted = "\n".join(f"> {line}" if line else ">" for line in question.splitlines()) or "> (no text)"
    path = response_path(toolcall)
    return (
        f"The agent of task **{task}** asks:\n\n{quoted}\n\n"
        f"**Task request:** {asked or '(none)'}\n\n"
        f"**Answer:** edit `response:` in `{path}` on this branch, then merge this pull request "
        f"(or run `gitops-acp respond {toolcall} --message '...'`).\n\n"
        "**Decline:** close it without merging; the question stays unanswered and the agent is told so.\n\n"
        f"Tool call `{toolcall}`; the reconciler reads the answer from `{path}` on the base branch.\n"
    )


async def _check_git(call: ToolCall, channel: ContactChannel, ctx: Context) -> Result:
    """Read the answer on main; a deleted branch or the channel's timeout ends the call."""
    status = call.status or ToolCallStatus()
    found = await ctx.humans.question_response(call.metadata.name)
    git = channel.spec.git
    if found is None:
        if not await ctx.humans.branch_exists(branch_name(call.metadata.name)):
            await finish(call, ctx, error=CLOSED)
            return DONE
        wait: float | None = None
        number = status.human_contact.pull_request if status.human_contact is not None else None
        if number is not None and pullrequests.has_forge(channel):
            gone, wait = await pullrequests.closed(
                call, channel, number, ctx, waiting="Waiting for an answer"
            )
            if gone:
                await finish(call, ctx, error=CLOSED)
                return DONE
        timeout = git.timeout_seconds if git is not None else None
        if git is not None and timeout is not None and status.start_time:
            remaining = parse_rfc3339(status.start_time) + timeout - ctx.now()
            if remaining <= 0:
                await finish(call, ctx, error=f"nobody answered within {git.timeout}")
                return DONE
            wait = remaining if wait is None else min(wait, remaining)
        return Result(wait, progress=False) if wait is not None else DONE
    said = None
    number = status.human_contact.pull_request if status.human_contact is not None else None
    if number is not None and pullrequests.has_forge(channel):
        asked = await pullrequests.merge_info(call, channel, number, ctx, waiting="Answered on main")
        if isinstance(asked, Result):
            return asked
        said = asked
    decider = deciders.choose(found, channel=channel, forge=said)
    by = decider.identity or "unknown"
    if decider.via == deciders.COMMIT_AUTHOR and found.fast_forward:
        by = "unknown (merged by fast-forward)"
    answered = _answered(call, by=by, via=decider.via, at=found.decided_at)
    if decider.refused is not None:
        if decider.via == deciders.COMMIT_AUTHOR:
            approvers = ", ".join(channel.spec.git.approvers) if channel.spec.git is not None else ""
            why = "merge with --no-ff" if found.fast_forward else f"approvers: {approvers}"
            error = f"the answer came from {by}, who may not answer this channel ({why})"
        else:
            error = f"the answer cannot count: {decider.refused}"
        await finish(answered, ctx, error=error)
        return DONE
    response = found.spec.get("response")
    text = response if isinstance(response, str) else ("" if response is None else json.dumps(response))
    if not text.strip():
        await finish(
            answered, ctx, error=f"{response_path(call.metadata.name)} was merged without a response"
        )
        return DONE
    await finish(answered, ctx, result=text, detail=f"Answered by {by} ({decider.via})")
    return DONE


async def _ask_humanlayer(call: ToolCall, channel: ContactChannel, ctx: Context) -> Result:
    return await humanlayer.ask_through(call, channel, ctx, _PURPOSE)


async def _check_humanlayer(call: ToolCall, channel: ContactChannel, ctx: Context) -> Result:
    """Look the question up at HumanLayer; an answer is the tool's result."""
    outcome = await humanlayer.check_through(call, channel, ctx, _PURPOSE)
    if isinstance(outcome, Result):
        return outcome
    by = humanlayer.describe(channel)
    at = humanlayer.answered_at(outcome, ctx)
    answered = _answered(call, by=by, via=deciders.HUMANLAYER, at=at)
    await finish(answered, ctx, result=outcome.response, detail=f"Answered through {by}")
    return DONE


def _answered(call: ToolCall, *, by: str, via: str, at: float) -> ToolCall:
    status = call.status or ToolCallStatus()
    contact = (status.human_contact or ToolCallHumanContact()).model_copy(
        update={"responded_by": by, "responded_via": via, "responded_at": rfc3339(at)}
    )
    return call.model_copy(update={"status": status.model_copy(update={"human_contact": contact})})


def _request_body(call: ToolCall, channel: ContactChannel, call_id: str) -> dict[str, Any]:
    return api.question_request(
        run_id=call.metadata.name,
        call_id=call_id,
        message=_question(call),
        channel=humanlayer.channel_block(channel),
    )


async def _unusable(call: ToolCall, ctx: Context, reason: str) -> Result:
    await finish(call, ctx, error=reason)
    return DONE


_PURPOSE = humanlayer.Purpose(
    question=True,
    waiting=ToolCallPhase.AwaitingHumanInput,
    refused=ToolCallPhase.ErrorRequestingHumanInput,
    record=lambda channel: {"human_contact": ToolCallHumanContact(channel=channel)},
    awaited="an answer",
    body=_request_body,
    unusable=_unusable,
)


def _request(task_name: str, ctx: Context) -> str:
    """The task's request, in a few words, so the person knows the context ("" when there is none)."""
    loaded = ctx.state.desired(Kind.Task, task_name)
    task = loaded.resource if loaded is not None else ctx.state.observed(Kind.Task, task_name)
    if not isinstance(task, Task):
        return ""
    window = task.status.context_window if task.status else []
    users = [m.content for m in window if m.role == "user"]
    return (users[0] if users else (task.spec.user_message or ""))[:200]
