"""LLMs behind one small interface: the only package that imports openai.

- ``client``: ``LLMConfig``, ``ToolSpec``, ``Completion``, the ``LLMClient`` Protocol and the
  message-shape conversions (no openai import; what controllers depend on);
- ``openai_client``: ``OpenAIClient``, the real implementation over the openai SDK.

The scripted OpenAI-compatible server that tests, ``gitops-acp demo`` and the benchmarks talk to
over real HTTP is ``gitops_acp.testing.llm_stub`` (no product layer imports it).

``OpenAIClient`` is imported lazily: importing openai takes over half a second, and commands that
never call an LLM (``get``, ``validate``) should not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gitops_acp.llm.client import (
    DEFAULT_BASE_URLS,
    DEFAULT_MODELS,
    PROVIDERS,
    Completion,
    LLMClient,
    LLMConfig,
    LLMConfigError,
    ToolCallRequest,
    ToolSpec,
    validate,
)

if TYPE_CHECKING:
    from gitops_acp.llm.openai_client import OpenAIClient

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_MODELS",
    "PROVIDERS",
    "Completion",
    "LLMClient",
    "LLMConfig",
    "LLMConfigError",
    "OpenAIClient",
    "ToolCallRequest",
    "ToolSpec",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name == "OpenAIClient":
        from gitops_acp.llm.openai_client import OpenAIClient

        return OpenAIClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
