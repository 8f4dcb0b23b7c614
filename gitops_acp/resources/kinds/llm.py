"""The `LLM` kind: a provider, its credentials, a model and sampling parameters.

The LLM module builds its client from `LLMSpec`; ACP's provider blocks are accepted as they are so
ACP manifests load, whether or not a given option is used.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from gitops_acp.resources.common import (
    Float,
    Int,
    Resource,
    SecretSource,
    SpecModel,
    StatusModel,
)
from gitops_acp.resources.meta import Condition

__all__ = [
    "LLM",
    "AnthropicOptions",
    "ApiType",
    "GoogleOptions",
    "LLMParameters",
    "LLMSpec",
    "LLMStatus",
    "MistralOptions",
    "OpenAIOptions",
    "Provider",
    "VertexOptions",
]


class Provider(StrEnum):
    """The API family of an LLM; all are reached through OpenAI-compatible endpoints."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    MISTRAL = "mistral"
    GOOGLE = "google"
    VERTEX = "vertex"


class ApiType(StrEnum):
    """Which flavour of the OpenAI API an `openai` LLM speaks."""

    OPEN_AI = "OPEN_AI"
    AZURE = "AZURE"
    AZURE_AD = "AZURE_AD"


class LLMParameters(SpecModel):
    """Model and sampling parameters. ACP declares the fractional ones as strings ("0.7"): both read."""

    model: str | None = None
    """The provider's model name, e.g. `gpt-4o`."""
    base_url: str | None = None
    """The OpenAI-compatible endpoint, for proxies and local servers (LiteLLM, Ollama, vLLM)."""
    temperature: Float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature, 0..2."""
    max_tokens: Int | None = Field(default=None, ge=1)
    """Upper bound on tokens generated per response."""
    top_p: Float | None = Field(default=None, ge=0, le=1)
    """Nucleus sampling mass, 0..1."""
    top_k: Int | None = Field(default=None, ge=1)
    """Sample from the k most likely tokens (providers that support it)."""
    frequency_penalty: Float | None = Field(default=None, ge=-2, le=2)
    """Penalty for tokens by how often they appeared, -2..2."""
    presence_penalty: Float | None = Field(default=None, ge=-2, le=2)
    """Penalty for tokens that appeared at all, -2..2."""


class OpenAIOptions(SpecModel):
    """OpenAI- and Azure-specific settings."""

    organization: str | None = None
    """The OpenAI organization id sent with each request."""
    api_type: ApiType = ApiType.OPEN_AI
    """OpenAI proper, or Azure with a key or with Azure AD."""
    api_version: str | None = None
    """The Azure API version (Azure only)."""


class AnthropicOptions(SpecModel):
    """Anthropic-specific settings (accepted as ACP has them)."""

    anthropic_beta_header: str | None = None
    """Value of the `anthropic-beta` header, enabling beta features."""


class VertexOptions(SpecModel):
    """Google Vertex AI settings (accepted as ACP has them)."""

    cloud_project: str
    """The Google Cloud project that hosts the model."""
    cloud_location: str
    """The region of the endpoint, e.g. `us-central1`."""


class GoogleOptions(SpecModel):
    """Gemini API settings (accepted as ACP has them)."""

    cloud_project: str | None = None
    """The Google Cloud project, when one applies."""
    cloud_location: str | None = None
    """The region, when one applies."""


class MistralOptions(SpecModel):
    """Mistral-specific settings (accepted as ACP has them)."""

    max_retries: Int | None = Field(default=None, ge=0)
    """Client retries; the reconciler retries on its own, so usually unset."""
    timeout: Int | None = Field(default=None, ge=1)
    """Request timeout in seconds."""
    random_seed: Int | None = None
    """Seed for reproducible sampling."""


class LLMSpec(SpecModel):
    """An LLM: which provider, which credentials, which model and parameters."""

    provider: Provider
    """The API family: openai, anthropic, mistral, google or vertex."""
    api_key_from: SecretSource | None = None
    """Where the API key is: a secretKeyRef resolved from --secrets-dir or the environment."""
    parameters: LLMParameters = Field(default_factory=LLMParameters)
    """Model and sampling parameters."""
    openai: OpenAIOptions | None = None
    """OpenAI / Azure options."""
    anthropic: AnthropicOptions | None = None
    """Anthropic options."""
    vertex: VertexOptions | None = None
    """Vertex AI options."""
    mistral: MistralOptions | None = None
    """Mistral options."""
    google: GoogleOptions | None = None
    """Gemini options."""


class LLMStatus(StatusModel):
    """What the reconciler found when it checked the LLM."""

    ready: bool = False
    """Whether tasks can use this LLM."""
    status: Condition | None = None
    """Ready, Error or Pending."""
    status_detail: str | None = None
    """Why, in words."""


class LLM(Resource):
    """An `LLM` resource."""

    kind: Literal["LLM"] = "LLM"
    spec: LLMSpec
    status: LLMStatus | None = None
