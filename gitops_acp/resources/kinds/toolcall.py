"""The `ToolCall` kind: one tool invocation the LLM asked for; status branch only.

The reconciler writes these (never people): `Running` with `attempt` is committed before the tool
runs, the result after, so a crash never repeats a non-idempotent call.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gitops_acp.resources.common import (
    LocalObjectReference,
    Resource,
    SpecModel,
    StatusModel,
)
from gitops_acp.resources.meta import Condition, ToolCallPhase, ToolType

__all__ = [
    "MCP_TASK_TERMINAL",
    "ToolCall",
    "ToolCallApproval",
    "ToolCallHumanContact",
    "ToolCallMCPTask",
    "ToolCallSpec",
    "ToolCallStatus",
]

#: The statuses an MCP task ends in (the tasks extension's names).
MCP_TASK_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class ToolCallSpec(SpecModel):
    """One tool invocation the LLM asked for; written by the reconciler, never by people."""

    tool_call_id: str
    """The LLM's id for the call, to pair the result with it."""
    task_ref: LocalObjectReference
    """The Task that asked for it."""
    tool_ref: LocalObjectReference
    """The function name the LLM called, e.g. `fetch__fetch` (not an object reference)."""
    tool_type: ToolType
    """Which executor runs it, decided by the function name's shape (ACP's naming scheme)."""
    arguments: str
    """The arguments as the LLM sent them: a JSON string, possibly invalid."""


class ToolCallApproval(StatusModel):
    """The human decision on a call that needed approval."""

    branch: str | None = None
    """The approval branch, `acp/approvals/<toolcall>`."""
    pull_request: int | None = None
    """The forge's pull request number (GitLab: merge request iid), when one was opened."""
    pull_request_url: str | None = None
    """The pull request's page, for people."""
    decided_by: str | None = None
    """Who approved or rejected: a forge login, the merge commit's author, or the HumanLayer channel."""
    decided_via: str | None = None
    """How `decidedBy` was known: `github merged_by`, `github review`, `gitlab merged_by`,
    `gitlab approval`, `gitea merged_by`, `gitea review`, `commit author` or `humanlayer`
    (controllers/deciders.py)."""
    decided_at: str | None = None
    """When (RFC 3339)."""
    comment: str | None = None
    """The human's comment; the model reads it on a rejection."""
    channel: str | None = None
    """The ContactChannel that asked (git channels also have `branch`)."""


class ToolCallHumanContact(StatusModel):
    """A question to a human (`<channel>__human_contact`) and who answered it."""

    channel: str | None = None
    """The ContactChannel asked."""
    branch: str | None = None
    """The question branch, `acp/questions/<toolcall>` (git channels)."""
    pull_request: int | None = None
    """The forge's pull request number (GitLab: merge request iid), when the channel has a forge."""
    pull_request_url: str | None = None
    """The pull request's page, for people."""
    responded_by: str | None = None
    """Who answered: a forge login, the merge commit's author, or the channel for slack and email."""
    responded_via: str | None = None
    """How `respondedBy` was known (the values of `approval.decidedVia`)."""
    responded_at: str | None = None
    """When (RFC 3339)."""


class ToolCallMCPTask(StatusModel):
    """A call the MCP server runs as a task (docs/tools.md): what a restart needs to follow it."""

    server: str
    """The MCPServer running it."""
    task_id: str
    """The server's task id, committed before the reconciler waits for the task."""
    session: str | None = None
    """The Streamable HTTP session the task lives in (a 2025-11-25 server keeps tasks per session)."""
    status: str | None = None
    """The task's status when last looked at: working, input_required, completed, failed, cancelled."""
    status_message: str | None = None
    """The server's words on it, as last committed."""
    noted_at: str | None = None
    """When `status`/`statusMessage` were last committed (progress alone: at most every 30 s)."""
    input_request: str | None = None
    """The key of the server's request for input that the pending question answers."""
    question: str | None = None
    """The pending question's name: `responses/<question>.yaml` on `acp/questions/<question>`."""
    answered_inputs: list[str] = Field(default_factory=list)
    """The keys of the requests for input answered or declined so far (never asked twice)."""
    declined: str | None = None
    """Why the last request for input was declined without asking anyone."""
    cancel_requested_at: str | None = None
    """When tasks/cancel was sent, because the call ended before the task (its Task was cancelled)."""


class ToolCallStatus(StatusModel):
    """The durable state of one tool invocation."""

    phase: ToolCallPhase | None = None
    """Where the call is."""
    status: Condition | None = None
    """Pending, Ready, Succeeded or Error."""
    status_detail: str | None = None
    """What is happening, in words."""
    result: str | None = None
    """The tool's output, as the model will read it."""
    error: str | None = None
    """Why it failed."""
    start_time: str | None = None
    """When the call was recorded (RFC 3339)."""
    completion_time: str | None = None
    """When it reached a terminal phase."""
    attempt: int = 0
    """How many times the tool was invoked (committed before each invocation)."""
    approval: ToolCallApproval | None = None
    """The approval request and decision, when the call needed one."""
    human_contact: ToolCallHumanContact | None = None
    """The question and its answer, for `<channel>__human_contact` calls."""
    external_call_id: str | None = Field(default=None, alias="externalCallID")
    """HumanLayer's call id (ACP's name), committed before the request is sent, so a restart finds it."""
    mcp_task: ToolCallMCPTask | None = None
    """The MCP task running the call, when the server runs it as one."""


class ToolCall(Resource):
    """A `ToolCall` resource (status branch only)."""

    kind: Literal["ToolCall"] = "ToolCall"
    spec: ToolCallSpec
    status: ToolCallStatus | None = None
