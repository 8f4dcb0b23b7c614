"""What the rest of gitops-acp knows about LLMs: a config, a request, a reply, and a Protocol.

The Task controller holds a context window in OUR shape (the camelCase of ACP's CRDs and of the
status files: ``role, content, toolCalls, toolCallId, name``) and asks an ``LLMClient`` for the
next assistant turn. The real client (``openai_client.OpenAIClient``) and the scripted server it is
tested against (``stub``) sit behind this module; nothing here imports openai, so controllers and
their tests depend only on these frozen dataclasses.

Flow: LLM resource + resolved secret → ``LLMConfig`` (defaults and checks applied here, once) →
``LLMClient.complete(config, messages, tools)`` → ``Completion`` (the assistant message ready to
append to the context window, its tool calls, token usage) or an ``LLMError`` whose type says
whether to retry (see ``gitops_acp.errors``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gitops_acp.errors import ACPError, PermanentLLMError

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_MODELS",
    "PROVIDERS",
    "Completion",
    "LLMClient",
    "LLMConfig",
    "LLMConfigError",
    "ToolCallRequest",
    "ToolSpec",
    "assistant_message",
    "to_openai_messages",
    "validate",
]

PROVIDERS = ("openai", "anthropic", "mistral", "google", "vertex")

# Every provider is reached through its OpenAI-compatible endpoint. None = the SDK's default.
DEFAULT_BASE_URLS: Mapping[str, str | None] = {
    "openai": None,
    "anthropic": "https://api.anthropic.com/v1/",
    "google": "https://generativelanguage.googleapis.com/v1beta/openai/",
    "mistral": "https://api.mistral.ai/v1",
}

DEFAULT_MODELS: Mapping[str, str] = {
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4-5",
    "mistral": "mistral-large-latest",
    "google": "gemini-2.5-flash",
}

_API_TYPES = ("OPEN_AI", "AZURE", "AZURE_AD")


class LLMConfigError(ACPError, ValueError):
    """An LLM spec that cannot make a client (unknown provider, missing baseUrl, ...): fix the resource."""


@dataclass(frozen=True)
class LLMConfig:
    """Everything one chat completion needs; built from an LLM resource and its resolved secret.

    Construction fills in the provider's default model and base URL and rejects combinations that
    cannot work, so a bad resource fails once, at validation, not on every task.
    """

    provider: str
    model: str | None
    api_key: str = field(repr=False)
    base_url: str | None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    organization: str | None = None
    api_type: str | None = None
    api_version: str | None = None
    timeout: float = 120.0

    def __post_init__(self) -> None:
        provider = self.provider.strip().lower()
        if provider not in PROVIDERS:
            raise LLMConfigError(
                f"unknown provider {self.provider!r} (expected one of {', '.join(PROVIDERS)})"
            )
        if not self.api_key:
            raise LLMConfigError(f"provider {provider}: the API key is empty")
        api_type = self.api_type.strip().upper() if self.api_type else None
        if api_type is not None and api_type not in _API_TYPES:
            raise LLMConfigError(f"openai.apiType {self.api_type!r}: expected one of {', '.join(_API_TYPES)}")
        base_url = self.base_url or DEFAULT_BASE_URLS.get(provider)
        if base_url is None and provider == "vertex":
            raise LLMConfigError(
                "provider vertex needs parameters.baseUrl: the OpenAI-compatible endpoint of your project, "
                "https://<location>-aiplatform.googleapis.com/v1/projects/<project>/locations/<location>/endpoints/openapi"
            )
        if api_type in ("AZURE", "AZURE_AD"):
            if not self.base_url:
                raise LLMConfigError(
                    f"openai.apiType {api_type} needs parameters.baseUrl (the Azure endpoint)"
                )
            if not self.api_version:
                raise LLMConfigError(f"openai.apiType {api_type} needs openai.apiVersion")
        model = self.model or DEFAULT_MODELS.get(provider)
        if model is None:
            raise LLMConfigError(f"provider {provider} has no default model: set parameters.model")
        if self.timeout <= 0:
            raise LLMConfigError(f"timeout must be positive, got {self.timeout}")
        # Frozen, so normalise through object.__setattr__: consumers always see the effective values.
        object.__setattr__(self, "provider", provider)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "base_url", base_url)
        object.__setattr__(self, "api_type", api_type)

    @property
    def effective_model(self) -> str:
        """The model sent on the wire (always set after construction)."""
        assert self.model is not None
        return self.model


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: the name the LLM sees and its JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCallRequest:
    """One tool call the model asked for; `arguments` is the raw JSON string (may be invalid JSON)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """One assistant turn: what to append to the context window, and what it cost."""

    content: str | None
    tool_calls: tuple[ToolCallRequest, ...]
    prompt_tokens: int
    completion_tokens: int
    message: dict[str, Any]
    finish_reason: str | None = None


