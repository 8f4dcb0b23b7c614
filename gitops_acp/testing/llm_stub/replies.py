"""The reply engine: one stub server's script, recorded requests and `times` counters.

`StubState.chat` decides the reply to one chat completion request: refused (validation.py), the
first matching rule of the script (script.py), else the default echo. Usage is always returned:
prompt tokens ≈ words in the request's messages, completion tokens ≈ words in the reply (a rule's
``usage`` overrides).

Memory stays bounded for 1000-task benchmarks: the last ``max_records`` requests are kept, and
``times`` counters are pruned oldest-first.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_acp.testing.llm_stub import validation
from gitops_acp.testing.llm_stub.script import Rule, Script

__all__ = ["Reply", "StubState", "error_reply"]

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


@dataclass
class Reply:
    """What to answer: status, JSON (or text) payload, headers, a delay, and whether to stream it."""

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

    def chat(self, body: Any, headers: Mapping[str, str]) -> Reply:
        """Decide the reply to one chat completion request."""
        script = self.script
        if script.api_key is not None and not validation.authorized(headers, script.api_key):
            return error_reply(401, "Incorrect API key provided.", code="invalid_api_key")
        problem = validation.check_request(body, strict=script.strict)
        if problem:
            return error_reply(400, problem)
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
            reply = Reply(rule.status, rule.body, {})
        elif rule.status >= 400:
            reply = error_reply(rule.status, rule.message, code=rule.code)
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
    ) -> Reply:
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
        return Reply(200, payload, {}, stream=bool(body.get("stream")))


def error_reply(status: int, message: str, *, code: str | None = None) -> Reply:
    """Return an OpenAI-shaped error, ``{"error": {message, type, param, code}}``, with `status`."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, {})


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
