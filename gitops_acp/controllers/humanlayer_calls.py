"""Slack and email channels: HumanLayer's API behind the same steps as git channels.

    validate: GET /project (project key) or /contact_channel/<id> (channel key) ──► Ready | Error
    ask:      the caller commits the call id it will use (status.externalCallID), THEN `post`
    look:     GET <call_id> ──► answered ──► the caller's outcome
                            ├─ 404: never posted (a crash between the commit and the POST) ──► POST, same id
                            └─ not yet / an API error ──► look again in `humanlayer_poll` seconds
                               (three times that after an error, and never before Retry-After)

The API key comes from the channel's apiKeyFrom / channelApiKeyFrom secret and is sent only in the
Authorization header: no status, log line or error carries it (HumanLayer's own error text is
dropped when it contains the key, in case a proxy echoes headers).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gitops_acp.controllers.base import DONE, Context, Result, parse_rfc3339, rfc3339
from gitops_acp.controllers.http import HttpReply
from gitops_acp.errors import SecretError
from gitops_acp.humans import humanlayer
from gitops_acp.humans.humanlayer import Answer
from gitops_acp.resources.meta import Condition, Kind, ToolCallPhase
from gitops_acp.resources.models import ContactChannel, ContactChannelStatus, ToolCall, ToolCallStatus

__all__ = [
    "Purpose",
    "Refused",
    "Waiting",
    "answered_at",
    "ask_through",
    "channel_block",
    "check_through",
    "describe",
    "look",
    "post",
    "settle",
    "validate",
]

REQUEST_TIMEOUT = 30.0  # seconds per HumanLayer request


@dataclass(frozen=True)
class Waiting:
    """Nobody answered yet (or HumanLayer could not be asked): look again after `delay` seconds."""

    delay: float
    problem: str | None = None  # the last API error, for statusDetail


@dataclass(frozen=True)
class Refused:
    """HumanLayer refused the request for good (a 4xx other than 404/408/409/429)."""

    reason: str


def describe(channel: ContactChannel) -> str:
    """Who a channel reaches, for status and messages: `slack C0123`, `email ops@example.com`."""
    spec = channel.spec
    if spec.slack is not None and str(spec.type) == "slack":
        return f"slack {spec.slack.channel_or_user_id}"
    if spec.email is not None and str(spec.type) == "email":
        return f"email {spec.email.address}"
    return f"{spec.type} channel {spec.channel_id or channel.metadata.name}"


def channel_block(channel: ContactChannel) -> dict[str, Any] | None:
    """The request's `channel`; None with a channel key (HumanLayer routes by the key, as ACP does)."""
    spec = channel.spec
    if spec.channel_id is not None:
        return None
    slack = spec.slack
    email = spec.email
    return humanlayer.channel_block(
        str(spec.type),
        slack={
            "channel_or_user_id": slack.channel_or_user_id,
            "context_about_channel_or_user": slack.context_about_channel_or_user,
            "allowed_responder_ids": slack.allowed_responder_ids,
        }
        if slack is not None
        else None,
        email={"address": email.address, "context_about_user": email.context_about_user}
        if email is not None
        else None,
    )


def _key(channel: ContactChannel, ctx: Context) -> str:
    """The channel's HumanLayer key; raises SecretError (naming the field, never the value)."""
    owner = f'ContactChannel "{channel.metadata.name}"'
    source = channel.spec.channel_api_key_from or channel.spec.api_key_from
    if source is None:
        raise SecretError(
            f"{owner}: spec.apiKeyFrom (or channelApiKeyFrom with channelId) is required for "
            f"{channel.spec.type} channels: a secretKeyRef to the HumanLayer API key"
        )
    ref = source.secret_key_ref
    return ctx.secrets.resolve(ref.name, ref.key, owner=owner)


async def _send(
    channel: ContactChannel, ctx: Context, method: str, url: str, body: dict[str, Any] | None = None
) -> HttpReply | str:
    """One request with the channel's key; a string says why it could not be made (scrubbed)."""
    try:
        key = _key(channel, ctx)
    except SecretError as exc:
        return str(exc)
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    try:
        reply = await ctx.http.request_json(method, url, body=body, headers=headers, timeout=REQUEST_TIMEOUT)
    except OSError as exc:
        return _scrub(f"cannot reach HumanLayer at {url}: {exc}", key)
    if key in json.dumps(reply.body, default=str):  # an echo of our headers: keep none of its text
        return HttpReply(reply.status, None, reply.retry_after)
    return reply