class LLMClient(Protocol):
    """Something that answers chat completions; the real one is `openai_client.OpenAIClient`."""

    async def complete(
        self, config: LLMConfig, messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Completion:
        """Return the next assistant turn, or raise TemporaryLLMError / PermanentLLMError."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


async def validate(client: LLMClient, config: LLMConfig) -> None:
    """Check the key and model with a real 1-token completion, as ACP's LLM controller did."""
    await client.complete(dataclasses.replace(config, max_tokens=1), [{"role": "user", "content": "test"}])


_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


def to_openai_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert context-window messages (camelCase) to Chat Completions messages (snake_case).

    Raises PermanentLLMError for a message no provider would accept: retrying cannot fix it.
    """
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            raise PermanentLLMError(f"contextWindow[{index}]: invalid role {role!r}")
        content = message.get("content")
        if content is None:
            content = ""
        converted: dict[str, Any] = {"role": role}
        if role == "tool":
            call_id = message.get("toolCallId", message.get("tool_call_id"))
            if not call_id:
                raise PermanentLLMError(f"contextWindow[{index}]: tool message without toolCallId")
            converted["tool_call_id"] = call_id
            converted["content"] = content
        elif role == "assistant":
            calls = message.get("toolCalls", message.get("tool_calls")) or []
            if calls:
                converted["tool_calls"] = [_tool_call_to_openai(call, index) for call in calls]
            # Anthropic's endpoint rejects empty text blocks; null content is valid next to tool calls.
            converted["content"] = content if content or not calls else None
        else:
            converted["content"] = content
        name = message.get("name")
        if name and role != "tool":
            converted["name"] = name
        out.append(converted)
    return out


def _tool_call_to_openai(call: Mapping[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function") or {}
    if not call.get("id") or not function.get("name"):
        raise PermanentLLMError(f"contextWindow[{index}]: tool call without id or function name")
    arguments = function.get("arguments")
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": function["name"], "arguments": arguments if arguments is not None else "{}"},
    }


def assistant_message(dumped: Mapping[str, Any]) -> dict[str, Any]:
    """Convert an assistant message (`message.model_dump(exclude_none=True)`) to the context-window shape.

    Exactly ``role``, ``content`` ("" when absent) and ``toolCalls`` (when there are any): the
    context window is a strict schema, so fields some servers add (``reasoning_content``,
    ``annotations``, ``audio``) are dropped. A ``refusal`` stands in for missing content: it is the
    model's answer.
    """
    content = dumped.get("content") or dumped.get("refusal") or ""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    calls = dumped.get("tool_calls") or []
    if calls:
        message["toolCalls"] = [
            {
                "id": call.get("id", ""),
                "type": "function",
                "function": {
                    "name": (call.get("function") or {}).get("name", ""),
                    "arguments": (call.get("function") or {}).get("arguments", ""),
                },
            }
            for call in calls
        ]
    return message
