"""`serve --http ADDR`: health and forge webhooks, served beside the reconciler in the same event loop.

    GET  /healthz                 200 {"status": "ok"}: the process answers (liveness)
    GET  /readyz                  200 {"status": "ready"}, or 503 {"status": "not ready", "reason": ...}
                                  while starting (recovery), stopping, when the status branch
                                  cannot be written (a checkpoint failed after its bounded retries),
                                  or when the remote cannot be reached
    GET  /metrics                 Prometheus text format, no authentication (telemetry/metrics.py)
    POST /webhooks/github         X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>
    POST /webhooks/gitea          X-Gitea-Signature / X-Forgejo-Signature: <hex HMAC-SHA256>
    POST /webhooks/gitlab         X-Gitlab-Token: <the secret>  (compared in constant time)
         verified ──► Manager.webhook(forge, branch): poke the main loop (refs are read now), forget
                      polled pull-request states, re-check the approval of an `acp/approvals/` branch
         bad signature ──► 401 and one log line (never the secret, never the expected signature)
         no --webhook-secret-file ──► 403: webhooks are refused, never accepted unauthenticated
         a delivery id seen already (X-GitHub-Delivery, X-Gitea-Delivery, X-Gitlab-Event-UUID,
         Idempotency-Key; checked after the signature) ──► 200 {"duplicate": true}, nothing done

If the HTTP server stops on its own, `serve` stops too and exits 1: a reconciler that no longer
hears webhooks or answers /readyz must be restarted, not left running deaf.

A webhook is only a wake-up: what counts is still read from git (a decision on `main`) or asked of
the forge (a pull request closed without merging), so a forged or replayed event can cost a read,
never a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gitops_acp.errors import UserError
from gitops_acp.telemetry import metrics

__all__ = ["app", "listen", "parse_address", "serve"]

log = logging.getLogger("gitops_acp")

Hook = Callable[[str, str | None], None]
#: Delivery ids remembered to drop redeliveries (a forge retries for hours at most).
MAX_DELIVERIES = 10_000
_DELIVERY_HEADERS = (
    "X-GitHub-Delivery",
    "X-Gitea-Delivery",
    "X-Forgejo-Delivery",
    "X-Gitlab-Event-UUID",
    "Idempotency-Key",  # GitLab 17+ sends it too, the same on every retry
)
Readiness = Callable[[], str | None]  # None: ready; else why not


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UserError(f"--http {text}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket now, so a port in use is a one-line error rather than uvicorn's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"--http {host}:{port}: cannot listen: {exc.strerror or exc}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _verified(forge: str, secret: bytes, body: bytes, headers: Any) -> bool:
    if forge == "gitlab":
        return hmac.compare_digest(headers.get("x-gitlab-token", "").encode(), secret)
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if forge == "github":
        given = headers.get("x-hub-signature-256", "").removeprefix("sha256=")
    else:
        given = headers.get("x-gitea-signature") or headers.get("x-forgejo-signature") or ""
    return hmac.compare_digest(given.encode(), expected.encode())


def _branch(forge: str, headers: Any, payload: Any) -> str | None:
    """The head branch of a pull-request event (None for pushes, pings and anything else)."""
    if not isinstance(payload, dict):
        return None
    if forge == "gitlab":
        attributes = payload.get("object_attributes") or {}
        is_mr = headers.get("x-gitlab-event") == "Merge Request Hook"
        return str(attributes.get("source_branch")) if is_mr and attributes.get("source_branch") else None
    event = headers.get("x-github-event") or headers.get("x-gitea-event") or headers.get("x-forgejo-event")
    if event != "pull_request":
        return None
    ref = ((payload.get("pull_request") or {}).get("head") or {}).get("ref")
    return str(ref) if ref else None


def app(
    hook: Hook,
    secret: bytes | None,
    readiness: Readiness = lambda: None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The HTTP application: `hook(forge, branch)` is called for every verified event, once per
    delivery ID (the last MAX_DELIVERIES are remembered). `routes` are served beside ours (the API
    under /v1, /metrics)."""
    seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        reason = readiness()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    async def webhook(request: Request) -> JSONResponse:
        forge = request.path_params["forge"]
        if forge not in ("github", "gitea", "gitlab"):
            return JSONResponse({"error": f"unknown forge {forge}"}, status_code=404)
        if secret is None:
            return JSONResponse(
                {"error": "webhooks are disabled: serve was started without --webhook-secret-file"},
                status_code=403,
            )
        body = await request.body()
        if not _verified(forge, secret, body, request.headers):
            client = request.client.host if request.client is not None else "?"
            log.warning("webhook /webhooks/%s from %s refused: missing or bad signature", forge, client)
            return JSONResponse({"error": "bad signature"}, status_code=401)
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        delivery = _delivery(request.headers)
        if delivery is not None:
            if (forge, delivery) in seen:  # a redelivery (the forge retried, or someone replays it)
                log.debug("webhook /webhooks/%s: delivery %s seen already", forge, delivery)
                return JSONResponse({"duplicate": True, "delivery": delivery}, status_code=200)
            seen[(forge, delivery)] = None
            while len(seen) > MAX_DELIVERIES:
                seen.popitem(last=False)
        branch = _branch(forge, request.headers, payload)
        log.debug("webhook /webhooks/%s: branch %s", forge, branch)
        hook(forge, branch)
        return JSONResponse({"accepted": True, "branch": branch}, status_code=202)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/webhooks/{forge}", webhook, methods=["POST"]),
            *routes,
        ]
    )


def _delivery(headers: Any) -> str | None:
    """The forge's id of this delivery (the same on a redelivery), if it sent one."""
    for name in _DELIVERY_HEADERS:
        value = headers.get(name)
        if value:
            return str(value)[:200]
    return None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the manager owns SIGINT/SIGTERM and stops us after."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    run: Callable[[], Any],
    hook: Hook,
    sock: socket.socket,
    secret: bytes | None,
    readiness: Readiness = lambda: None,
    stop: Callable[[], None] = lambda: None,
    routes: Sequence[BaseRoute] = (),
) -> int:
    """Serve HTTP on `sock` while `run()` (the manager) runs; stop serving when it returns.

    Supervised: if the HTTP server stops on its own (it crashed), `stop()` stops the manager and
    this returns 1, so a supervisor restarts `serve` rather than leaving it running deaf.
    """
    config = uvicorn.Config(
        app(hook, secret, readiness, routes), log_level="warning", lifespan="off", access_log=False
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    host, port = sock.getsockname()[:2]
    log.info(
        "listening on http://%s:%d (GET /healthz, /readyz, /metrics, POST /webhooks/<forge>)", host, port
    )
    if secret is None:
        log.warning("no --webhook-secret-file: POST /webhooks/* is refused (403) until one is given")
    running = asyncio.ensure_future(run())
    try:
        await asyncio.wait({running, task}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            why = task.exception() if not task.cancelled() else None
            log.error(
                "the HTTP server stopped (%s): stopping serve rather than running deaf", why or "no reason"
            )
            stop()
            await running
            return 1
        code: int = running.result()
        return code
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
