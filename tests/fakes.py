"""Fakes at the controllers' boundary: an in-memory Context and a scripted LLM client.

Controller transition tables run against these: given the observed status and the LLM's replies,
which phase, which files and how many checkpoints. End-to-end tests use the real reactor, a real
git repository and the HTTP stub instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gitops_acp.controllers.base import HttpReply, Settings
from gitops_acp.errors import ForgeError, LLMError, MCPError
from gitops_acp.humans.approvals import Decision
from gitops_acp.humans.forges import ForgeClient
from gitops_acp.llm.client import Completion, LLMConfig, ToolCallRequest, ToolSpec
from gitops_acp.mcp import ServerConfig, ServerState, ToolInfo, ToolResult
from gitops_acp.mcp.gate import CallGate
from gitops_acp.resources.loader import Loaded, load_file
from gitops_acp.resources.meta import Kind
from gitops_acp.resources.models import AnyResource, ContactChannel
from gitops_acp.secrets import SecretResolver


def final(text: str, prompt: int = 10, completion: int = 5) -> Completion:
    """A final answer."""
    return Completion(
        content=text,
        tool_calls=(),
        prompt_tokens=prompt,
        completion_tokens=completion,
        message={"role": "assistant", "content": text},
    )


def tool_calls(*calls: tuple[str, str]) -> Completion:
    """An answer asking for tools: (function name, JSON arguments) each."""
    requests = tuple(
        ToolCallRequest(id=f"call_{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls, 1)
    )
    return Completion(
        content=None,
        tool_calls=requests,
        prompt_tokens=10,
        completion_tokens=5,
        message={
            "role": "assistant",
            "content": "",
            "toolCalls": [
                {"id": r.id, "type": "function", "function": {"name": r.name, "arguments": r.arguments}}
                for r in requests
            ],
        },
    )


@dataclass
class FakeLLM:
    """Replies from a list, one per request; an LLMError in the list is raised instead."""

    replies: list[Completion | LLMError] = field(default_factory=list)
    requests: list[tuple[LLMConfig, list[Mapping[str, Any]], tuple[ToolSpec, ...]]] = field(
        default_factory=list
    )

    async def complete(
        self, config: LLMConfig, messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec] = ()
    ) -> Completion:
        self.requests.append((config, list(messages), tuple(tools)))
        reply = self.replies.pop(0) if self.replies else final("ok")
        if isinstance(reply, LLMError):
            raise reply
        return reply

    async def aclose(self) -> None:
        return None


@dataclass
class FakeMCP:
    """MCP sessions as a dict: connected servers with tools, and a scripted reply per tool."""

    servers: dict[str, ServerState] = field(default_factory=dict)
    replies: dict[str, ToolResult | MCPError] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    ensured: list[ServerConfig] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def connect(self, name: str, *tools: ToolInfo) -> None:
        self.servers[name] = ServerState(
            connected=True, tools=tools, error=None, restarts=0, protocol_version="x"
        )

    gates: dict[str, CallGate] = field(default_factory=dict)

    def ensure(self, config: ServerConfig, *, learned_limit: int | None = None) -> None:
        self.ensured.append(config)

    def gate(self, name: str) -> CallGate:
        return self.gates.setdefault(name, CallGate())

    def state(self, name: str) -> ServerState | None:
        return self.servers.get(name)

    async def call_tool(
        self, server: str, tool: str, arguments: dict[str, Any], *, timeout: float
    ) -> ToolResult:
        self.calls.append((server, tool, arguments))
        reply = self.replies.get(tool, ToolResult(text=f"{tool} ok", is_error=False))
        if isinstance(reply, MCPError):
            raise reply
        return reply

    async def stop(self, name: str) -> None:
        self.stopped.append(name)
        self.servers.pop(name, None)

    async def aclose(self) -> None:
        self.servers.clear()


class FakeContext:
    """Desired state from YAML text, observed state in a dict, checkpoints recorded in order."""

    def __init__(
        self,
        yaml_text: str = "",
        *,
        llm: FakeLLM | None = None,
        mcp: FakeMCP | None = None,
        environ: Mapping[str, str] | None = None,
        now: float = 1_800_000_000.0,
        settings: Settings | None = None,
    ) -> None:
        self._desired: dict[tuple[Kind, str], Loaded] = {}
        if yaml_text:
            self.declare(yaml_text)
        self._observed: dict[tuple[Kind, str], AnyResource] = {}
        self.checkpoints: list[tuple[AnyResource, ...]] = []
        self.removed: list[tuple[Kind, str]] = []
        self.woken: list[tuple[Kind, str]] = []
        self.posts: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.post_replies: list[int | OSError] = []  # one per POST; 200 when the list runs out
        self.proposals: dict[str, tuple[dict[str, Any], str]] = {}  # toolcall -> (document, message)
        self.branches: set[str] = set()
        self.decisions: dict[str, Decision] = {}  # what humans put on main
        self.questions: dict[str, tuple[dict[str, Any], str]] = {}  # toolcall -> (document, message)
        self.responses: dict[str, Decision] = {}  # answers humans put on main
        self.requests: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        # Answers each request_json (method, url, body, headers); None: 404 for everything.
        self.http: Callable[[str, str, dict[str, Any] | None], HttpReply | OSError] | None = None
        self.forges: dict[str, ForgeClient | ForgeError] = {}  # channel name -> client (or the error)
        self._llm = llm or FakeLLM()
        self._mcp = mcp or FakeMCP()
        self._secrets = SecretResolver(None, environ=environ or {"API_KEY": "test-key"})
        self.clock = now
        self._settings = settings or Settings(backoff_base=1.0, max_llm_attempts=3)

    def declare(self, yaml_text: str, path: str = "resources.yaml") -> None:
        """Put resources on the fake `main`."""
        result = load_file(path, yaml_text.encode())
        assert not result.errors, [str(e) for e in result.errors]
        for loaded in result.loaded:
            self._desired[(Kind(loaded.resource.kind), loaded.resource.metadata.name)] = loaded

    def undeclare(self, kind: Kind, name: str) -> None:
        """Remove a resource from the fake `main`."""
        self._desired.pop((kind, name), None)

    def observe(self, obj: AnyResource) -> None:
        """Put an object on the fake status branch."""
        self._observed[(Kind(obj.kind), obj.metadata.name)] = obj

    # Context protocol
    @property
    def spec_commit(self) -> str:
        return "0" * 40

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def llm(self) -> FakeLLM:
        return self._llm

    @property
    def secrets(self) -> SecretResolver:
        return self._secrets

    @property
    def mcp(self) -> FakeMCP:
        return self._mcp

    def now(self) -> float:
        return self.clock

    def desired(self, kind: Kind, name: str) -> Loaded | None:
        return self._desired.get((kind, name))

    def observed(self, kind: Kind, name: str) -> AnyResource | None:
        return self._observed.get((kind, name))

    def observed_all(self, kind: Kind) -> Iterable[AnyResource]:
        return [o for (k, _), o in self._observed.items() if k == kind]

    async def checkpoint(self, *objects: AnyResource) -> None:
        self.checkpoints.append(objects)
        for obj in objects:
            self.observe(obj)

    async def remove(self, kind: Kind, name: str, *, reason: str) -> None:
        self.removed.append((kind, name))
        self._observed.pop((kind, name), None)

    def wake(self, kind: Kind, name: str) -> None:
        self.woken.append((kind, name))

    async def propose_approval(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        self.proposals.setdefault(toolcall, (document, message))
        self.branches.add(f"acp/approvals/{toolcall}")
        return f"acp/approvals/{toolcall}"

    async def approval_decision(self, toolcall: str) -> Decision | None:
        return self.decisions.get(toolcall)

    async def branch_exists(self, branch: str) -> bool:
        return branch in self.branches

    async def propose_question(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        self.questions.setdefault(toolcall, (document, message))
        self.branches.add(f"acp/questions/{toolcall}")
        return f"acp/questions/{toolcall}"

    async def question_response(self, toolcall: str) -> Decision | None:
        return self.responses.get(toolcall)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str],
        timeout: float,
    ) -> HttpReply:
        self.requests.append((method, url, body, headers))
        reply = self.http(method, url, body) if self.http is not None else HttpReply(404, None)
        if isinstance(reply, OSError):
            raise reply
        return reply

    async def post_json(
        self, url: str, body: dict[str, Any], *, headers: dict[str, str], timeout: float
    ) -> int:
        self.posts.append((url, body, headers))
        reply = self.post_replies.pop(0) if self.post_replies else 200
        if isinstance(reply, OSError):
            raise reply
        return reply

    async def forge(self, channel: ContactChannel) -> ForgeClient:
        client = self.forges[channel.metadata.name]
        if isinstance(client, ForgeError):
            raise client
        return client

    # helpers for assertions
    def phases(self, kind: Kind, name: str) -> list[str]:
        """The phase (or condition) of each checkpoint that touched the resource, in order."""
        out = []
        for objects in self.checkpoints:
            for obj in objects:
                if Kind(obj.kind) == kind and obj.metadata.name == name and obj.status is not None:
                    out.append(str(getattr(obj.status, "phase", None) or getattr(obj.status, "status", None)))
        return out


def ready(ctx: FakeContext, kind: Kind, name: str) -> None:
    """Mark a declared resource Ready on the fake status branch."""
    from gitops_acp.resources.models import MODELS

    loaded = ctx.desired(kind, name)
    assert loaded is not None
    status_model = MODELS[kind].model_fields["status"].annotation
    fields: dict[str, Any] = {"ready": True, "status": "Ready"}
    if kind == Kind.MCPServer:
        fields = {"connected": True, "status": "Ready"}
    status = _status_class(status_model).model_validate(fields)
    ctx.observe(loaded.resource.model_copy(update={"status": status}))


def _status_class(annotation: Any) -> Any:
    # `XStatus | None` → XStatus
    return next(a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None))
