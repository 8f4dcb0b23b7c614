"""Where a fork starts: one task's status file at one of its checkpoint commits (DESIGN §12).

    task create NEW --fork-from TASK[@COMMIT]
        COMMIT given ──► the commit must change TASK's status file (a checkpoint of TASK)
        none         ──► TASK's newest checkpoint on the status branch that holds it
        ──► the status file there: not waiting on tool calls, with a context window ──► the fork

The command line resolves the commit (`point`) and writes it, as a full sha, to the new Task's
`spec.forkFrom`; the reconciler reads the same file again from git objects when it starts the task
(`window`), with the same checks, since a Task written by hand must not start from just anything.
Every refusal is one line naming the task, the commit and what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from gitops_acp.errors import StoreError, UserError
from gitops_acp.resources.meta import Kind, check_name
from gitops_acp.store import yamlio
from gitops_acp.store.statustree import read_status_file

if TYPE_CHECKING:
    from gitops_acp.resources.models import Message
    from gitops_acp.store.git import Reader

__all__ = ["ForkPoint", "parse_target", "point", "window"]


class ForkPoint(NamedTuple):
    """A checkpoint to fork from: its commit (full sha) and the task's status document there."""

    commit: str
    document: dict[str, Any]

    @property
    def agent(self) -> str | None:
        """The forked task's agent at that checkpoint."""
        ref = (self.document.get("spec") or {}).get("agentRef") or {}
        return ref.get("name") if isinstance(ref, dict) else None


def parse_target(text: str) -> tuple[str, str | None]:
    """`TASK` or `TASK@COMMIT` → (task, commit or None); a one-line error for a bad name."""
    task, at, commit = text.partition("@")
    problem = check_name(task)
    if problem:
        raise UserError(f"--fork-from {text!r}: {problem}")
    if at and not commit:
        raise UserError(f"--fork-from {text!r}: give a commit after @ (TASK@COMMIT), or none for the newest")
    return task, (commit or None)


def point(repo: Reader, task: str, commit: str | None) -> ForkPoint:
    """The checkpoint of `task` at `commit` (any name git resolves), or its newest one; checked."""
    if commit is None:
        return _newest(repo, task)
    sha = repo.resolve(f"{commit}^{{commit}}")
    if sha is None:
        raise UserError(f'cannot fork Task "{task}" at {commit}: no such commit in this repository')
    document = _at(repo, task, sha)
    if document is None:
        raise UserError(
            f'cannot fork Task "{task}" at {sha[:12]}: that commit is not a checkpoint of it (it does not '
            f"change its status file); `gitops-acp history task {task}` lists its checkpoints"
        )
    _check(task, sha, document)
    return ForkPoint(sha, document)


def window(repo: Reader, task: str, commit: str | None) -> tuple[str, list[Message]]:
    """The checkpoint (a full sha) and the context window to start a fork with: `task`'s at
    `commit` (None: its newest), checked."""
    from gitops_acp.resources.models import Message

    found = point(repo, task, commit)
    try:
        status = found.document.get("status") or {}
        return found.commit, [Message.model_validate(m) for m in status.get("contextWindow") or []]
    except ValueError as exc:
        raise UserError(f'Task "{task}" at {found.commit[:12]}: unreadable context window: {exc}') from None


def _newest(repo: Reader, task: str) -> ForkPoint:
    """The newest commit that changed `task`'s live status file, on the branch that holds it."""
    from gitops_acp.store import history, readers

    observed, branch, _archived = readers.status_of(repo, Kind.Task, task)
    if observed is None:
        raise UserError(
            f'cannot fork Task "{task}": it has no checkpoint on any status branch '
            "(not run yet, or no such task)"
        )
    for event in history.events(repo, branch=branch, kind=str(Kind.Task), name=task, n=3):
        document = _at(repo, task, event.sha)
        if document is not None:
            _check(task, event.sha, document)
            return ForkPoint(event.sha, document)
    raise UserError(f'cannot fork Task "{task}": no checkpoint of it found on {branch}')


def _at(repo: Reader, task: str, sha: str) -> dict[str, Any] | None:
    """The task's status document at `sha` when that commit changed it (a checkpoint), else None."""
    found = read_status_file(repo, sha, Kind.Task, task, archived=False)
    if found is None:
        return None
    parent = repo.resolve(f"{sha}^")
    before = read_status_file(repo, parent, Kind.Task, task, archived=False) if parent else None
    if before is not None and before.data == found.data:
        return None
    try:
        document = yamlio.load(found.data)
    except StoreError as exc:
        raise UserError(f'Task "{task}" at {sha[:12]}: unreadable status file: {exc}') from None
    return document if isinstance(document, dict) else None


def _check(task: str, sha: str, document: dict[str, Any]) -> None:
    """Refuse a checkpoint a conversation cannot go on from."""
    status = document.get("status") or {}
    phase = status.get("phase") or "-"
    if phase == "ToolCallsPending":
        raise UserError(
            f'cannot fork Task "{task}" at {sha[:12]}: it waits on tool calls there (ToolCallsPending), '
            "whose results that checkpoint does not hold; fork from the checkpoint after they came back "
            f"(`gitops-acp history task {task}`)"
        )
    if not status.get("contextWindow"):
        raise UserError(f'cannot fork Task "{task}" at {sha[:12]}: it has no context window there ({phase})')
