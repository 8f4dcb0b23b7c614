"""`/v1/toolcalls`: list tool calls, and decide the pending ones as the caller (DESIGN §11).

    POST /v1/toolcalls/{name}/approve {comment}  ─┐  the file humans/records.py builds from the
    POST /v1/toolcalls/{name}/reject  {reason}   ─┼─ proposal branch, the same one `gitops-acp
    POST /v1/toolcalls/{name}/respond {response} ─┘  approve|reject|respond` commits, on main as the caller

The channel's `approvers` apply: a caller they do not name is refused (403) before anything is
committed, and a channel whose decisions must come through its forge's pull requests, or be
signed, refuses an API decision (409) rather than committing one the reconciler would then refuse.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gitops_acp.api.app import Service, body_of
from gitops_acp.api.errors import ApiError
from gitops_acp.api.tasks import name_param, page_params, phase_param
from gitops_acp.api.tokens import Caller
from gitops_acp.api.writer import Base, Edit
from gitops_acp.controllers.deciders import matches
from gitops_acp.errors import UserError
from gitops_acp.humans import records
from gitops_acp.resources.meta import LABEL_TASK, Kind, ToolCallPhase

__all__ = ["decide", "get_toolcall", "list_toolcalls"]

#: action -> (the body's one field, required?, what it records)
ACTIONS = {
    "approve": ("comment", False, "approved"),
    "reject": ("reason", True, "rejected"),
    "respond": ("response", True, "answered"),
}


async def list_toolcalls(request: Request, service: Service, caller: Caller) -> Response:
    """GET /v1/toolcalls?phase=&task=&limit=&continue=&all= → {items, continue}."""
    limit, after, archived = page_params(request, Kind.ToolCall)
    phase = phase_param(request, Kind.ToolCall, [str(p) for p in ToolCallPhase])
    task = request.query_params.get("task") or None

    def accept(document: dict[str, Any]) -> bool:
        labels = (document.get("metadata") or {}).get("labels") or {}
        spec = document.get("spec") or {}
        owner = labels.get(LABEL_TASK) or (spec.get("taskRef") or {}).get("name")
        status = document.get("status") or {}
        return (phase is None or status.get("phase") == phase) and (task is None or owner == task)

    listed = await service.reads.run(
        lambda reads: reads.page(
            Kind.ToolCall, accept, limit=limit, after=after, archived=archived, phase=phase
        )
    )
    return JSONResponse({"items": listed.documents, "continue": listed.next_after})


async def get_toolcall(request: Request, service: Service, caller: Caller) -> Response:
    """GET /v1/toolcalls/{name}: one tool call (archived ones too)."""
    name = name_param(request, Kind.ToolCall)
    found = await service.reads.run(lambda reads: reads.one(Kind.ToolCall, name))
    if found is None:
        raise ApiError(404, f'ToolCall "{name}" not found (on no status branch)')
    return JSONResponse(found.document)


def _channel_of(call: dict[str, Any], action: str) -> str | None:
    status = call.get("status") or {}
    held = status.get("humanContact") if action == "respond" else status.get("approval")
    return (held or {}).get("channel") if isinstance(held, dict) else None


async def _check_approvers(service: Service, caller: Caller, name: str, action: str) -> None:
    """403 when the call's channel names approvers and not the caller; 409 when its decisions
    must come through a forge's pull request (the reconciler would refuse a direct commit)."""

    def read(reads: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        call = reads.one(Kind.ToolCall, name)
        if call is None:
            return None, None
        channel_name = _channel_of(call.document, action)
        channel = reads.one(Kind.ContactChannel, channel_name) if channel_name else None
        return call.document, channel.document if channel is not None else None

    call, channel = await service.reads.run(read)
    if call is None:
        raise ApiError(404, f'ToolCall "{name}" not found (on no status branch)')
    git = ((channel or {}).get("spec") or {}).get("git") or {}
    approvers = [str(a) for a in git.get("approvers") or []]
    if not approvers:
        return
    channel_name = ((channel or {}).get("metadata") or {}).get("name", "?")
    if not matches(str(caller), approvers):
        raise ApiError(
            403,
            f"{caller} is not one of the approvers of ContactChannel {channel_name} ({', '.join(approvers)})",
        )
    forge = str(git.get("forge") or "none")
    if forge != "none":
        raise ApiError(
            409,
            f"ContactChannel {channel_name} has approvers and a forge ({forge}): its decisions count only "
            "as a merged pull request; decide there",
        )
    if service.signed_decisions:
        raise ApiError(
            409,
            f"ContactChannel {channel_name} has approvers and the policy checks signers: a decision "
            "counts only when signed by an allowed signer (the API cannot sign for you); use "
            "`gitops-acp approve` with your signing key",
        )


async def decide(request: Request, service: Service, caller: Caller) -> Response:
    """POST /v1/toolcalls/{name}/approve|reject|respond: commit the decision as the caller."""
    action = str(request.path_params["action"])
    if action not in ACTIONS:
        raise ApiError(404, f"no such action {action!r}: approve, reject or respond")
    field, required, verb = ACTIONS[action]
    name = name_param(request, Kind.ToolCall)
    body = await body_of(request, (field,))
    text = body.get(field, "")
    if not isinstance(text, str):
        raise ApiError(422, f"{field}: expected a string")
    if required and not text.strip():
        raise ApiError(
            422,
            f"{field}: required and not empty ("
            + ("why: the model reads it as the tool's result)" if action == "reject" else "your answer)"),
        )
    if service.signed_main:
        raise ApiError(
            409,
            f"{service.branch} must be signed (the policy's requireSignedMain), and a decision signed by "
            "serve would name serve, not you, as the one who decided: decide with your own signing key "
            "(gitops-acp approve, or a signed merge)",
        )
    await _check_approvers(service, caller, name, action)
    recorded: dict[str, str] = {}

    def prepare(base: Base) -> dict[str, bytes | None]:
        try:
            if action == "respond":
                record = records.answer(
                    base.repo, name, response=text, main=base.commit, branch=service.branch
                )
            else:
                record = records.decision(
                    base.repo, name, decision=verb, comment=text, main=base.commit, branch=service.branch
                )
        except records.NotPending as exc:
            raise ApiError(404, str(exc)) from None
        except records.AlreadyDecided as exc:
            raise ApiError(409, str(exc)) from None
        except UserError as exc:
            raise ApiError(422, str(exc)) from None
        if record.path in base.taken:
            raise ApiError(409, f"{name} is decided by another request of this commit")
        subject, _, rest = record.message.partition("\n\n")
        edit.subject, edit.body = subject, rest
        recorded["path"] = record.path
        return {record.path: record.data}

    edit = Edit(caller=caller, subject=f"Decide {name}", prepare=prepare)
    sha = await service.writer.submit(edit)
    return JSONResponse({"name": name, "decision": verb, "path": recorded.get("path"), "commit": sha})
