"""A person's decision or answer as the file it leaves on `main`: what `approve`, `reject`, `respond`
and the HTTP API (`POST /v1/toolcalls/{name}/approve|reject|respond`) commit, the same record a
merge of the proposal branch leaves.

    acp/approvals/<toolcall> ──► approvals/<toolcall>.yaml with decision and comment set ──► Record
    acp/questions/<toolcall> ──► responses/<toolcall>.yaml with response set            ──► Record

Reading only: the caller commits the record as the person (store/usercommits.py, api/writer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gitops_acp.errors import UserError
from gitops_acp.humans import approvals, questions
from gitops_acp.store import yamlio

if TYPE_CHECKING:
    from gitops_acp.store.git import Reader

__all__ = ["AlreadyDecided", "NotPending", "Record", "answer", "decision"]


class NotPending(UserError):
    """No pending approval or question of that name (no proposal branch)."""


class AlreadyDecided(UserError):
    """The decision or answer is on `main` already."""


@dataclass(frozen=True)
class Record:
    """A file to commit on `main` and the commit message that says what it decides."""

    path: str
    data: bytes
    message: str


def decision(
    repo: Reader, toolcall: str, *, decision: str, comment: str, main: str | None, branch: str = "main"
) -> Record:
    """The approval file of `toolcall` (from its branch) with `decision` ("approved" or "rejected")
    and `comment` set; `main` is the commit of `branch` it must not be decided on already."""
    path = approvals.approval_path(toolcall)
    if main is not None and repo.read_file(main, path) is not None:
        raise AlreadyDecided(f"{toolcall} is already decided: {path} is on {branch}")
    proposal = repo.resolve(f"refs/heads/{approvals.branch_name(toolcall)}")
    data = repo.read_file(proposal, path) if proposal is not None else None
    if data is None:
        raise NotPending(
            f"no pending approval named {toolcall} (no branch {approvals.branch_name(toolcall)})"
        )
    document = yamlio.load(data)
    spec = document.setdefault("spec", {})
    spec["decision"] = decision
    spec["comment"] = comment
    verb = "Approve" if decision == "approved" else "Reject"
    message = f"{verb} {spec.get('tool', '?')} for task {spec.get('task', '?')}" + (
        f"\n\n{comment}" if comment else ""
    )
    return Record(path, yamlio.dump(document), message)


def answer(repo: Reader, toolcall: str, *, response: str, main: str | None, branch: str = "main") -> Record:
    """The question file of `toolcall` (from its branch) with `response` set."""
    if not response.strip():
        raise UserError("the response is empty: write an answer (delete the question's branch to decline)")
    path = questions.response_path(toolcall)
    if main is not None and repo.read_file(main, path) is not None:
        raise AlreadyDecided(f"{toolcall} is already answered: {path} is on {branch}")
    question = repo.resolve(f"refs/heads/{questions.branch_name(toolcall)}")
    data = repo.read_file(question, path) if question is not None else None
    if data is None:
        raise NotPending(
            f"no pending question named {toolcall} (no branch {questions.branch_name(toolcall)})"
        )
    document = yamlio.load(data)
    spec = document.setdefault("spec", {})
    spec["response"] = response
    message = f"Answer the question of task {spec.get('task', '?')}\n\n{response}"
    return Record(path, yamlio.dump(document), message)
