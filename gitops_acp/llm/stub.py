"""A scripted OpenAI-compatible server: the fake LLM behind tests, ``gitops-acp demo`` and benchmarks.

Nothing is monkeypatched: the real ``OpenAIClient`` talks HTTP to this server on 127.0.0.1, so
tests exercise the SDK, the wire format and the error mapping exactly as production does. A small
script decides each reply; every request body is recorded so a test can check what was sent.

Script (a dict, or a YAML/JSON file)::

    apiKey: sk-test          # optional: requests without "Authorization: Bearer sk-test" (or Azure's
                             #   "api-key: sk-test") get a 401, as from a real provider
    strict: true             # default: reject message sequences OpenAI rejects (see _check_request)
    models: [stub-model]     # what GET /v1/models lists
    rules:                   # first match wins; no match → default reply
      - match: "weather"     # regex searched in the FIRST user message (absent = any)
        model: "^gpt-"       # regex searched in the request's model (absent = any)
        when: first          # first: no assistant turn yet | tool: last message is a tool result | any
        times: 2             # at most N requests per conversation (= first user message), then fall through
        delayMs: 50          # wait before answering (also works alone, with the default reply)
        status: 503          # an OpenAI-shaped error {"error": {message, type, code}} with this status
        message: overloaded
        code: null           # error.code (optional)
        retryAfter: 2        # Retry-After header, seconds (retryAfterMs: retry-after-ms)
        content: "Sunny: {tool}"   # final answer; {user} = last user message, {tool} = last tool result
        toolCalls:           # tool calls (ids call_<n>, unique per server); placeholders work in arguments
          - {name: weather__get, arguments: {city: Paris}}
        usage: {prompt_tokens: 10, completion_tokens: 2}
        body: {choices: []}  # reply with this body verbatim, with `status` (default 200): JSON, or a
                             #   string sent as text/plain (to test invalid responses, HTML error pages)

Default reply when no rule matches: ``"Tool result: {tool}"`` after a tool result, else
``"Echo: {user}"``. Usage is always returned: prompt tokens ≈ words in the request's messages,
completion tokens ≈ words in the reply (a rule's ``usage`` overrides).

Streaming (``"stream": true``) is answered with correct SSE chunks (role, content, tool-call
deltas, finish reason, a usage chunk when ``stream_options.include_usage``, then ``[DONE]``), built
in one piece: the stub never streams slowly.

HTTP: ``POST /v1/chat/completions`` (also Azure's ``/openai/deployments/<d>/chat/completions``),
``GET /v1/models``; ``GET /_stub/requests``: the recorded requests, oldest first, each
``{time, method, path, query, status, authorization, authScheme, apiKeyHeader, userAgent, body}`` (time
received in epoch seconds; whether an Authorization header came and its scheme, whether an Azure
``api-key`` header came: never a credential); ``POST /_stub/script`` replaces the script;
``POST /_stub/reset`` clears records and ``times`` counters (tool-call ids keep counting, so one
server never reuses one).

Memory stays bounded for 1000-task benchmarks: the last ``max_records`` requests are kept, and
``times`` counters are pruned oldest-first. Regexes are compiled when a script is loaded.

Run it in a thread (``with StubServer(script) as stub: stub.url``), in the running event loop
(``async with StubServer(script)``), or as a process: ``python -m gitops_acp.llm.stub --port 0
--script s.yaml`` prints its URL as the first line of stdout and exits when its parent dies or
after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hmac
import itertools
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Rule", "Script", "StubServer", "create_app", "load_script", "main"]

_WHENS = ("first", "tool", "any")
_RULE_KEYS = frozenset(
    {
        "match",
        "model",
        "when",
        "times",
        "status",
        "message",
        "code",
        "retryAfter",
        "retryAfterMs",
        "delayMs",
        "content",
        "toolCalls",
        "usage",
        "body",
    }
)
_SCRIPT_KEYS = frozenset({"rules", "apiKey", "strict", "models"})
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_MAX_COUNTERS = 100_000


@dataclass(frozen=True)
class Rule:
    """One compiled script rule; see the module docstring for the meaning of each field."""

    index: int
    match: re.Pattern[str] | None = None
    model: re.Pattern[str] | None = None
    when: str = "any"
    times: int | None = None
    status: int = 200
    message: str = ""
    code: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    delay: float = 0.0
    content: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()  # (name, arguments as JSON text)
    usage: Mapping[str, int] | None = None
    body: Any = None

    @property
    def replies(self) -> bool:
        """Whether this rule decides the reply (a rule with only delayMs keeps the default one)."""
        return bool(
            self.status >= 400 or self.content is not None or self.tool_calls or self.body is not None
        )


@dataclass(frozen=True)
class Script:
    """A compiled script: rules in order, and the server-wide options."""

    rules: tuple[Rule, ...] = ()
    api_key: str | None = None
    strict: bool = True
    models: tuple[str, ...] = ("stub-model",)


def load_script(source: Mapping[str, Any] | str | Path | None) -> Script:
    """Compile a script from a dict or a YAML/JSON file path; raise ValueError naming the bad field."""
    if source is None:
        return Script()
    if isinstance(source, str | Path):
        data = yaml.safe_load(Path(source).read_text())
        if data is None:
            return Script()
    else:
        data = source
    if not isinstance(data, Mapping):
        raise ValueError("script: expected a mapping with a `rules` list")
    unknown = set(data) - _SCRIPT_KEYS
    if unknown:
        raise ValueError(f"script: unknown keys {sorted(unknown)} (known: {sorted(_SCRIPT_KEYS)})")
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ValueError("script: `rules` must be a list")
    models = data.get("models") or ["stub-model"]
    api_key = data.get("apiKey")
    return Script(
        rules=tuple(_rule(i, raw) for i, raw in enumerate(raw_rules)),
        api_key=str(api_key) if api_key else None,
        strict=bool(data.get("strict", True)),
        models=tuple(str(m) for m in models),
    )


def _rule(index: int, raw: Any) -> Rule:
    where = f"script: rules[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_RULE_KEYS)})")
    when = raw.get("when", "any")
    if when not in _WHENS:
        raise ValueError(f"{where}.when: {when!r} is not one of {', '.join(_WHENS)}")
    calls = []
    for n, call in enumerate(raw.get("toolCalls") or []):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError(f"{where}.toolCalls[{n}]: expected {{name: str, arguments: dict}}")
        arguments = call.get("arguments", {})
        calls.append((call["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)))
    try:
        times = raw.get("times")
        usage = raw.get("usage")
        return Rule(
            index=index,
            match=re.compile(raw["match"]) if raw.get("match") is not None else None,
            model=re.compile(raw["model"]) if raw.get("model") is not None else None,
            when=when,
            times=int(times) if times is not None else None,
            status=int(raw.get("status", 200)),
            message=str(raw.get("message", "")),
            code=str(raw["code"]) if raw.get("code") is not None else None,
            retry_after=float(raw["retryAfter"]) if raw.get("retryAfter") is not None else None,
            retry_after_ms=float(raw["retryAfterMs"]) if raw.get("retryAfterMs") is not None else None,
            delay=float(raw.get("delayMs", 0)) / 1000,
            content=str(raw["content"]) if raw.get("content") is not None else None,
            tool_calls=tuple(calls),
            usage={_snake(k): int(v) for k, v in usage.items()} if usage else None,
            body=raw.get("body"),
        )
    except (TypeError, ValueError, re.error) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


@dataclass
class _Reply:
    status: int
    payload: Any
    headers: dict[str, str]
    delay: float = 0.0
    stream: bool = False


class StubState:
    """The script, the recorded requests and the `times` counters of one stub server."""

    def __init__(self, script: Script, *, max_records: int = 10_000) -> None:
        self.script = script
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_records)
        self._lock = threading.Lock()  # records are read from other threads (StubServer.requests)
        self._counters: dict[tuple[int, str], int] = {}
        self._ids = itertools.count(1)

    def requests(self) -> list[dict[str, Any]]:
        """Return the recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        """Forget recorded requests and `times` counters."""
        with self._lock:
            self._records.clear()
        self._counters = {}

    def set_script(self, script: Script) -> None:
        """Replace the script and restart the `times` counters."""
        self.script = script
        self._counters = {}

    def record(
        self, method: str, path: str, headers: Mapping[str, str], body: Any, status: int, query: str = ""
    ) -> None:
        """Keep one request. Credentials are never kept: only whether they came, and the auth scheme."""
        authorization = headers.get("authorization")
        entry = {
            "time": time.time(),
            "method": method,
            "path": path,
            "query": query,
            "status": status,
            "authorization": authorization is not None,
            "authScheme": authorization.split(" ", 1)[0] if authorization else None,
            "apiKeyHeader": "api-key" in headers,
            "userAgent": headers.get("user-agent"),
            "body": body,
        }
        with self._lock:
            self._records.append(entry)

    def chat(self, body: Any, headers: Mapping[str, str]) -> _Reply:
        """Decide the reply to one chat completion request."""
        script = self.script
        if script.api_key is not None and not _authorized(headers, script.api_key):
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        problem = _check_request(body, strict=script.strict)
        if problem:
            return _error(400, problem)
        messages: list[Mapping[str, Any]] = body["messages"]
        first_user = ""
        last_user = ""
        for message in messages:
            if message.get("role") == "user":
                last_user = _text(message.get("content"))
                if not first_user:
                    first_user = last_user
        after_tool = messages[-1].get("role") == "tool"
        last_tool = ""
        for message in reversed(messages):
            if message.get("role") == "tool":
                last_tool = _text(message.get("content"))
                break
        first_turn = not any(m.get("role") == "assistant" for m in messages)
        model = str(body.get("model", ""))

        rule = self._select(first_user, model, first_turn=first_turn, after_tool=after_tool)
        delay = rule.delay if rule else 0.0
        if rule is None or not rule.replies:
            template = "Tool result: {tool}" if after_tool else "Echo: {user}"
            reply = self._answer(body, template, (), None, last_user, last_tool)
        elif rule.body is not None:
            reply = _Reply(rule.status, rule.body, {})
        elif rule.status >= 400:
            reply = _error(rule.status, rule.message, code=rule.code)
        else:
            reply = self._answer(body, rule.content, rule.tool_calls, rule.usage, last_user, last_tool)
        if rule is not None:
            if rule.retry_after is not None:
                reply.headers["retry-after"] = f"{rule.retry_after:g}"
            if rule.retry_after_ms is not None:
                reply.headers["retry-after-ms"] = f"{rule.retry_after_ms:g}"
        reply.delay = delay
        return reply

    def _select(self, first_user: str, model: str, *, first_turn: bool, after_tool: bool) -> Rule | None:
        for rule in self.script.rules:
            if rule.when == "first" and not first_turn:
                continue
            if rule.when == "tool" and not after_tool:
                continue
            if rule.match is not None and not rule.match.search(first_user):
                continue
            if rule.model is not None and not rule.model.search(model):
                continue
            if rule.times is not None:
                key = (rule.index, first_user)
                used = self._counters.get(key, 0)
                if used >= rule.times:
                    continue
                if len(self._counters) >= _MAX_COUNTERS:
                    for old in list(itertools.islice(self._counters, _MAX_COUNTERS // 10)):
                        del self._counters[old]
                self._counters[key] = used + 1
            return rule
        return None

    def _answer(
        self,
        body: Mapping[str, Any],
        template: str | None,
        tool_calls: Sequence[tuple[str, str]],
        usage: Mapping[str, int] | None,
        last_user: str,
        last_tool: str,
    ) -> _Reply:
        content = _fill(template, last_user, last_tool) if template is not None else None
        filled = [(name, _fill_json(arguments, last_user, last_tool)) for name, arguments in tool_calls]
        calls: list[dict[str, Any]] = [
            {
                "id": f"call_{next(self._ids)}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for name, arguments in filled
        ]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in body["messages"])
        completion_tokens = len((content or "").split()) + sum(len(a.split()) for _, a in filled)
        counts = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        counts.update(usage or {})
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
        payload = {
            "id": f"chatcmpl-stub-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": counts,
        }
        return _Reply(200, payload, {}, stream=bool(body.get("stream")))


def _authorized(headers: Mapping[str, str], api_key: str) -> bool:
    """Accept `Authorization: Bearer <key>` (OpenAI and most servers) or `api-key: <key>` (Azure)."""
    bearer = headers.get("authorization")
    if bearer is not None and hmac.compare_digest(bearer.encode(), f"Bearer {api_key}".encode()):
        return True
    azure = headers.get("api-key")
    return azure is not None and hmac.compare_digest(azure.encode(), api_key.encode())


def _error(status: int, message: str, *, code: str | None = None) -> _Reply:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, {})


def _check_request(body: Any, *, strict: bool) -> str | None:
    """Return what OpenAI would reject in this request, or None.

    Beyond the shape, strict mode checks what a controller bug would break: a tool message must
    answer a tool call of the assistant message before it, every tool call must be answered before
    the conversation goes on, and tool_choice needs tools.
    """
    if not isinstance(body, Mapping):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
        ):
            return f"messages[{i}]: invalid message or role"
    if not strict:
        return None
    if body.get("tool_choice") is not None and not body.get("tools"):
        return "'tool_choice' is only allowed when 'tools' are specified"
    pending: set[str] = set()
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return (
                    f"messages[{i}]: messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls' (unknown tool_call_id {call_id!r})"
                )
            pending.discard(call_id)
            continue
        if pending:
            return (
                f"messages[{i}]: an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id' (missing: {', '.join(sorted(pending))})"
            )
        if role == "assistant":
            pending = {str(c.get("id")) for c in message.get("tool_calls") or [] if isinstance(c, Mapping)}
    if pending:
        return f"the last assistant message's tool calls are unanswered: {', '.join(sorted(pending))}"
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _fill(template: str, user: str, tool: str) -> str:
    if "{" not in template:
        return template
    return template.replace("{user}", user).replace("{tool}", tool)


