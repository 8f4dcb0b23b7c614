"""A follow-up as a person's commit to `main`: the Task's file with one more `spec.followUps[]`.

    task send NAME -m M / POST /v1/tasks/{name}/messages
        ──► refused: not declared on main, declared with other resources in its file, archived,
            Failed or Cancelled (a follow-up goes on only from an answer: fork instead)
        ──► the file re-written with `{content: M}` appended (the reconciler takes it after the
            current answer, DESIGN §12)

Shared by the command line (store/usercommits) and the HTTP API (api/writer), which both commit
what `appended` returns as the person. The file is re-written from its parsed document: its
fields stay, its comments do not (docs/conversations.md).
"""

from __future__ import annotations

from typing import Any

import yaml

from gitops_acp.errors import UserError
from gitops_acp.store import yamlio

__all__ = ["appended", "contents", "refusal"]


def refusal(name: str, observed: dict[str, Any] | None, *, archived: bool) -> str | None:
    """Why task `name`, with this status document, cannot take a follow-up now (None: it can)."""
    fork = f"fork it instead: `gitops-acp task create NEW --fork-from {name}`"
    if archived:
        return f'Task "{name}" was archived (finished, past its retention): {fork}'
    phase = ((observed or {}).get("status") or {}).get("phase")
    if phase in ("Failed", "Cancelled"):
        return f'Task "{name}" is {phase}: a follow-up goes on only from an answer (FinalAnswer); {fork}'
    return None


def contents(data: bytes) -> list[str]:
    """The follow-ups' texts in a Task file, oldest first (none when it cannot be read)."""
    try:
        document = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return []
    spec = document.get("spec") if isinstance(document, dict) else None
    follow_ups = spec.get("followUps") if isinstance(spec, dict) else None
    if not isinstance(follow_ups, list):
        return []
    return [str(f.get("content", "")) for f in follow_ups if isinstance(f, dict)]


def appended(path: str, data: bytes, name: str, content: str) -> bytes:
    """The Task file `path` (holding Task `name` alone) with `{content}` appended to spec.followUps."""
    if not content.strip():
        raise UserError("a follow-up needs content (the message to send)")
    try:
        documents = [doc for doc in yaml.load_all(data, Loader=yaml.CSafeLoader) if doc is not None]
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {exc}".splitlines()[0]) from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise UserError(
            f'Task "{name}" is declared in {path} with other documents: add '
            "`followUps: [{content: ...}]` to it with a commit of your own"
        )
    document = documents[0]
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise UserError(f"{path}: Task {name} has no spec")
    follow_ups = spec.get("followUps") or []
    if not isinstance(follow_ups, list):
        raise UserError(f"{path}: spec.followUps is not a list")
    spec["followUps"] = [*follow_ups, {"content": content}]
    return yamlio.dump(document)
