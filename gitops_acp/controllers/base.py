"""What every controller sees and returns.

A controller reconciles one resource, named by its key, against the world: the desired state read
from a commit of `main` and the observed state read from the tip of `acp/status`. It makes progress
in checkpoints: ``ctx.state.checkpoint(obj)`` returns once the commit that records the new status is on the
status branch, so a controller never advances past a checkpoint that is not committed.

Controllers share one shape (after flux's source-controller): ``reconcile(name, ctx) -> Result``
running private steps in order. They never touch git, files or the clock directly: everything
outside goes through the ``Context``'s few dependencies, so the transition tables are tested with
the real checkpoint rules and fakes only at the protocol boundaries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gitops_acp.controllers.http import Http
from gitops_acp.controllers.state import State
from gitops_acp.humans.gateway import Humans
from gitops_acp.humans.humanlayer import DEFAULT_URL
from gitops_acp.llm.client import LLMClient
from gitops_acp.mcp import MCPManager
from gitops_acp.policy import Policy
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import Kind, parse_rfc3339, rfc3339
from gitops_acp.resources.models import AnyResource, Message
from gitops_acp.secrets import SecretResolver

__all__ = [
    "DONE",
    "Checkpoints",
    "Context",
    "Controller",
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

#: Reads a task's context window at one of its checkpoint commits (task, full sha; None: its
#: newest) from git objects (store/forks.py): (the commit, the window); UserError, one line, when
#: that commit cannot be forked from.
Checkpoints = Callable[[str, str | None], Awaitable[tuple[str, list[Message]]]]


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
    forge_poll_interval: float = 60.0  # at best, seconds between two looks at one pull request's state
    policy: Policy | None = None  # the operator's `serve --policy` (None: everything allowed, DESIGN §10)
    # With `serve --once`, when the run began: schedule slots after it wait for the next run, so a
    # slow run does not fire slot after slot as they come (docs/schedules.md). None: no limit.
    fire_until: float | None = None


class Context:
    """What one reconcile may use: narrow, explicit dependencies, each testable on its own.

    ``state`` is desired and observed state and the checkpoints, with their rules
    (controllers/state.py); ``humans`` the branches, decisions and forges people act through
    (humans/gateway.py); ``http`` JSON over one injected client (controllers/http.py); ``llm``,
    ``mcp`` and ``secrets`` the clients of the outside systems; ``clock`` the time (a fixed one
    in tests); ``fork_window`` reads a task's context window at a checkpoint commit (forks).
    The reactor builds one Context for the life of `serve`; a test builds the same
    objects over fakes at the protocol boundary.
    """

    def __init__(
        self,
        *,
        state: State,
        settings: Settings,
        llm: LLMClient,
        mcp: MCPManager,
        secrets: SecretResolver,
        humans: Humans,
        http: Http,
        clock: Callable[[], float] = time.time,
        fork_window: Checkpoints | None = None,
    ) -> None:
        self.state = state
        self.fork_window = fork_window
        self.settings = settings
        self.llm = llm
        self.mcp = mcp
        self.secrets = secrets
        self.humans = humans
        self.http = http
        self.clock = clock

    def now(self) -> float:
        """Seconds since the epoch."""
        return self.clock()


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
    if ctx.state.observed(kind, name) is not None:
        await ctx.state.remove(kind, name, reason="removed from main")
    return DONE
