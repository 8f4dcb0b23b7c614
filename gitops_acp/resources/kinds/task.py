"""The `Task` kind: one agent conversation, and its durable state (the "call stack").

The status is the source of truth for the loop: the phase, the whole context window, and the
counters that enforce limits and backoff. The exactly-one rule for the input keeps ACP's wording.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from gitops_acp.resources.common import (
    Int,
    LocalObjectReference,
    Message,
    Resource,
    SecretKeyRef,
    SpecModel,
    StatusModel,
)
from gitops_acp.resources.meta import Condition, TaskPhase, check_name

__all__ = ["FollowUp", "ForkFrom", "SpanContext", "Task", "TaskSpec", "TaskStatus", "Usage"]

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


class FollowUp(SpecModel):
    """A message sent after the task answered (DESIGN §12): the conversation goes on with it."""

    content: str
    """What the user says next; it becomes a user message after the newest answer."""

    @field_validator("content")
    @classmethod
    def _not_empty(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("a follow-up needs content (the message to send)")
        return content


class ForkFrom(SpecModel):
    """Where a forked task starts: another task's context window at one of its checkpoints."""

    task: str
    """The task whose conversation is copied (it is not changed)."""
    commit: str | None = None
    """The checkpoint commit on the status branch, as a full sha (`task create --fork-from` resolves
    it); unset: the task's newest checkpoint when the fork starts."""

    @field_validator("task")
    @classmethod
    def _task_name(cls, task: str) -> str:
        problem = check_name(task)
        if problem:
            raise ValueError(problem)
        return task

    @field_validator("commit")
    @classmethod
    def _full_sha(cls, commit: str | None) -> str | None:
        if commit is not None and not _SHA.fullmatch(commit):
            raise ValueError(
                f"{commit!r} is not a full commit sha (40 hex digits): `gitops-acp task create NEW "
                "--fork-from TASK[@COMMIT]` resolves one"
            )
        return commit


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
    follow_ups: list[FollowUp] = Field(default_factory=list)
    """Messages sent after an answer, oldest first (`task send`); each one is answered in turn.
    Append only: one already taken into the conversation may not be changed or removed."""
    fork_from: ForkFrom | None = None
    """Start from another task's context window at a checkpoint (`task create --fork-from`);
    userMessage, if given, is added to it as the next user message."""

    @model_validator(mode="after")
    def _one_input(self) -> TaskSpec:
        if self.fork_from is not None:
            if self.context_window:
                raise ValueError(
                    "forkFrom starts from that task's context window: contextWindow cannot be given "
                    "with it (userMessage adds a message to it)"
                )
            return self
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

    trace_id: str = Field(default="", alias="traceID")
    """32 hex digits (a status file without them reads as none: telemetry/tracing.py ignores them)."""
    span_id: str = Field(default="", alias="spanID")
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
    follow_ups_applied: int = Field(default=0, exclude_if=lambda count: count == 0)
    """How many of spec.followUps are in the context window (each as a user message, taken in the
    same checkpoint that counts it): the next one to take is spec.followUps[followUpsApplied]."""
    last_follow_up_time: str | None = None
    """When the newest follow-up was taken (RFC 3339): the agent's timeout counts from here."""


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
