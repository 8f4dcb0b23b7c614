"""The resource schema: one pydantic model per kind, with ACP's field names.

This is the contract with people's YAML (DESIGN §2): what `main` may contain and what a status file
holds. Python attributes are snake_case; YAML keys are ACP's camelCase, so an ACP or KubeChain
manifest validates unchanged. Specs are strict (an unknown field is an error, not silently
dropped: a typo must not change behaviour); statuses are lenient (a status file written by a newer
reconciler still reads). Shared building blocks live in `common`, each kind in `kinds/<kind>.py`;
this module names them all in one place (`models.Task`, `models.Message`) and holds what spans
kinds: the kind → class registry and the document conversions.

Nothing here does I/O. The loader turns files into these models; the store writes them back with
`to_document`.
"""

from __future__ import annotations

from typing import Any, TypeAlias, cast

from pydantic import ValidationError

from gitops_acp.errors import ResourceError
from gitops_acp.resources import diagnostics
from gitops_acp.resources.common import (
    FunctionCall,
    LocalObjectReference,
    Message,
    MessageToolCall,
    ObjectMeta,
    Resource,
    Role,
    SecretKeyRef,
    SecretSource,
    SpecModel,
    StatusModel,
)
from gitops_acp.resources.kinds.agent import (
    Agent,
    AgentLimits,
    AgentSpec,
    AgentStatus,
    ValidContactChannel,
    ValidMCPServer,
    ValidSubAgent,
)
from gitops_acp.resources.kinds.contactchannel import (
    ChannelType,
    ContactChannel,
    ContactChannelSpec,
    ContactChannelStatus,
    EmailChannel,
    Forge,
    GitChannel,
    SlackChannel,
)
from gitops_acp.resources.kinds.llm import (
    LLM,
    AnthropicOptions,
    ApiType,
    GoogleOptions,
    LLMParameters,
    LLMSpec,
    LLMStatus,
    MistralOptions,
    OpenAIOptions,
    Provider,
    VertexOptions,
)
from gitops_acp.resources.kinds.mcpserver import (
    EnvVar,
    EnvVarSource,
    MCPApproval,
    MCPServer,
    MCPServerSpec,
    MCPServerStatus,
    MCPTool,
    ResourceRequirements,
    Transport,
)
from gitops_acp.resources.kinds.source import Source, SourceSpec, SourceStatus
from gitops_acp.resources.kinds.task import FollowUp, ForkFrom, SpanContext, Task, TaskSpec, TaskStatus, Usage
from gitops_acp.resources.kinds.taskschedule import (
    ConcurrencyPolicy,
    TaskSchedule,
    TaskScheduleSpec,
    TaskScheduleStatus,
    TaskTemplate,
)
from gitops_acp.resources.kinds.toolcall import (
    ToolCall,
    ToolCallApproval,
    ToolCallHumanContact,
    ToolCallMCPTask,
    ToolCallSpec,
    ToolCallStatus,
)
from gitops_acp.resources.meta import API_VERSION, Kind

__all__ = [
    "LLM",
    "MODELS",
    "Agent",
    "AgentLimits",
    "AgentSpec",
    "AgentStatus",
    "AnthropicOptions",
    "AnyResource",
    "ApiType",
    "ChannelType",
    "ConcurrencyPolicy",
    "ContactChannel",
    "ContactChannelSpec",
    "ContactChannelStatus",
    "EmailChannel",
    "EnvVar",
    "EnvVarSource",
    "FollowUp",
    "Forge",
    "ForkFrom",
    "FunctionCall",
    "GitChannel",
    "GoogleOptions",
    "LLMParameters",
    "LLMSpec",
    "LLMStatus",
    "LocalObjectReference",
    "MCPApproval",
    "MCPServer",
    "MCPServerSpec",
    "MCPServerStatus",
    "MCPTool",
    "Message",
    "MessageToolCall",
    "MistralOptions",
    "ObjectMeta",
    "OpenAIOptions",
    "Provider",
    "Resource",
    "ResourceRequirements",
    "Role",
    "SecretKeyRef",
    "SecretSource",
    "SlackChannel",
    "Source",
    "SourceSpec",
    "SourceStatus",
    "SpanContext",
    "SpecModel",
    "StatusModel",
    "Task",
    "TaskSchedule",
    "TaskScheduleSpec",
    "TaskScheduleStatus",
    "TaskSpec",
    "TaskStatus",
    "TaskTemplate",
    "ToolCall",
    "ToolCallApproval",
    "ToolCallHumanContact",
    "ToolCallMCPTask",
    "ToolCallSpec",
    "ToolCallStatus",
    "Transport",
    "Usage",
    "ValidContactChannel",
    "ValidMCPServer",
    "ValidSubAgent",
    "VertexOptions",
    "from_document",
    "to_document",
    "user_msg_preview",
]


AnyResource: TypeAlias = LLM | Agent | MCPServer | ContactChannel | Task | TaskSchedule | ToolCall | Source

MODELS: dict[Kind, type[Resource]] = {
    Kind.LLM: LLM,
    Kind.Agent: Agent,
    Kind.MCPServer: MCPServer,
    Kind.ContactChannel: ContactChannel,
    Kind.Task: Task,
    Kind.TaskSchedule: TaskSchedule,
    Kind.ToolCall: ToolCall,
    Kind.Source: Source,
}


def to_document(obj: Resource) -> dict[str, Any]:
    """Return the YAML-ready mapping of a resource: ACP's names, empty and unset fields left out."""
    document = obj.model_dump(by_alias=True, exclude_none=True, mode="json")
    document["apiVersion"] = API_VERSION
    order = ("apiVersion", "kind", "metadata", "spec", "status")
    return {key: document[key] for key in order if key in document}


def from_document(doc: object, *, path: str = "") -> AnyResource:
    """Return the resource a mapping describes (e.g. a status file read back); ResourceError if invalid."""
    if not isinstance(doc, dict):
        raise ResourceError(
            "not a resource: expected a mapping with apiVersion, kind, metadata, spec", path=path
        )
    kind_text = doc.get("kind")
    try:
        kind = Kind(str(kind_text))
    except ValueError:
        raise ResourceError(
            f"unknown kind {kind_text!r}: expected one of {', '.join(Kind)}", path=path
        ) from None
    model = MODELS[kind]
    try:
        return cast(AnyResource, model.model_validate(doc))
    except ValidationError as exc:
        metadata = doc.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        label = f'{kind} "{name}"' if isinstance(name, str) else str(kind)
        problems = "; ".join(
            f"{diagnostics.format_loc(tuple(e['loc']))}: {diagnostics.describe(e, model=model, kind=kind)}"
            for e in exc.errors()
        )
        raise ResourceError(f"{label}: {problems}", path=path) from None


def user_msg_preview(text: str) -> str:
    """Return ACP's preview of a user message: the first 50 characters, or 47 and "..."."""
    return text if len(text) <= 50 else text[:47] + "..."
