"""The script: which reply the stub gives to which request, compiled once when it is loaded.

A script is a dict, or a YAML/JSON file::

    apiKey: sk-test          # optional: requests without "Authorization: Bearer sk-test" (or Azure's
                             #   "api-key: sk-test") get a 401, as from a real provider
    strict: true             # default: reject message sequences OpenAI rejects (see validation.py)
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
``"Echo: {user}"`` (replies.py decides). Regexes are compiled here, so a bad one fails the load, not
a request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Rule", "Script", "load_script"]

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
