"""What every controller sees and returns.

A controller reconciles one resource, named by its key, against the world: the desired state read
from a commit of `main` and the observed state read from the tip of `acp/status`. It makes progress
in checkpoints: ``ctx.checkpoint(obj)`` returns once the commit that records the new status is on the
status branch, so a controller never advances past a checkpoint that is not committed.

Controllers share one shape (after flux's source-controller): ``reconcile(name, ctx) -> Result``
running private steps in order. They never touch git, files or the clock directly: everything
outside goes through the ``Context`` (implemented by the reactor) so the transition tables can be
tested with fakes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gitops_acp.humans.approvals import Decision
from gitops_acp.humans.forges import ForgeClient
from gitops_acp.humans.humanlayer import DEFAULT_URL
from gitops_acp.llm.client import LLMClient
from gitops_acp.mcp import MCPManager
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.loader import Loaded
from gitops_acp.resources.meta import Kind, parse_rfc3339, rfc3339
from gitops_acp.resources.models import AnyResource, ContactChannel
from gitops_acp.secrets import SecretResolver

__all__ = [
    "DONE",
    "Context",
    "Controller",
    "HttpReply",
    "Key",
    "Result",
    "Settings",
    "forget",
    "parse_rfc3339",
    "rfc3339",
]



@dataclass(frozen=True)
class Result:
    """What the reactor should do next with this key.

    ``requeue_after`` None: wait for an event (a new commit, a dependency changing).
    ``progress``: whether the timed wait counts as work for ``serve --once`` (a backoff the task
    passes by itself) or is only a watchdog (re-validating something in Error).
    """

    requeue_after: float | None = None
    progress: bool = True


DONE = Result()


@dataclass(frozen=True)
class Settings:
    """Tunables of the controllers, from the command line."""

    backoff_base: float = 1.0  # first ErrorBackoff delay, seconds; doubles per attempt
    backoff_cap: float = 300.0  # longest ErrorBackoff delay, seconds
    max_llm_attempts: int = 10  # transient LLM failures in a row before a task is Failed
    revalidate_interval: float = 300.0  # how often a Ready LLM checks whether its secret rotated
    error_retry: float = 30.0  # how soon an LLM or channel in Error is validated again
    llm_timeout: float = 120.0  # seconds per LLM request
    tool_timeout: float = 60.0  # seconds per MCP tool call when the MCPServer sets no `timeout`
    log_dir: Path | None = None  # where stdio MCP servers' stderr goes (one file per server)
    max_delegation_depth: int = 5  # sub-agent chains longer than this are refused
    max_delivery_attempts: int = 10  # responseUrl POSTs before the delivery is given up as Failed
    humanlayer_url: str = DEFAULT_URL  # HumanLayer's API base, for slack and email channels
    humanlayer_poll: float = 5.0  # seconds between looks at a pending HumanLayer request
    main_branch: str = "main"  # the branch pull requests for approvals are opened against
    forge_poll_interval: float = 60.0  # at best, seconds between two looks at one pull request's state


@dataclass(frozen=True)
class HttpReply:
    """An HTTP response as controllers see it: the status, the JSON body (None if not JSON), Retry-After."""

    status: int
    body: Any
    retry_after: float | None = None  # seconds, when the server sent Retry-After


class Context(Protocol):
    """The world as one reconcile sees it, and the only way to change it."""

    @property
    def spec_commit(self) -> str:
        """The commit of `main` being reconciled."""
        ...

    @property
    def settings(self) -> Settings: ...

    @property
    def llm(self) -> LLMClient: ...

    @property
    def secrets(self) -> SecretResolver: ...

    @property
    def mcp(self) -> MCPManager:
        """The MCP sessions of this process (one per MCPServer)."""
        ...

    def now(self) -> float:
        """Seconds since the epoch (a fake clock in tests)."""
        ...

    def desired(self, kind: Kind, name: str) -> Loaded | None:
        """The resource as declared on `main`, or None."""
        ...

    def observed(self, kind: Kind, name: str) -> AnyResource | None:
        """The resource as last committed to the status branch, or None."""
        ...

    def observed_all(self, kind: Kind) -> Iterable[AnyResource]:
        """Every resource of `kind` on the status branch."""
        ...

    async def checkpoint(self, *objects: AnyResource) -> None:
        """Commit the objects' new state in one commit; return once it is on the status branch."""
        ...

    async def remove(self, kind: Kind, name: str, *, reason: str) -> None:
        """Delete the resource's status file (the resource left `main`)."""
        ...

    def wake(self, kind: Kind, name: str) -> None:
        """Ask for a reconcile of another resource."""
        ...

    async def propose_approval(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        """Create (or find) the approval branch of a tool call from the tip of `main`; return its name."""
        ...

    async def approval_decision(self, toolcall: str) -> Decision | None:
        """The approval file of a tool call on the tip of `main`, with who put it there; None if absent."""
        ...

    async def propose_question(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        """Create (or find) the question branch of a tool call from the tip of `main`; return its name."""
        ...

    async def question_response(self, toolcall: str) -> Decision | None:
        """The response file of a question on the tip of `main`, with who put it there; None if absent."""
        ...

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str],
        timeout: float,
    ) -> HttpReply:
        """Send an HTTP request (JSON body, if any); raise OSError when the server can't be reached."""
        ...

    async def branch_exists(self, branch: str) -> bool:
        """Whether `refs/heads/<branch>` exists."""
        ...

    async def post_json(
        self, url: str, body: dict[str, Any], *, headers: dict[str, str], timeout: float
    ) -> int:
        """POST `body` as JSON and return the HTTP status; raise OSError when the server can't be reached."""
        ...

    async def forge(self, channel: ContactChannel) -> ForgeClient:
        """The pull-request client of a git channel that names a forge.

        Raises PermanentForgeError when it cannot be built (no token, no repository to talk about).
        """
        ...


class Controller(Protocol):
    """One module per kind, each with this shape."""

    kind: Kind

    async def reconcile(self, name: str, ctx: Context) -> Result:
        """Move the named resource one or more committed checkpoints forward."""
        ...

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        """The resources whose changes must wake this one."""
        ...


async def forget(kind: Kind, name: str, ctx: Context) -> Result:
    """The resource left `main`: delete its status file (as `kubectl delete` removes the object)."""
    if ctx.observed(kind, name) is not None:
        await ctx.remove(kind, name, reason="removed from main")
    return DONE