async def validate(channel: ContactChannel, ctx: Context) -> ContactChannelStatus:
    """Check the key with one real request; Ready with the project, or Error saying what to fix."""
    spec = channel.spec
    base = ctx.settings.humanlayer_url
    url = humanlayer.channel_url(base, spec.channel_id) if spec.channel_id else humanlayer.project_url(base)
    reply = await _send(channel, ctx, "GET", url)
    if isinstance(reply, str):
        return _error(reply)
    source = spec.channel_api_key_from or spec.api_key_from
    secret = f'secret "{source.secret_key_ref.name}" key {source.secret_key_ref.key}' if source else "the key"
    if reply.status in (401, 403):
        return _error(f"HumanLayer refused the API key ({reply.status}): check {secret}")
    if reply.status == 404 and spec.channel_id:
        return _error(f"HumanLayer has no contact channel {spec.channel_id} for this key (404)")
    if not 200 <= reply.status < 300:
        return _error(f"HumanLayer answered {reply.status} to GET {url}{_reason(reply)}")
    found = humanlayer.project(reply.body)
    return ContactChannelStatus(
        ready=True,
        status=Condition.Ready,
        status_detail=f"HumanLayer {describe(channel)}: project {found.project_slug or '?'}",
        project_slug=found.project_slug,
        org_slug=found.org_slug,
        verified_channel_id=spec.channel_id,
    )


async def ask(
    call: ToolCall,
    channel: ContactChannel,
    ctx: Context,
    *,
    question: bool,
    waiting: dict[str, Any],
    detail: Callable[[str], str],
    body: Callable[[ToolCall, str], dict[str, Any]],
) -> tuple[ToolCall, Waiting | Refused]:
    """Commit the call id we will use, then ask HumanLayer: a crash in between can't ask twice.

    `waiting` holds the status fields of the waiting call (its phase, its approval or humanContact),
    `detail(call_id)` its statusDetail, `body(call, call_id)` the request. Returns the call as
    committed and what HumanLayer said.
    """
    status = call.status or ToolCallStatus()
    call_id = humanlayer.new_call_id()
    recorded = status.model_copy(
        update={
            **waiting,
            "status": Condition.Pending,
            "status_detail": detail(call_id),
            "start_time": status.start_time or rfc3339(ctx.now()),
            "external_call_id": call_id,
        }
    )
    call = call.model_copy(update={"status": recorded})
    await ctx.state.checkpoint(call)  # intent before effect
    return call, await post(channel, ctx, question=question, body=body(call, call_id))


async def post(
    channel: ContactChannel, ctx: Context, *, question: bool, body: dict[str, Any]
) -> Waiting | Refused:
    """Ask HumanLayer (the call id is in `body`, already committed); 409 means it was asked before."""
    url = humanlayer.call_url(ctx.settings.humanlayer_url, question=question)
    reply = await _send(channel, ctx, "POST", url, body)
    poll = ctx.settings.humanlayer_poll
    if isinstance(reply, str):
        return Waiting(_after_error(poll, None), reply)
    if 200 <= reply.status < 300 or reply.status == 409:
        return Waiting(max(poll, reply.retry_after or 0.0))
    if 400 <= reply.status < 500 and reply.status not in (404, 408, 429):
        return Refused(f"HumanLayer refused the request ({reply.status}){_reason(reply)}")
    return Waiting(_after_error(poll, reply.retry_after), f"HumanLayer answered {reply.status} to POST")


async def look(
    channel: ContactChannel, ctx: Context, *, question: bool, call_id: str, body: dict[str, Any]
) -> Answer | Waiting | Refused:
    """Read the request's state; post it first if HumanLayer has never seen it (404)."""
    url = humanlayer.call_url(ctx.settings.humanlayer_url, question=question, call_id=call_id)
    reply = await _send(channel, ctx, "GET", url)
    poll = ctx.settings.humanlayer_poll
    if isinstance(reply, str):
        return Waiting(_after_error(poll, None), reply)
    if reply.status == 404:
        return await post(channel, ctx, question=question, body=body)
    if not 200 <= reply.status < 300:
        return Waiting(_after_error(poll, reply.retry_after), f"HumanLayer answered {reply.status} to GET")
    found = humanlayer.answer(reply.body)
    if found.responded:
        return found
    return Waiting(max(poll, reply.retry_after or 0.0))


async def settle(
    call: ToolCall, outcome: Waiting | Refused, ctx: Context, *, detail: str, refused: ToolCallPhase
) -> Result:
    """Record HumanLayer's last error (or its absence) in statusDetail and wait; a refusal ends the call."""
    status = call.status or ToolCallStatus()
    if isinstance(outcome, Refused):
        failed = status.model_copy(
            update={
                "phase": refused,
                "status": Condition.Error,
                "status_detail": outcome.reason,
                "error": outcome.reason,
                "completion_time": rfc3339(ctx.now()),
            }
        )
        await ctx.state.checkpoint(call.model_copy(update={"status": failed}))
        return DONE
    if outcome.problem:
        detail += f"; last error (retrying): {outcome.problem}"
    if detail != status.status_detail:
        waiting = status.model_copy(update={"status_detail": detail})
        await ctx.state.checkpoint(call.model_copy(update={"status": waiting}))
    return Result(outcome.delay, progress=False)  # only a person moves it: `serve --once` need not wait


