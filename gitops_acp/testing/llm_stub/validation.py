"""What a real OpenAI server would refuse: a missing key, a malformed body, a broken conversation.

The stub answers these with the same 401 and 400 errors a provider gives, so a controller bug that
sends an orphan tool message or leaves a tool call unanswered fails a test instead of passing
against a lenient fake.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

__all__ = ["authorized", "check_request"]


def authorized(headers: Mapping[str, str], api_key: str) -> bool:
    """Accept `Authorization: Bearer <key>` (OpenAI and most servers) or `api-key: <key>` (Azure)."""
    bearer = headers.get("authorization")
    if bearer is not None and hmac.compare_digest(bearer.encode(), f"Bearer {api_key}".encode()):
        return True
    azure = headers.get("api-key")
    return azure is not None and hmac.compare_digest(azure.encode(), api_key.encode())


def check_request(body: Any, *, strict: bool) -> str | None:
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
