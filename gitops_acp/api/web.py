"""The web view at `/` (DESIGN §13; docs/web.md): one static page that reads the `/v1` API, and a
text answer for `curl`.

    GET /          Accept names text/html (a browser) ──► web/index.html (the page signs in with a
                   token kept in sessionStorage and calls /v1 with it: the page itself holds no data)
                   otherwise (curl, Accept: text/plain or */*) ──► plain text: the tasks and what
                   waits for a person, or `?task=NAME`: one task; behind the viewer role
    GET /web/FILE  app.js, app.css: the package's own files (no CDN, works offline)

Every answer carries a Content-Security-Policy that allows only this origin's script and style
(no inline script, no eval, no other host) and no framing; the page builds its DOM with
`textContent`, never HTML from data, so a task's text is shown, not run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gitops_acp.api.app import Service, guarded
from gitops_acp.api.errors import ApiError
from gitops_acp.api.reading import Reads
from gitops_acp.api.tokens import VIEWER, Caller
from gitops_acp.resources.meta import Kind, TaskPhase, ToolCallPhase, check_name

__all__ = ["FILES", "HEADERS", "asset", "render_task", "render_tasks", "routes", "wants_html"]

#: The page's files, served from the package (gitops_acp/api/web/), with their media types.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_WAITING = (ToolCallPhase.AwaitingHumanApproval, ToolCallPhase.AwaitingHumanInput)
_TEXT_LIMIT = 100


def asset(name: str) -> bytes:
    """One of the page's files, read from the installed package."""
    return resources.files("gitops_acp.api").joinpath("web", name).read_bytes()


def wants_html(accept: str | None) -> bool:
    """Whether the Accept header names HTML (browsers do; curl sends */*, which gets text)."""
    return any(part.split(";")[0].strip() == "text/html" for part in (accept or "").split(","))


def routes(service: Service) -> list[BaseRoute]:
    """`/` and `/web/{file}`, beside the API."""
    text = guarded(service, VIEWER, _text)

    async def index(request: Request) -> Response:
        if wants_html(request.headers.get("accept")):
            return Response(asset("index.html"), media_type=FILES["index.html"], headers=HEADERS)
        answer = await text(request)
        if answer.media_type == "application/json":  # refused: say it in text, as curl shows it
            import json

            message = json.loads(bytes(answer.body))["error"]["message"]
            hint = "\ncurl -H 'Authorization: Bearer TOKEN' -H 'Accept: text/plain' URL\n"
            headers = {k: v for k, v in answer.headers.items() if k.lower() == "www-authenticate"}
            return PlainTextResponse(
                f"{answer.status_code}: {message}{hint if answer.status_code == 401 else ''}\n",
                status_code=answer.status_code,
                headers={**HEADERS, **headers},
            )
        return answer

    async def static(request: Request) -> Response:
        name = str(request.path_params["file"])
        if name not in FILES or name == "index.html":
            return PlainTextResponse(f"no such file: /web/{name}\n", status_code=404, headers=HEADERS)
        return Response(asset(name), media_type=FILES[name], headers=HEADERS)

    return [Route("/", index, methods=["GET"]), Route("/web/{file}", static, methods=["GET"])]


async def _text(request: Request, service: Service, caller: Caller) -> Response:
    """The text view: `?task=NAME` one task, else the tasks (`?phase=&agent=`) and what waits."""
    name = request.query_params.get("task")
    if name is not None:
        problem = check_name(name)
        if problem:
            raise ApiError(422, f'task name "{name}": {problem}')
        body = await service.reads.run(lambda reads: _one_task(reads, name))
        if body is None:
            raise ApiError(404, f'Task "{name}" not found (neither on main nor on the status branch)')
    else:
        phase = request.query_params.get("phase") or None
        if phase is not None and phase not in list(TaskPhase):
            raise ApiError(422, f"phase={phase}: not a Task phase; use one of {', '.join(TaskPhase)}")
        agent = request.query_params.get("agent") or None
        body = await service.reads.run(lambda reads: _overview(reads, phase, agent))
    return PlainTextResponse(
        f"signed in as {caller} ({', '.join(sorted(caller.roles))})\n\n{body}", headers=HEADERS
    )


def _overview(reads: Reads, phase: str | None, agent: str | None) -> str:
    def accept(document: dict[str, Any]) -> bool:
        spec, status = document.get("spec") or {}, document.get("status") or {}
        return (phase is None or status.get("phase") == phase) and (
            agent is None or (spec.get("agentRef") or {}).get("name") == agent
        )

    tasks = reads.page(Kind.Task, accept, limit=_TEXT_LIMIT, after=None, archived=False)
    waiting = reads.page(
        Kind.ToolCall,
        lambda d: (d.get("status") or {}).get("phase") in _WAITING,
        limit=_TEXT_LIMIT,
        after=None,
        archived=False,
    )
    return (
        render_tasks(tasks.documents, more=tasks.next_after is not None)
        + "\n"
        + _render_waiting(waiting.documents)
    )


