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

from gitops_acp.controllers.state import State
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import Kind, ToolCallPhase
from gitops_acp.resources.models import ToolCall
from gitops_acp.store.git import GitRepo

__all__ = ["HumanWaits"]


class HumanWaits:
    """Finds the tool calls waiting on a branch and wakes them when their branch may have changed."""

    def __init__(
        self,
        state: State,
        wake: Callable[[Key], None],
        repo: Callable[[], GitRepo | None],
        git: ThreadPoolExecutor,
    ) -> None:
        """`wake` enqueues a reconcile; `repo` and `git` are the reader's repository and its thread."""
        self._state = state
        self._wake = wake
        self._repo = repo
        self._git = git

    def waiting(self) -> dict[str, str]:
        """Tool calls waiting for a person through a branch: name → branch."""
        waiting: dict[str, str] = {}
        for (kind, name), obj in self._state.observed_items():
            if kind != Kind.ToolCall or not isinstance(obj, ToolCall) or obj.status is None:
                continue
            status = obj.status
            if status.phase == ToolCallPhase.AwaitingHumanApproval:
                branch = status.approval.branch if status.approval else None
            elif status.phase == ToolCallPhase.AwaitingHumanInput:
                branch = status.human_contact.branch if status.human_contact else None
            else:
                continue
            if branch:  # slack and email channels have none: they poll HumanLayer on a timer
                waiting[name] = branch
        return waiting

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
