"""The `/v1` routes of `serve --http` (DESIGN §11): authentication, roles, JSON in and out.

    request ──► route ──► guarded(role): Bearer token ──► Caller (401 without, 403 without the role)
            ──► handler (api/tasks.py, api/toolcalls.py): reads on the read thread (api/reading.py),
                writes through the single writer of main (api/writer.py), as the caller
            ──► JSON; any failure is {"error": {"code": N, "message": "..."}}

Mounted by `cli/commands/serve.py` through `reactor/webhooks.serve(routes=...)`, beside /healthz.
Without a tokens file every `/v1` request except the OpenAPI document is refused (403, saying so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from gitops_acp.api import openapi
from gitops_acp.api.errors import ApiError, error_response
from gitops_acp.api.reading import Reads
from gitops_acp.api.tokens import Caller, Tokens
from gitops_acp.api.writer import MainWriter
from gitops_acp.errors import ACPError, StoreError
from gitops_acp.store.git import redact_url

__all__ = ["MAX_BODY", "Service", "body_of", "routes"]

log = logging.getLogger("gitops_acp")

#: The largest request body accepted (413 above it).
MAX_BODY = 1024 * 1024
#: A body announced larger than MAX_BODY is still read (and dropped) up to this size before the 413,
#: so that a client still sending hears the answer instead of a reset connection.
DRAIN_MAX = 16 * MAX_BODY

Handler = Callable[[Request, "Service", Caller], Awaitable[Response]]


@dataclass
class Service:
    """What the handlers need: the tokens, the readers, the writer of main, and a poke of the manager."""

    tokens: Tokens | None
    reads: Reads
    writer: MainWriter
    branch: str = "main"
    signed_decisions: bool = False  # the policy checks signers: a decision must be signed to count
    signed_main: bool = (
        False  # the policy requires signed main: a decision signed by serve is not the caller's
    )
    events: Callable[[Request], Awaitable[Response]] | None = None  # GET /v1/events, once it exists

    async def aclose(self) -> None:
        """Stop the writer and close the repositories."""
        await self.writer.aclose()
        await self.reads.aclose()


def guarded(service: Service, role: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """`handler` behind the token check and `role`; every error as the API's JSON error."""

    async def endpoint(request: Request) -> Response:
        try:
            caller = _authorize(service, request, role)
            return await handler(request, service, caller)
        except ApiError as exc:
            return error_response(exc.code, exc.message, exc.headers)
        except StoreError as exc:  # the repository could not be read or written now
            return error_response(503, redact_url(str(exc)))
        except ACPError as exc:  # a refusal of the program's own (a bad name)
            return error_response(422, str(exc))
        except Exception:
            log.exception("API %s %s failed", request.method, request.url.path)
            return error_response(500, "internal error (see serve's log)")

    return endpoint


def _authorize(service: Service, request: Request, role: str) -> Caller:
    if service.tokens is None:
        raise ApiError(403, "the API is disabled: serve was started without --api-tokens FILE")
    caller = service.tokens.authenticate(request.headers.get("authorization"))
    if caller is None:
        given = "missing" if not request.headers.get("authorization") else "not a valid token"
        raise ApiError(
            401,
            f"authentication required: send Authorization: Bearer <token> (the token is {given})",
            headers={"WWW-Authenticate": 'Bearer realm="gitops-acp"'},
        )
    if not caller.has(role):
        held = ", ".join(sorted(caller.roles))
        raise ApiError(
            403, f'{caller} has no role "{role}" (has: {held}); ask for it in the --api-tokens file'
        )
    return caller


async def body_of(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object: at most MAX_BODY bytes, only `allowed` keys (422 naming the others)."""
    length = request.headers.get("content-length")
    received = bytearray()
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        if int(length) <= DRAIN_MAX:  # read it (and drop it), so the client hears the answer
            async for _chunk in request.stream():
                pass
        raise ApiError(413, f"the body is {length} bytes; at most {MAX_BODY} (1 MiB) are accepted")
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_BODY:
            raise ApiError(413, f"the body is over {MAX_BODY} bytes (1 MiB), the most accepted")
    if not received.strip():
        raise ApiError(400, "the body is empty: send a JSON object")
    try:
        data = json.loads(received)
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"the body must be a JSON object, not {type(data).__name__}")
    unknown = sorted(key for key in data if key not in allowed)
    if unknown:
        raise ApiError(422, f"{unknown[0]}: unknown field; allowed: {', '.join(allowed)}")
    return data


def routes(service: Service) -> list[BaseRoute]:
    """The `/v1` routes, ready for `webhooks.serve(routes=...)`."""
    from gitops_acp.api import checkpoints, tasks, tokens, toolcalls, web

    viewer, operator, approver = tokens.VIEWER, tokens.OPERATOR, tokens.APPROVER
    events = service.events
    described = openapi.document(events=events is not None)

    async def document(request: Request) -> Response:
        return JSONResponse(described)

    async def unknown(request: Request) -> Response:
        """404 in JSON, or 405 (with Allow) when the path exists with other methods."""
        allowed = sorted(
            {
                method
                for route in found[:-1]
                if isinstance(route, Route) and route.matches(request.scope)[0] == Match.PARTIAL
                for method in route.methods or ()
                if method != "HEAD"
            }
        )
        where = f"{request.method} {request.url.path}"
        if allowed:
            return error_response(
                405, f"{where}: not allowed; use {', '.join(allowed)}", {"Allow": ", ".join(allowed)}
            )
        return error_response(404, f"no such endpoint: {where} (see /v1/openapi.json)")

    found: list[BaseRoute] = [
        Route("/v1/openapi.json", document, methods=["GET"]),
        Route("/v1/tasks", guarded(service, viewer, tasks.list_tasks), methods=["GET"]),
        Route("/v1/tasks", guarded(service, operator, tasks.create), methods=["POST"]),
        Route("/v1/tasks/{name}", guarded(service, viewer, tasks.get_task), methods=["GET"]),
        Route("/v1/tasks/{name}", guarded(service, operator, tasks.cancel), methods=["DELETE"]),
        Route("/v1/tasks/{name}/messages", guarded(service, operator, tasks.send), methods=["POST"]),
        Route(
            "/v1/tasks/{name}/history", guarded(service, viewer, checkpoints.task_history), methods=["GET"]
        ),
        Route("/v1/whoami", guarded(service, viewer, checkpoints.whoami), methods=["GET"]),
        Route("/v1/toolcalls", guarded(service, viewer, toolcalls.list_toolcalls), methods=["GET"]),
        Route("/v1/toolcalls/{name}", guarded(service, viewer, toolcalls.get_toolcall), methods=["GET"]),
        Route(
            "/v1/toolcalls/{name}/{action:str}",
            guarded(service, approver, toolcalls.decide),
            methods=["POST"],
        ),
    ]
    if events is not None:
        stream = events

        async def sse(request: Request, _service: Service, _caller: Caller) -> Response:
            return await stream(request)

        found.append(Route("/v1/events", guarded(service, viewer, sse), methods=["GET"]))
    everything = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # (a function route is GET only)
    found.append(Route("/v1/{rest:path}", unknown, methods=everything))
    return found + web.routes(service)  # the web view (DESIGN §13): /, /web/*