def _fill_json(arguments: str, user: str, tool: str) -> str:
    if "{user}" not in arguments and "{tool}" not in arguments:
        return arguments
    return arguments.replace("{user}", json.dumps(user)[1:-1]).replace("{tool}", json.dumps(tool)[1:-1])


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
            reply = _error(400, "could not parse the request body as JSON")
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


class _Uvicorn(uvicorn.Server):
    """uvicorn that stops by itself: at a deadline, when its parent process dies, or when asked."""

    def __init__(
        self, config: uvicorn.Config, *, deadline: float | None, parent: int | None, signals: bool
    ) -> None:
        super().__init__(config)
        self._deadline = deadline
        self._parent = parent
        self._signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Embedded in a test or the demo, SIGINT belongs to the host program.
        if self._signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return True
        if self._parent is not None and os.getppid() != self._parent:
            return True
        return await super().on_tick(counter)


class StubServer:
    """The stub on 127.0.0.1: `with StubServer(script) as s:` (thread) or `async with` (current loop)."""

    def __init__(
        self,
        script: Mapping[str, Any] | str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_records: int = 10_000,
        max_seconds: float | None = None,
    ) -> None:
        self.state = StubState(load_script(script), max_records=max_records)
        self.app = create_app(self.state)
        self._host = host
        self._port = port
        self._max_seconds = max_seconds
        self._sock: socket.socket | None = None
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._sock is None:
            raise RuntimeError("the stub server is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client, e.g. http://127.0.0.1:43121/v1."""
        return f"http://{self._host}:{self.port}/v1"

    def requests(self) -> list[dict[str, Any]]:
        """Return the recorded requests, oldest first."""
        return self.state.requests()

    def set_script(self, script: Mapping[str, Any] | str | Path | None) -> None:
        """Replace the script (and restart its `times` counters)."""
        self.state.set_script(load_script(script))

    def reset(self) -> None:
        """Forget recorded requests and `times` counters."""
        self.state.reset()

    def _prepare(self, *, signals: bool = False, parent: int | None = None) -> _Uvicorn:
        if self._server is not None:
            raise RuntimeError("the stub server is already started")
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
            # Listening now means a client given the URL can connect at once: the kernel queues
            # connections until uvicorn starts accepting (the process prints its URL before that).
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="auto",  # httptools (a dependency): the stub needs a quarter less CPU than with h11
            timeout_graceful_shutdown=1,
        )
        deadline = time.monotonic() + self._max_seconds if self._max_seconds else None
        self._server = _Uvicorn(config, deadline=deadline, parent=parent, signals=signals)
        return self._server

    def start(self) -> StubServer:
        """Serve from a daemon thread; return once the server accepts connections."""
        server = self._prepare()
        assert self._sock is not None
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._sock]}, name="llm-stub", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the LLM stub server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the thread started by start() and release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._release()

    async def start_async(self) -> StubServer:
        """Serve from a task in the running event loop; return once it accepts connections."""
        server = self._prepare()
        assert self._sock is not None
        self._task = asyncio.create_task(server.serve(sockets=[self._sock]), name="llm-stub")
        while not server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the LLM stub server did not start")
            await asyncio.sleep(0.005)
        return self

    async def stop_async(self) -> None:
        """Stop the task started by start_async() and release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        self._release()

    def _release(self) -> None:
        if self._sock is not None:
            self._sock.close()  # uvicorn closes it on shutdown; a second close is harmless
        self._server = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> StubServer:
        return await self.start_async()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_async()

    def serve_forever(self, *, parent: int | None = None) -> None:
        """Serve in this (main) thread until SIGINT/SIGTERM, the deadline, or process `parent` is gone.

        The parent counts as gone when this process is re-parented (``os.getppid() != parent``).
        """
        server = self._prepare(signals=True, parent=parent)
        assert self._sock is not None
        print(self.url, flush=True)
        try:
            server.run(sockets=[self._sock])
        finally:
            self._release()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stub as a process: print its URL on the first line of stdout, serve until told to stop."""
    parent = os.getppid()  # first thing: the later we look, the likelier a dead parent goes unnoticed
    parser = argparse.ArgumentParser(prog="gitops-acp llm-stub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--script", type=Path, help="YAML or JSON script (default: echo everything)")
    parser.add_argument("--max-seconds", type=float, default=None, help="exit after this many seconds")
    parser.add_argument("--max-records", type=int, default=10_000, help="requests kept for /_stub/requests")
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit when this process is no longer our parent (default: the parent at start-up)",
    )
    parser.add_argument(
        "--no-watch-parent", action="store_true", help="keep running when the parent process exits"
    )
    args = parser.parse_args(argv)
    try:
        stub = StubServer(
            args.script,
            host=args.host,
            port=args.port,
            max_records=args.max_records,
            max_seconds=args.max_seconds,
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:
        where = f"--script {args.script}: " if args.script else ""
        print(f"error: {where}{' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        stub.serve_forever(parent=None if args.no_watch_parent else (args.parent_pid or parent))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
