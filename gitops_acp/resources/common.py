"""Building blocks every kind shares: base models, references, metadata, chat messages, scalars.

The base classes fix the two policies of the schema in one place: specs refuse unknown fields
(`extra="forbid"`), statuses ignore them (`extra="ignore"`), and both read and write ACP's
camelCase. They also leave empty collections out of documents, as Go's `omitempty` does for
`kubectl get -o yaml`, so status files show what is set and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from gitops_acp.resources.meta import ACCEPTED_API_VERSIONS, API_VERSION, check_name, parse_duration

__all__ = [
    "Duration",
    "Float",
    "FunctionCall",
    "Int",
    "LocalObjectReference",
    "Message",
    "MessageToolCall",
    "ObjectMeta",
    "Resource",
    "Role",
    "SecretKeyRef",
    "SecretSource",
    "SpecModel",
    "StatusModel",
    "duration_seconds",
]


class _Schema(BaseModel):
    """camelCase in YAML, snake_case in Python.

    The attribute docstrings document the fields for people reading the code; pydantic is not
    asked to turn them into field descriptions (`use_attribute_docstrings`): nothing reads those,
    and finding them (each model's source read and parsed at import) was 40 of the 170 ms that
    importing the models takes, in every command that parses a file and at every start.

    Each model's validator and serializer are built on its first use (`defer_build`), not at
    import: a command builds those of what it reads (`get tasks` parses LLMs, Agents and Tasks,
    not the forty other models), ~40 ms less of its ~350; a reconciler builds each once, as before.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, defer_build=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # Leave a field out of documents when it is empty and its default is empty too, so reading
        # the document back gives the same object (a `dict | None` holding `{}` is kept: `{}` is
        # not its default). A per-field `exclude_if` keeps serialization in pydantic-core; the
        # model-wide wrap serializer this replaces called back into Python for every object, which
        # was a third of the cost of writing a checkpoint.
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for info in cls.model_fields.values():
            if info.exclude_if is None and (test := _emptiness_test(info)) is not None:
                info.exclude_if = test
                changed = True
        if changed and cls.__pydantic_complete__:  # built already (not deferred): build it again
            cls.model_rebuild(force=True)


def _emptiness_test(info: FieldInfo) -> Callable[[Any], bool] | None:
    """How to tell a field's value is empty, when its default is an empty list, dict or model."""
    if info.is_required():
        return None
    default = info.get_default(call_default_factory=True)
    if isinstance(default, list) and not default:
        return _empty_list
    if isinstance(default, dict) and not default:
        return _empty_dict
    if isinstance(default, BaseModel) and not default.model_dump(exclude_none=True):
        return _empty_model
    return None


def _empty_list(value: Any) -> bool:
    return isinstance(value, list) and not value


def _empty_dict(value: Any) -> bool:
    return isinstance(value, dict) and not value


def _empty_model(value: Any) -> bool:
    return isinstance(value, BaseModel) and not value.model_dump(exclude_none=True)


class SpecModel(_Schema):
    """Base of specs and everything inside them: an unknown field is an error, never dropped."""

    model_config = ConfigDict(extra="forbid")


class StatusModel(_Schema):
    """Base of statuses: written by the reconciler, read leniently (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")


def _not_bool(value: object) -> object:
    # pydantic's lax mode reads `true` as 1; in a manifest that is a mistake, not a number.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def _check_duration(value: object) -> object:
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError('must be a duration such as "30s", "5m", "1h30m", or a number of seconds')
    if parse_duration(value) <= 0:
        raise ValueError("must be longer than zero")
    return value


# A number that may be written as a string ("0.7", as ACP's CRDs declare them), stored as float.
Float = Annotated[float, BeforeValidator(_not_bool)]
# A whole number; `true` is refused.
Int = Annotated[int, BeforeValidator(_not_bool)]
# A duration as written ("30s", "1h30m", 45): kept as the person wrote it, validated on load.
Duration = Annotated[str | int | float, BeforeValidator(_check_duration)]


def duration_seconds(value: str | int | float | None) -> float | None:
    """Return a `Duration` field in seconds, or None when unset."""
    return None if value is None else parse_duration(value)


class LocalObjectReference(SpecModel):
    """A reference by name to another resource of this repository."""

    name: str = Field(min_length=1)
    """The referenced resource's name."""


class SecretKeyRef(SpecModel):
    """One value of a secret: `<secrets-dir>/<name>/<key>`, else the environment variable `<key>`."""

    name: str = Field(min_length=1)
    """The secret's name (a directory under --secrets-dir)."""
    key: str = Field(min_length=1)
    """The key within it (a file name, or an environment variable)."""


class SecretSource(SpecModel):
    """ACP's `apiKeyFrom` shape: `{secretKeyRef: {name, key}}`."""

    secret_key_ref: SecretKeyRef
    """Which secret holds the value."""


# Fields the Kubernetes API server fills in. A manifest exported with `kubectl get -o yaml` carries
# them; `kubectl apply` accepts such a file, so we do too, and drop them (they mean nothing here).
_SERVER_FIELDS = frozenset(
    {"creationTimestamp", "generation", "managedFields", "resourceVersion", "selfLink", "uid"}
)


class ObjectMeta(SpecModel):
    """Kubernetes-style metadata; a repository is one namespace, so only `default` is allowed."""

    name: str
    """The resource's name: a DNS-1123 label, unique per kind."""
    namespace: str | None = None
    """Accepted for ACP manifests; must be `default` when present."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels; the reconciler's are under `acp.gitops.dev/`."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations; the reconciler records the source file and spec commit here."""

    @model_validator(mode="before")
    @classmethod
    def _drop_server_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and not _SERVER_FIELDS.isdisjoint(data):
            return {key: value for key, value in data.items() if key not in _SERVER_FIELDS}
        return data

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        problem = check_name(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    @field_validator("namespace")
    @classmethod
    def _one_namespace(cls, namespace: str | None) -> str | None:
        if namespace not in (None, "default"):
            raise ValueError(
                f'namespace "{namespace}" is not allowed: one repository is one namespace '
                '(remove metadata.namespace or set it to "default")'
            )
        return namespace


Role = Literal["system", "user", "assistant", "tool"]


class FunctionCall(SpecModel):
    """The function an assistant message asks to call."""

    name: str
    """The tool's name as the LLM saw it, e.g. `fetch__fetch`."""
    arguments: str
    """The arguments as a JSON string (as the LLM produced it; may be invalid JSON)."""


class MessageToolCall(SpecModel):
    """One tool call requested by an assistant message."""

    id: str
    """The LLM's id for the call; the tool message answering it carries the same id."""
    type: Literal["function"] = "function"
    """Always "function" (the OpenAI wire format)."""
    function: FunctionCall
    """What to call, with which arguments."""


class Message(SpecModel):
    """One message of a conversation, in the OpenAI chat format ACP stores."""

    role: Role
    """system, user, assistant or tool."""
    content: str = ""
    """The text; empty for an assistant message that only calls tools."""
    tool_calls: list[MessageToolCall] = Field(default_factory=list)
    """Tools an assistant message asks to call."""
    tool_call_id: str | None = None
    """On a tool message: the id of the call it answers."""
    name: str | None = None
    """Optional participant name."""

    @field_validator("content", mode="before")
    @classmethod
    def _null_content(cls, content: object) -> object:
        # The OpenAI SDK gives `content: None` for an assistant message that only calls tools.
        return "" if content is None else content

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs toolCallId (the id of the call it answers)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages have toolCalls")
        return self


class Resource(_Schema):
    """Base of the top-level kinds: `apiVersion`, `kind`, `metadata`, `spec`, `status`, in that order."""

    model_config = ConfigDict(extra="forbid")

    api_version: str = API_VERSION
    """Any accepted apiVersion on input; always ours once loaded (what status files carry)."""
    kind: str
    """The kind; each subclass fixes it."""
    metadata: ObjectMeta
    """Name, labels, annotations."""
    spec: SpecModel
    """Desired state, from main (the reconciler copies it into status files)."""
    status: StatusModel | None = None
    """Observed state, from the status branch."""

    @field_validator("api_version")
    @classmethod
    def _accepted(cls, api_version: str) -> str:
        if api_version not in ACCEPTED_API_VERSIONS:
            raise ValueError(f"apiVersion must be one of {', '.join(sorted(ACCEPTED_API_VERSIONS))}")
        return API_VERSION
