"""Fakes at the controllers' boundaries: a Context over the real State, and a scripted LLM client.

Controller transition tables run against these: given the observed status and the LLM's replies,
which phase, which files and how many checkpoints. End-to-end tests use the real reactor, a real
git repository and the HTTP stub instead.

Real-protocol fakes of outside services, served over HTTP on 127.0.0.1, are in the submodules:
``forges`` (GitHub, Gitea and GitLab pull requests, merged into a real git repository) and
``humanlayer`` (HumanLayer's API, in memory). Nothing here ships in the wheel.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from gitops_acp.controllers.base import Context, Settings
from gitops_acp.controllers.http import Http, HttpReply
from gitops_acp.controllers.state import State
from gitops_acp.errors import ForgeError, LLMError, MCPError
from gitops_acp.humans.approvals import Decision
from gitops_acp.humans.forges import ForgeClient
from gitops_acp.llm.client import Completion, LLMConfig, ToolCallRequest, ToolSpec
from gitops_acp.mcp import ServerConfig, ServerState, TaskState, ToolInfo, ToolResult
from gitops_acp.mcp.gate import CallGate
from gitops_acp.resources.loader import Loaded, load_file
from gitops_acp.resources.meta import Kind
from gitops_acp.resources.models import AnyResource, ContactChannel, from_document
from gitops_acp.secrets import SecretResolver
from gitops_acp.store.desired import DesiredState
from gitops_acp.store.status import Change


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

    # MCP tasks: what tasks/get answers, in turn, per task id (the last one repeats); what was sent.
    task_replies: dict[str, list[TaskState | MCPError]] = field(default_factory=dict)
    task_answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    task_cancels: list[str] = field(default_factory=list)

    async def get_task(
        self, server: str, task_id: str, *, timeout: float, session: str | None = None
    ) -> TaskState:
        replies = self.task_replies[task_id]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, MCPError):
            raise reply
        return reply

    async def answer_task(
        self,
        server: str,
        task_id: str,
        responses: dict[str, Any],
        *,
        timeout: float,
        session: str | None = None,
    ) -> None:
        self.task_answers.append((task_id, responses))

    async def cancel_task(
        self, server: str, task_id: str, *, timeout: float, session: str | None = None
    ) -> None:
        self.task_cancels.append(task_id)

    async def stop(self, name: str) -> None:
        self.stopped.append(name)
        self.servers.pop(name, None)

    async def aclose(self) -> None:
        self.servers.clear()


class FakeHumans:
    """People at the protocol boundary: branches as names in a set, decisions as a dict."""

    def __init__(self) -> None:
        self.main = "main"
        self.proposals: dict[str, tuple[dict[str, Any], str]] = {}  # toolcall -> (document, message)
        self.questions: dict[str, tuple[dict[str, Any], str]] = {}  # toolcall -> (document, message)
        self.branches: set[str] = set()
        self.decisions: dict[str, Decision] = {}  # what humans put on main
        self.responses: dict[str, Decision] = {}  # answers humans put on main
        self.forges: dict[str, ForgeClient | ForgeError] = {}  # channel name -> client (or the error)
        self.deleted: list[str] = []  # branches deleted, in order (a finished call's proposal)

    async def propose_approval(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        self.proposals.setdefault(toolcall, (document, message))
        self.branches.add(f"acp/approvals/{toolcall}")
        return f"acp/approvals/{toolcall}"

    async def approval_decision(self, toolcall: str) -> Decision | None:
        return self.decisions.get(toolcall)

    async def branch_exists(self, branch: str) -> bool:
        return branch in self.branches

    async def delete_branch(self, branch: str) -> None:
        self.branches.discard(branch)
        self.deleted.append(branch)

    async def propose_question(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        self.questions.setdefault(toolcall, (document, message))
        self.branches.add(f"acp/questions/{toolcall}")
        return f"acp/questions/{toolcall}"

    async def question_response(self, toolcall: str) -> Decision | None:
        return self.responses.get(toolcall)

    async def forge(self, channel: ContactChannel) -> ForgeClient:
        client = self.forges[channel.metadata.name]
        if isinstance(client, ForgeError):
            raise client
        return client


class FakeContext(Context):
    """The real Context: the real State (its checkpoint rules included) over a commit function that
    records every checkpoint in memory, the real Http over a mock transport, fakes at the LLM, MCP
    and people boundaries. Shortcuts for the tests: `declare` (put YAML on the fake `main`),
    `observe` (put an object on the fake status branch), `checkpoints`, `phases`.
    """

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
        self.checkpoints: list[tuple[AnyResource, ...]] = []  # objects of each checkpoint that landed
        self.removed: list[tuple[Kind, str]] = []
        self.woken: list[tuple[Kind, str]] = []
        self.posts: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.post_replies: list[int | OSError] = []  # one per POST; 200 when the list runs out
        self.requests: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        # Answers each request (method, url, body) other than a plain POST; None: 404 for everything.
        self.replies: Callable[[str, str, dict[str, Any] | None], HttpReply | OSError] | None = None
        self.fake_humans = FakeHumans()
        self.clock_value = now
        state = State(self._record, wake=self.woken.append, clock=lambda: self.clock_value)
        super().__init__(
            state=state,
            settings=settings or Settings(backoff_base=1.0, max_llm_attempts=3),
            llm=llm or FakeLLM(),  # type: ignore[arg-type]
            mcp=mcp or FakeMCP(),  # type: ignore[arg-type]
            secrets=SecretResolver(None, environ=environ or {"API_KEY": "test-key"}),
            humans=self.fake_humans,  # type: ignore[arg-type]
            http=Http(httpx2.AsyncClient(transport=httpx2.MockTransport(self._answer))),
        )
        state.desired_state = DesiredState(commit="0" * 40)
        if yaml_text:
            self.declare(yaml_text)

    async def _record(self, changes: Sequence[Change], spec_commit: str) -> str:
        """The status writer's place: every checkpoint lands at once, in order."""
        landed: list[AnyResource] = []
        for change in changes:
            if change.document is None:
                self.removed.append((change.kind, change.name))
            else:
                landed.append(from_document(change.document))
        if landed:
            self.checkpoints.append(tuple(landed))
        return "c" * 40

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        """The HTTP servers at the other end of `ctx.http` (responseUrl receivers, HumanLayer)."""
        body = json.loads(request.content) if request.content else None
        headers = {key.decode(): value.decode() for key, value in request.headers.raw}  # as sent
        url = str(request.url)
        if request.method == "POST" and self.replies is None:
            self.posts.append((url, body, headers))
            posted = self.post_replies.pop(0) if self.post_replies else 200
            if isinstance(posted, OSError):
                raise httpx2.ConnectError(str(posted), request=request)
            return httpx2.Response(posted)
        self.requests.append((request.method, url, body, headers))
        reply = self.replies(request.method, url, body) if self.replies is not None else HttpReply(404, None)
        if isinstance(reply, OSError):
            raise httpx2.ConnectError(str(reply), request=request)
        extra = {"retry-after": str(reply.retry_after)} if reply.retry_after is not None else {}
        if reply.body is None:
            return httpx2.Response(reply.status, headers=extra)
        return httpx2.Response(reply.status, json=reply.body, headers=extra)

    # -- shortcuts for the tests ----------------------------------------------------------------

    def now(self) -> float:
        return self.clock_value

    @property  # type: ignore[override]
    def clock(self) -> float:
        """The fake time, seconds since the epoch; tests move it with `ctx.clock += s`."""
        return self.clock_value

    @clock.setter
    def clock(self, value: float) -> None:
        if not callable(value):
            self.clock_value = value

    def declare(self, yaml_text: str, path: str = "resources.yaml") -> None:
        """Put resources on the fake `main`."""
        result = load_file(path, yaml_text.encode())
        assert not result.errors, [str(e) for e in result.errors]
        resources = dict(self.state.desired_state.resources)
        for loaded in result.loaded:
            resources[(Kind(loaded.resource.kind), loaded.resource.metadata.name)] = loaded
        self.state.desired_state = dataclasses.replace(self.state.desired_state, resources=resources)

    def undeclare(self, kind: Kind, name: str) -> None:
        """Remove a resource from the fake `main`."""
        resources = dict(self.state.desired_state.resources)
        resources.pop((kind, name), None)
        self.state.desired_state = dataclasses.replace(self.state.desired_state, resources=resources)

    def observe(self, obj: AnyResource) -> None:
        """Put an object on the fake status branch."""
        self.state.load(obj)

    def desired(self, kind: Kind, name: str) -> Loaded | None:
        return self.state.desired(kind, name)

    def observed(self, kind: Kind, name: str) -> AnyResource | None:
        return self.state.observed(kind, name)

    @property
    def proposals(self) -> dict[str, tuple[dict[str, Any], str]]:
        return self.fake_humans.proposals

    @property
    def questions(self) -> dict[str, tuple[dict[str, Any], str]]:
        return self.fake_humans.questions

    @property
    def branches(self) -> set[str]:
        return self.fake_humans.branches

    @property
    def decisions(self) -> dict[str, Decision]:
        return self.fake_humans.decisions

    @property
    def responses(self) -> dict[str, Decision]:
        return self.fake_humans.responses

    @property
    def forges(self) -> dict[str, ForgeClient | ForgeError]:
        return self.fake_humans.forges

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
