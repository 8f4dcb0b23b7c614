"""`GET /v1/tasks/{name}/history` and `GET /v1/whoami`: what the web view (DESIGN §13) reads besides
the resources themselves.

A task's history is its checkpoint commits on the status branch, as `gitops-acp history task NAME`
prints them (store/history.py: bounded `git log` of its status file), oldest first. `whoami` tells
a page which buttons to show: the caller's name and roles (the API refuses anyway).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gitops_acp.api.app import Service
from gitops_acp.api.errors import ApiError
from gitops_acp.api.reading import Reads
from gitops_acp.api.tasks import name_param
from gitops_acp.api.tokens import Caller
from gitops_acp.resources.meta import Kind

__all__ = ["DEFAULT_HISTORY", "MAX_HISTORY", "checkpoints", "task_history", "whoami"]

DEFAULT_HISTORY = 100
MAX_HISTORY = 1000


def checkpoints(reads: Reads, name: str, *, limit: int) -> tuple[str, list[dict[str, Any]]] | None:
    """(branch, the task's newest `limit` checkpoints oldest first), or None when it has no status."""
    from gitops_acp.store import history, statusbranches

    repo = reads.reader()
    events: list[history.Event] = []
    branch = ""
    for branch in statusbranches.history_order(repo, kind=str(Kind.Task), name=name):
        events = history.events(repo, branch=branch, kind=str(Kind.Task), name=name, n=limit)
        if events:
            break
    if not events and reads.one(Kind.Task, name) is None:
        return None
    items = [
        {
            "commit": event.sha,
            "time": datetime.fromtimestamp(event.timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "from": event.old_phase,
            "to": event.new_phase,
            "detail": event.detail,
        }
        for event in reversed(events)
    ]
    return branch, items


async def task_history(request: Request, service: Service, caller: Caller) -> Response:
    """GET /v1/tasks/{name}/history?limit=: {branch, items: [{commit, time, from, to, detail}]}."""
    name = name_param(request, Kind.Task)
    text = request.query_params.get("limit")
    limit = DEFAULT_HISTORY
    if text is not None:
        if not text.isdigit() or not 1 <= int(text) <= MAX_HISTORY:
            raise ApiError(422, f"limit={text}: expected a number from 1 to {MAX_HISTORY}")
        limit = int(text)
    found = await service.reads.run(lambda reads: checkpoints(reads, name, limit=limit))
    if found is None:
        raise ApiError(404, f'Task "{name}" not found (neither on main nor on the status branch)')
    branch, items = found
    return JSONResponse({"branch": branch, "items": items})


async def whoami(request: Request, service: Service, caller: Caller) -> Response:
    """GET /v1/whoami: the caller's name, email and roles (implied ones included)."""
    return JSONResponse({"name": caller.name, "email": caller.email, "roles": sorted(caller.roles)})
