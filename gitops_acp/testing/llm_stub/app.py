"""The HTTP face of the stub: the OpenAI endpoints and the /_stub control endpoints, as a Starlette app.

``POST /v1/chat/completions`` (also Azure's ``/openai/deployments/<d>/chat/completions``),
``GET /v1/models``; ``GET /_stub/requests``: the recorded requests, oldest first, each
``{time, method, path, query, status, authorization, authScheme, apiKeyHeader, userAgent, body}`` (time
received in epoch seconds; whether an Authorization header came and its scheme, whether an Azure
``api-key`` header came: never a credential); ``POST /_stub/script`` replaces the script;
``POST /_stub/reset`` clears records and ``times`` counters (tool-call ids keep counting, so one
server never reuses one).

Streaming (``"stream": true``) is answered with correct SSE chunks (role, content, tool-call
deltas, finish reason, a usage chunk when ``stream_options.include_usage``, then ``[DONE]``), built
in one piece: the stub never streams slowly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gitops_acp.testing.llm_stub.replies import StubState, error_reply
from gitops_acp.testing.llm_stub.script import load_script

__all__ = ["create_app"]


def _sse(payload: Mapping[str, Any], *, include_usage: bool) -> bytes:
    """Render a chat.completion as the chunks a streaming server sends."""
    choice = payload["choices"][0]
    message = choice["message"]
    base = {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"]}
    base["model"] = payload["model"]

    def chunk(delta: Mapping[str, Any], finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""}, None)]
    if message.get("content"):
        chunks.append(chunk({"content": message["content"]}, None))
    for index, call in enumerate(message.get("tool_calls") or []):
        chunks.append(chunk({"tool_calls": [{"index": index, **call}]}, None))
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": payload["usage"]})
    lines = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks]
    lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def create_app(state: StubState) -> Starlette:
    """Build the ASGI app serving `state` (the OpenAI endpoints and the /_stub control endpoints)."""

    async def chat_completions(request: Request) -> Response:
        headers = request.headers
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
            reply = error_reply(400, "could not parse the request body as JSON")
        else:
            reply = state.chat(body, headers)
        query = request.scope["query_string"].decode()
        state.record("POST", request.scope["path"], headers, body, reply.status, query)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.stream and reply.status == 200:
            options = body.get("stream_options") or {}
            return Response(
                _sse(reply.payload, include_usage=bool(options.get("include_usage"))),
                media_type="text/event-stream",
            )
        if isinstance(reply.payload, str):  # a scripted raw body: an HTML error page, plain text
            return Response(reply.payload, reply.status, reply.headers, media_type="text/plain")
        return _json(reply.payload, reply.status, reply.headers)

    async def models(request: Request) -> Response:
        state.record("GET", request.scope["path"], request.headers, None, 200)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "gitops-acp-stub"}
            for m in state.script.models
        ]
        return _json({"object": "list", "data": data})

    async def get_requests(request: Request) -> Response:
        return _json(state.requests())

    async def set_script(request: Request) -> Response:
        try:
            state.set_script(load_script(json.loads(await request.body())))
        except ValueError as exc:
            return _json({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        return _json({"ok": True})

    async def reset(request: Request) -> Response:
        state.reset()
        return _json({"ok": True})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            # Azure OpenAI's layout, so apiType AZURE / AZURE_AD can be tested against the stub too.
            Route("/openai/deployments/{deployment}/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_stub/requests", get_requests, methods=["GET"]),
            Route("/_stub/script", set_script, methods=["POST"]),
            Route("/_stub/reset", reset, methods=["POST"]),
        ]
    )
