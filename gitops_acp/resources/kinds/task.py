"""The `Task` kind: one agent conversation, and its durable state (the "call stack").

The status is the source of truth for the loop: the phase, the whole context window, and the
counters that enforce limits and backoff. The exactly-one rule for the input keeps ACP's wording.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator

from gitops_acp.resources.common import (
    Int,
    LocalObjectReference,
    Message,
    Resource,
    SecretKeyRef,
    SpecModel,
    StatusModel,
)
from gitops_acp.resources.meta import Condition, TaskPhase

__all__ = ["SpanContext", "Task", "TaskSpec", "TaskStatus", "Usage"]


class TaskSpec(SpecModel):
    """A conversation to run: which agent, and the first message or the whole starting context."""

    agent_ref: LocalObjectReference
    """The Agent that runs the task."""
    user_message: str | None = None
    """The question; the context becomes [system prompt, this]."""
    context_window: list[Message] = Field(default_factory=list)
    """A starting conversation instead of userMessage; the agent's system prompt is prepended if absent."""
    contact_channel_ref: LocalObjectReference | None = None
    """A channel that also receives the final answer."""
    response_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("responseUrl", "responseURL", "response_url"),
        serialization_alias="responseUrl",
    )
    """A URL the final answer is POSTed to (durably, with retries)."""
    base_url: str | None = Field(default=None, alias="baseURL")
    """ACP's HumanLayer base URL for answers; accepted, unused."""
    channel_token_from: SecretKeyRef | None = None
    """ACP's channel token for answers; accepted, unused."""
    thread_id: str | None = Field(default=None, alias="threadID")
    """ACP's conversation thread id; accepted, unused."""
    ttl_seconds_after_finished: Int | None = Field(default=None, ge=0)
    """Seconds the finished task stays in the status branch's tip before it is archived, as a
    Kubernetes Job's (DESIGN §9); unset: `serve --retain-finished` (default 168h). 0: at once."""

    @model_validator(mode="after")
    def _one_input(self) -> TaskSpec:
        # ACP's messages, word for word, so people and scripts that know them still match.
        if self.user_message and self.context_window:
            raise ValueError("only one of userMessage or contextWindow can be provided")
        if not self.user_message and not self.context_window:
            raise ValueError("one of userMessage or contextWindow must be provided")
        if self.context_window and not any(m.role == "user" for m in self.context_window):
            raise ValueError("contextWindow must contain at least one user message")
        return self

    def last_user_message(self) -> str:
        """Return userMessage, or the last user message of contextWindow (ACP's preview source)."""
        if self.user_message:
            return self.user_message
        return next((m.content for m in reversed(self.context_window) if m.role == "user"), "")


class Usage(StatusModel):
    """Tokens a task used, summed over its LLM calls."""

    prompt_tokens: int = 0
    """Tokens sent."""
    completion_tokens: int = 0
    """Tokens generated."""


class SpanContext(StatusModel):
    """The ids of a task's own span: a resumed task continues this trace (DESIGN §11)."""

    trace_id: str = Field(alias="traceID")
    """32 hex digits."""
    span_id: str = Field(alias="spanID")
    """16 hex digits."""


class TaskStatus(StatusModel):
    """The durable state of a conversation: phase, context window, output."""

    phase: TaskPhase | None = None
    """Where the task is in its loop."""
    ready: bool = False
    """Whether the task passed validation (ACP's READY column)."""
    status: Condition | None = None
    """Ready, Error or Pending."""
    status_detail: str | None = None
    """What is happening, in words."""
    output: str | None = None
    """The final answer."""
    error: str | None = None
    """The last error."""
    context_window: list[Message] = Field(default_factory=list)
    """The whole conversation so far; the source of truth for the next LLM call."""
    user_msg_preview: str | None = None
    """The first 50 characters of the user's message, for tables."""
    tool_call_request_id: str | None = None
    """Id shared by the ToolCalls of the latest LLM response."""
    start_time: str | None = None
    """When the task started (RFC 3339, UTC, microseconds)."""
    completion_time: str | None = None
    """When it reached a terminal phase."""
    turns: int = 0
    """LLM calls made so far."""
    usage: Usage | None = None
    """Tokens used so far."""
    attempts: int = 0
    """Consecutive failed attempts of the current LLM call (reset on success)."""
    next_attempt_time: str | None = None
    """When ErrorBackoff retries (RFC 3339)."""
    delivery: dict[str, Any] | None = None
    """State of the responseUrl delivery (the outbox), owned by the delivery code."""
    span_context: SpanContext | None = None
    """The task's trace (ACP's field), committed with its first checkpoint when traces are on."""


class Task(Resource):
    """A `Task` resource."""

    kind: Literal["Task"] = "Task"
    spec: TaskSpec
    status: TaskStatus | None = None

    @model_validator(mode="before")
    @classmethod
    def _kubechain_message(cls, data: Any) -> Any:
        # KubeChain's getting-started Task says `message:` (its old Task template's field); only
        # that apiVersion gets the old name, so a typo in a new manifest is still an error.
        if not isinstance(data, dict) or data.get("apiVersion") != "kubechain.humanlayer.dev/v1alpha1":
            return data
        spec = data.get("spec")
        if isinstance(spec, dict) and "message" in spec and "userMessage" not in spec:
            spec = {("userMessage" if key == "message" else key): value for key, value in spec.items()}
            return {**data, "spec": spec}
        return data