@dataclass(frozen=True)
class Purpose:
    """What a HumanLayer request is for: approving a tool call, or a question to a person.

    The steps around it are the same for both (`ask_through`, `check_through`); this says what
    differs: the request body, the waiting phase and field, the words, the refusal phase, and what
    an unusable channel does to the call.
    """

    question: bool  # a human_contact request (True) or a function_call approval (False)
    waiting: ToolCallPhase  # AwaitingHumanApproval | AwaitingHumanInput
    refused: ToolCallPhase  # ErrorRequestingHumanApproval | ErrorRequestingHumanInput
    record: Callable[[str], dict[str, Any]]  # channel name -> the status fields naming it
    awaited: str  # "approval", "an answer": what the statusDetail says it waits for
    body: Callable[[ToolCall, ContactChannel, str], dict[str, Any]]  # (call, channel, call id)
    unusable: Callable[[ToolCall, Context, str], Awaitable[Result]]  # the channel broke: end the call


def waiting_detail(purpose: Purpose, channel: ContactChannel, call_id: str) -> str:
    """The statusDetail of a call waiting at HumanLayer."""
    return f"Waiting for {purpose.awaited} through {describe(channel)} (HumanLayer call {call_id})"


async def ask_through(call: ToolCall, channel: ContactChannel, ctx: Context, purpose: Purpose) -> Result:
    """Commit the call id we will use, then ask HumanLayer: a crash in between can't ask twice."""
    observed = ctx.state.observed(Kind.ContactChannel, channel.metadata.name)
    state = observed.status if isinstance(observed, ContactChannel) else None
    if state is not None and state.status == Condition.Error:  # it broke after it was offered
        what = "approval channel" if not purpose.question else "contact channel"
        return await purpose.unusable(
            call, ctx, f'{what} "{channel.metadata.name}" is not usable: {state.status_detail}'
        )
    if state is None or not state.ready:
        return Result(1.0)  # its validation is under way; a channel answers within a request
    call, outcome = await ask(
        call,
        channel,
        ctx,
        question=purpose.question,
        waiting={"phase": purpose.waiting, **purpose.record(channel.metadata.name)},
        detail=lambda call_id: waiting_detail(purpose, channel, call_id),
        body=lambda asked, call_id: purpose.body(asked, channel, call_id),
    )
    return await _settle_for(call, channel, outcome, ctx, purpose)


async def check_through(
    call: ToolCall, channel: ContactChannel, ctx: Context, purpose: Purpose
) -> Answer | Result:
    """Look the request up at HumanLayer (posting it if a crash came before the POST).

    An answer is returned for the caller to act on; anything else is recorded and waited for.
    """
    call_id = (call.status or ToolCallStatus()).external_call_id or ""
    body = purpose.body(call, channel, call_id)
    outcome = await look(channel, ctx, question=purpose.question, call_id=call_id, body=body)
    if isinstance(outcome, Answer):
        return outcome
    return await _settle_for(call, channel, outcome, ctx, purpose)


async def _settle_for(
    call: ToolCall, channel: ContactChannel, outcome: Waiting | Refused, ctx: Context, purpose: Purpose
) -> Result:
    detail = waiting_detail(purpose, channel, (call.status or ToolCallStatus()).external_call_id or "")
    return await settle(call, outcome, ctx, detail=detail, refused=purpose.refused)


def answered_at(answer: Answer, ctx: Context) -> float:
    """When the human answered, by HumanLayer's clock (ours when it sent no readable time)."""
    try:
        return parse_rfc3339(answer.responded_at) if answer.responded_at else ctx.now()
    except ValueError:
        return ctx.now()


def _after_error(poll: float, retry_after: float | None) -> float:
    return max(3 * poll, retry_after or 0.0)


def _reason(reply: HttpReply) -> str:
    """HumanLayer's own words about an error, when it sent some (`detail`, `error` or `message`)."""
    body = reply.body if isinstance(reply.body, dict) else {}
    for field in ("detail", "error", "message"):
        if isinstance(body.get(field), str) and body[field]:
            return f": {body[field][:300]}"
    return ""


def _error(detail: str) -> ContactChannelStatus:
    return ContactChannelStatus(ready=False, status=Condition.Error, status_detail=detail)


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text
