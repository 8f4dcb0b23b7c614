"""HumanLayer's API, as data: the requests a slack/email channel sends and the replies it reads.

No I/O here: controllers send these through their Context (`ctx.request_json`), so the transition
tables run without a network and the reactor owns the HTTP client. Only the endpoints ACP used are
spoken (paths relative to the API base, e.g. https://api.humanlayer.dev):

    GET  /humanlayer/v1/project                     a project key's project and organization
    GET  /humanlayer/v1/contact_channel/<id>        a channel key's channel
    POST /humanlayer/v1/function_calls              {run_id, call_id, spec{fn, kwargs, channel}}
    GET  /humanlayer/v1/function_calls/<call_id>    status{requested_at, responded_at, approved, comment}
    POST /humanlayer/v1/contact_requests            {run_id, call_id, spec{msg, channel}}
    GET  /humanlayer/v1/contact_requests/<call_id>  status{requested_at, responded_at, response}

The `call_id` is ours: chosen and committed in the ToolCall's status before the POST, so a restart
looks the same request up (GET; a 404 means it was never posted) instead of asking twice.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = [
    "DEFAULT_URL",
    "Answer",
    "Project",
    "answer",
    "approval_request",
    "call_url",
    "channel_block",
    "channel_url",
    "new_call_id",
    "project",
    "project_url",
    "question_request",
]

DEFAULT_URL = "https://api.humanlayer.dev"
_FUNCTION_CALLS = "/humanlayer/v1/function_calls"
_CONTACT_REQUESTS = "/humanlayer/v1/contact_requests"


@dataclass(frozen=True)
class Project:
    """What a key belongs to (ContactChannel status: projectSlug, orgSlug)."""

    project_slug: str | None
    org_slug: str | None


@dataclass(frozen=True)
class Answer:
    """A function call's or a contact request's state at HumanLayer."""

    responded: bool  # a human answered (responded_at is set)
    approved: bool | None  # function calls: the decision
    comment: str  # function calls: the human's comment
    response: str  # contact requests: the human's answer
    responded_at: str | None  # as HumanLayer wrote it (RFC 3339)


def new_call_id() -> str:
    """A fresh call id (HumanLayer's ids are short random strings)."""
    return secrets.token_hex(8)


def project_url(base: str) -> str:
    """Where a project key is checked."""
    return base.rstrip("/") + "/humanlayer/v1/project"


def channel_url(base: str, channel_id: str) -> str:
    """Where a channel key is checked against its channel."""
    return base.rstrip("/") + "/humanlayer/v1/contact_channel/" + quote(channel_id, safe="")


def call_url(base: str, *, question: bool, call_id: str | None = None) -> str:
    """The collection (POST) or one call (GET) of function calls, or of contact requests for a question."""
    url = base.rstrip("/") + (_CONTACT_REQUESTS if question else _FUNCTION_CALLS)
    return url if call_id is None else f"{url}/{quote(call_id, safe='')}"


def channel_block(kind: str, *, slack: dict[str, Any] | None, email: dict[str, Any] | None) -> dict[str, Any]:
    """The `channel` of a request: `{slack: {...}}` or `{email: {...}}` (None values left out)."""
    fields = slack if kind == "slack" else email
    body = {k: v for k, v in (fields or {}).items() if v not in (None, [], "")}
    return {kind: body}


def approval_request(
    *, run_id: str, call_id: str, fn: str, kwargs: dict[str, Any], channel: dict[str, Any] | None
) -> dict[str, Any]:
    """The body of `POST /humanlayer/v1/function_calls`; no channel: HumanLayer routes by the channel key."""
    spec: dict[str, Any] = {"fn": fn, "kwargs": kwargs}
    if channel is not None:
        spec["channel"] = channel
    return {"run_id": run_id, "call_id": call_id, "spec": spec}


def question_request(
    *, run_id: str, call_id: str, message: str, channel: dict[str, Any] | None
) -> dict[str, Any]:
    """The body of `POST /humanlayer/v1/contact_requests`."""
    spec: dict[str, Any] = {"msg": message}
    if channel is not None:
        spec["channel"] = channel
    return {"run_id": run_id, "call_id": call_id, "spec": spec}


def project(body: Any) -> Project:
    """Read `project_slug` / `org_slug` from a project or channel reply (absent: None)."""
    data = body if isinstance(body, dict) else {}
    slug, org = data.get("project_slug"), data.get("org_slug")
    return Project(
        project_slug=str(slug) if slug is not None else None, org_slug=str(org) if org is not None else None
    )


def answer(body: Any) -> Answer:
    """Read the `status` of a function call or contact request; anything unexpected reads as unanswered."""
    data = body if isinstance(body, dict) else {}
    raw = data.get("status")
    status: dict[str, Any] = raw if isinstance(raw, dict) else {}
    responded_at = status.get("responded_at")
    approved = status.get("approved")
    return Answer(
        # A function call is decided when `approved` is set (some replies omit responded_at).
        responded=bool(responded_at) or isinstance(approved, bool),
        approved=approved if isinstance(approved, bool) else None,
        comment=str(status.get("comment") or ""),
        response=str(status.get("response") or ""),
        responded_at=str(responded_at) if responded_at else None,
    )