def _one_task(reads: Reads, name: str) -> str | None:
    from gitops_acp.api.checkpoints import checkpoints

    found = reads.one(Kind.Task, name)
    if found is None:
        return None
    calls = reads.page(
        Kind.ToolCall,
        lambda d: ((d.get("spec") or {}).get("taskRef") or {}).get("name") == name,
        limit=1000,
        after=None,
        archived=True,
    )
    history = checkpoints(reads, name, limit=100)
    return render_task(found.document, calls.documents, history[1] if history else [])


def _age(stamp: Any, now: datetime) -> str:
    if not isinstance(stamp, str):
        return "-"
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _line(text: Any, width: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _preview(document: dict[str, Any]) -> str:
    spec = document.get("spec") or {}
    if spec.get("userMessage"):
        return str(spec["userMessage"])
    users = [m for m in spec.get("contextWindow") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1].get("content") or "") if users else ""


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def render_tasks(documents: list[dict[str, Any]], *, more: bool = False, now: datetime | None = None) -> str:
    """The tasks as a table: name, phase, agent, age, preview, output."""
    now = now or datetime.now(UTC)
    rows = [["NAME", "PHASE", "AGENT", "AGE", "MESSAGE", "OUTPUT"]]
    for document in documents:
        spec, status = document.get("spec") or {}, document.get("status") or {}
        rows.append(
            [
                str((document.get("metadata") or {}).get("name", "?")),
                str(status.get("phase") or "-"),
                str((spec.get("agentRef") or {}).get("name") or "-"),
                _age(status.get("startTime"), now),
                _line(_preview(document), 40),
                _line(status.get("output"), 50),
            ]
        )
    title = f"TASKS ({len(documents)}{', more: use the API to page' if more else ''})"
    return f"{title}\n{_table(rows) if documents else '(none)'}\n"


def _render_waiting(documents: list[dict[str, Any]]) -> str:
    rows = [["TOOLCALL", "TASK", "WAITS FOR", "TOOL", "ARGUMENTS"]]
    for document in documents:
        spec, status = document.get("spec") or {}, document.get("status") or {}
        rows.append(
            [
                str((document.get("metadata") or {}).get("name", "?")),
                str((spec.get("taskRef") or {}).get("name") or "-"),
                "approval" if status.get("phase") == ToolCallPhase.AwaitingHumanApproval else "an answer",
                str((spec.get("toolRef") or {}).get("name") or "-"),
                _line(spec.get("arguments"), 60),
            ]
        )
    return f"WAITING FOR A PERSON ({len(documents)})\n{_table(rows) if documents else '(none)'}\n"


def render_task(document: dict[str, Any], calls: list[dict[str, Any]], history: list[dict[str, Any]]) -> str:
    """One task: its fields, context window, tool calls and checkpoints."""
    spec, status = document.get("spec") or {}, document.get("status") or {}
    name = (document.get("metadata") or {}).get("name", "?")
    out = [
        f"TASK {name}",
        f"phase: {status.get('phase') or '-'}",
        f"agent: {(spec.get('agentRef') or {}).get('name') or '-'}",
        f"detail: {status.get('statusDetail') or '-'}",
        f"output: {status.get('output') or '-'}",
        "",
        "CONTEXT WINDOW",
    ]
    for message in status.get("contextWindow") or []:
        content = str(message.get("content") or "")
        out.append(f"[{message.get('role', '?')}] {content}".rstrip())
        for call in message.get("toolCalls") or []:
            function = call.get("function") or {}
            out.append(f"  -> {function.get('name')}({function.get('arguments') or ''})")
    for number, follow_up in enumerate(spec.get("followUps") or [], start=1):
        if number == 1:
            out += ["", "FOLLOW-UPS"]
        out.append(f"{number}. {follow_up.get('content') if isinstance(follow_up, dict) else follow_up}")
    out += ["", "TOOL CALLS"]
    for call in calls:
        cspec, cstatus = call.get("spec") or {}, call.get("status") or {}
        approval = cstatus.get("approval") or {}
        decided = f"  decided by {approval['decidedBy']}" if approval.get("decidedBy") else ""
        out.append(
            f"{call['metadata']['name']}  {(cspec.get('toolRef') or {}).get('name')}  "
            f"{cstatus.get('phase') or '-'}{decided}"
        )
        out.append(f"  arguments: {cspec.get('arguments') or ''}")
        if cstatus.get("result"):
            out.append(f"  result: {cstatus['result']}")
    if not calls:
        out.append("(none)")
    out += ["", "CHECKPOINTS"]
    out += [
        f"{item['commit'][:10]}  {item['time']}  {item['from']} -> {item['to']}  {item['detail']}"
        for item in history
    ]
    return "\n".join(out) + "\n"
