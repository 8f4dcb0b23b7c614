"""Tool calls waiting for a person through a branch, and what wakes them.

    AwaitingHumanApproval ── acp/approvals/<toolcall> ──► merged (a file on main) or deleted
    AwaitingHumanInput    ── acp/questions/<toolcall> ──► merged (a file on main) or deleted

A decision arrives as a commit on `main` (every waiting call is woken when main moves), as a
branch deleted without merging (`check_branches`, after each wake of the main loop: ref files
only, no git process), or as a forge's webhook naming the branch. Slack and email channels have
no branch: they poll HumanLayer on a timer of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import Kind, ToolCallPhase
from gitops_acp.resources.models import AnyResource, ToolCall
from gitops_acp.store.git import GitRepo

__all__ = ["HumanWaits"]


class HumanWaits:
    """Knows the tool calls waiting on a branch and wakes them when their branch may have changed.

    The set is kept up to date from each landed checkpoint (`note`), not found by scanning every
    resource: the main loop asks after every wake, and the tip may hold 100,000 resources.
    """

    def __init__(
        self,
        wake: Callable[[Key], None],
        repo: Callable[[], GitRepo | None],
        git: ThreadPoolExecutor,
    ) -> None:
        """`wake` enqueues a reconcile; `repo` and `git` are the reader's repository and its thread."""
        self._wake = wake
        self._repo = repo
        self._git = git
        self._waiting: dict[str, str] = {}  # tool call name -> the branch it waits on

    def note(self, key: Key, obj: AnyResource | None) -> None:
        """A resource's state as just committed (or loaded at start-up; None: gone or archived)."""
        if key[0] != Kind.ToolCall:
            return
        branch = _branch(obj)
        if branch is None:
            self._waiting.pop(key[1], None)
        else:
            self._waiting[key[1]] = branch

    def waiting(self) -> dict[str, str]:
        """Tool calls waiting for a person through a branch: name → branch."""
        return dict(self._waiting)

    def wake_all(self) -> None:
        """Main moved: a decision or an answer may have arrived for any pending branch."""
        for name in self.waiting():
            self._wake((Kind.ToolCall, name))

    def wake_branch(self, branch: str) -> None:
        """A forge said something happened to `branch`: re-check the call waiting on it."""
        for name, waiting_on in self.waiting().items():
            if waiting_on == branch:
                self._wake((Kind.ToolCall, name))

    async def check_branches(self) -> None:
        """Wake pending approvals and questions whose branch was deleted since the last look.

        Reads only ref files (no git process), and wakes nothing when nothing changed, so an idle
        reconciler with people's decisions pending stays idle (and `serve --once` can exit).
        """
        waiting = self.waiting()
        repo = self._repo()
        if not waiting or repo is None:
            return

        def gone() -> list[str]:
            return [name for name, branch in waiting.items() if repo.resolve(f"refs/heads/{branch}") is None]

        for name in await asyncio.get_running_loop().run_in_executor(self._git, gone):
            self._wake((Kind.ToolCall, name))


def _branch(obj: AnyResource | None) -> str | None:
    """The branch a tool call waits on for a person, or None."""
    if not isinstance(obj, ToolCall) or obj.status is None:
        return None
    status = obj.status
    if status.phase == ToolCallPhase.AwaitingHumanApproval:
        return status.approval.branch if status.approval else None
    if status.phase == ToolCallPhase.AwaitingHumanInput:
        return status.human_contact.branch if status.human_contact else None
    return None  # slack and email channels have none: they poll HumanLayer on a timer
