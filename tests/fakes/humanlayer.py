"""A local HumanLayer: the endpoints gitops-acp uses, in memory, over real HTTP on 127.0.0.1.

    GET  /humanlayer/v1/project                      the project of a project key
    GET  /humanlayer/v1/contact_channel/{id}         a channel, for its channel key
    POST /humanlayer/v1/function_calls               {run_id, call_id, spec{fn, kwargs, channel?}}
    GET  /humanlayer/v1/function_calls/{call_id}     + status{requested_at, responded_at, approved, comment}
    POST /humanlayer/v1/contact_requests             {run_id, call_id, spec{msg, channel?}}
    GET  /humanlayer/v1/contact_requests/{call_id}   + status{requested_at, responded_at, response}

Every API request needs `Authorization: Bearer <key>` with a known key (401 otherwise); a POST with
a call id already used is a 409; a malformed body a 400; `fail_next(method, path, status)` makes the
next matching request fail (with Retry-After, if given). The test-only side, for "the human":

    POST /_test/function_calls/{call_id}/respond     {approved, comment}
    POST /_test/contact_requests/{call_id}/respond   {response}
    GET  /_test/requests                             every request: {method, path, authorized, body}

`with HumanLayerFake(keys=...) as hl:` serves from a daemon thread and stops on exit (or after
`max_seconds`, whichever is first), so no test leaves it running.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_KINDS = {"function_calls": "fn", "contact_requests": "msg"}


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class State:
    """What the fake knows: keys, calls by kind and id, every request received."""

    project_keys: dict[str, tuple[str, str]]  # key -> (project_slug, org_slug)
    channel_keys: dict[str, str]  # key -> channel id
    calls: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"function_calls": {}, "contact_requests": {}}
    )
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # {method, path, status, retry_after}
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failure(self, method: str, path: str) -> Response | None:
        """The scripted error for this request, if one is due (each is used once)."""
        with self.lock:
            for i, failure in enumerate(self.failures):
                if failure["method"] == method and path.startswith(failure["path"]):
                    del self.failures[i]
                    headers = {"Retry-After": str(failure["retry_after"])} if failure["retry_after"] else {}
                    return JSONResponse(
                        {"detail": "scripted failure"}, status_code=failure["status"], headers=headers
                    )
        return None


def _app(state: State) -> Starlette:
    async def record(request: Request) -> tuple[str | None, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        known = key is not None and (key in state.project_keys or key in state.channel_keys)
        with state.lock:
            state.requests.append(
                {"method": request.method, "path": request.url.path, "authorized": known, "body": body}
            )
        return (key if known else None), body

    def scripted(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            failure = state.failure(request.method, request.url.path)
            if failure is not None:
                await record(request)
                return failure
            response: Response = await handler(request)
            return response

        return wrapped

    def unauthorized() -> Response:
        return JSONResponse({"detail": "Invalid API key"}, status_code=401)

    async def project(request: Request) -> Response:
        key, _ = await record(request)
        if key is None or key not in state.project_keys:
            return unauthorized()
        slug, org = state.project_keys[key]
        return JSONResponse({"project_slug": slug, "org_slug": org})

    async def channel(request: Request) -> Response:
        key, _ = await record(request)
        if key is None:
            return unauthorized()
        wanted = request.path_params["channel_id"]
        if state.channel_keys.get(key) != wanted:
            return JSONResponse({"detail": "contact channel not found"}, status_code=404)
        return JSONResponse({"id": wanted, "project_slug": "channel-project", "org_slug": "channel-org"})

    async def create(request: Request) -> Response:
        kind = request.path_params["kind"]
        key, body = await record(request)
        if key is None:
            return unauthorized()
        problem = _malformed(kind, body)
        if problem:
            return JSONResponse({"detail": problem}, status_code=400)
        assert isinstance(body, dict)
        with state.lock:
            if body["call_id"] in state.calls[kind]:
                return JSONResponse({"detail": "call_id already exists"}, status_code=409)
            status: dict[str, Any] = {"requested_at": _now(), "responded_at": None}
            status.update(
                {"approved": None, "comment": None} if kind == "function_calls" else {"response": None}
            )
            call = {**body, "status": status}
            state.calls[kind][body["call_id"]] = call
        return JSONResponse(call, status_code=200)

    async def get(request: Request) -> Response:
        kind = request.path_params["kind"]
        key, _ = await record(request)
        if key is None:
            return unauthorized()
        with state.lock:
            call = state.calls[kind].get(request.path_params["call_id"])
        if call is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(call)

    async def respond(request: Request) -> Response:
        kind = request.path_params["kind"]
        body = await request.json()
        with state.lock:
            call = state.calls[kind].get(request.path_params["call_id"])
            if call is None:
                return JSONResponse({"detail": "not found"}, status_code=404)
            call["status"].update(body)
            call["status"]["responded_at"] = _now()
        return JSONResponse(call)

    async def requests(request: Request) -> Response:
        with state.lock:
            return JSONResponse(list(state.requests))

    return Starlette(
        routes=[
            Route("/humanlayer/v1/project", scripted(project)),
            Route("/humanlayer/v1/contact_channel/{channel_id}", scripted(channel)),
            Route("/humanlayer/v1/{kind:str}", scripted(create), methods=["POST"]),
            Route("/humanlayer/v1/{kind:str}/{call_id}", scripted(get)),
            Route("/_test/{kind:str}/{call_id}/respond", respond, methods=["POST"]),
            Route("/_test/requests", requests),
        ]
    )


def _malformed(kind: str, body: Any) -> str | None:
    if kind not in _KINDS:
        return f"unknown collection {kind}"
    if not isinstance(body, dict) or not isinstance(body.get("run_id"), str) or not body.get("call_id"):
        return "run_id and call_id are required"
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return "spec is required"
    if kind == "function_calls" and (
        not isinstance(spec.get("fn"), str) or not isinstance(spec.get("kwargs"), dict)
    ):
        return "spec.fn (string) and spec.kwargs (object) are required"
    if kind == "contact_requests" and not isinstance(spec.get("msg"), str):
        return "spec.msg (string) is required"
    channel = spec.get("channel")
    if channel is not None:
        if not isinstance(channel, dict) or not ({"slack", "email"} & set(channel)):
            return "spec.channel needs slack or email"
        if "slack" in channel and not channel["slack"].get("channel_or_user_id"):
            return "channel.slack.channel_or_user_id is required"
        if "email" in channel and not channel["email"].get("address"):
            return "channel.email.address is required"
    return None


class HumanLayerFake:
    """The fake on 127.0.0.1 in a daemon thread: `with HumanLayerFake(project_keys=...) as hl: hl.url`."""

    def __init__(
        self,
        *,
        project_keys: dict[str, tuple[str, str]] | None = None,
        channel_keys: dict[str, str] | None = None,
        max_seconds: float = 600,
    ) -> None:
        self.state = State(project_keys=dict(project_keys or {}), channel_keys=dict(channel_keys or {}))
        self._max_seconds = max_seconds
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        """The API base (what `serve --humanlayer-url` gets)."""
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> HumanLayerFake:
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        config = uvicorn.Config(_app(self.state), log_config=None, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self._max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the HumanLayer fake did not start within 10s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    # -- the test's side, over HTTP like a person's client would be ---------------------------

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def approve(self, call_id: str, comment: str = "") -> None:
        """The human approves a function call."""
        self._call("POST", f"/_test/function_calls/{call_id}/respond", {"approved": True, "comment": comment})

    def reject(self, call_id: str, comment: str) -> None:
        """The human rejects a function call, with a comment."""
        self._call(
            "POST", f"/_test/function_calls/{call_id}/respond", {"approved": False, "comment": comment}
        )

    def answer(self, call_id: str, response: str) -> None:
        """The human answers a contact request."""
        self._call("POST", f"/_test/contact_requests/{call_id}/respond", {"response": response})

    def fail_next(self, method: str, path: str, status: int, *, retry_after: int | None = None) -> None:
        """Answer the next `method` request under `path` with `status` (and Retry-After), once."""
        with self.state.lock:
            self.state.failures.append(
                {"method": method, "path": path, "status": status, "retry_after": retry_after}
            )

    def requests(self) -> list[dict[str, Any]]:
        """Every request received, oldest first."""
        result: list[dict[str, Any]] = self._call("GET", "/_test/requests")
        return result

    def posts(self, kind: str) -> list[dict[str, Any]]:
        """The POSTs that reached a collection (`function_calls` or `contact_requests`)."""
        return [r for r in self.requests() if r["method"] == "POST" and r["path"] == f"/humanlayer/v1/{kind}"]

    def calls(self, kind: str) -> dict[str, dict[str, Any]]:
        """The calls the fake holds, by call id."""
        with self.state.lock:
            return {k: json.loads(json.dumps(v)) for k, v in self.state.calls[kind].items()}
