"""What the read-only commands show: the repository opened for reading, and kubectl-style tables.

The objects themselves (merged from `main` and the status branches, reading only what is shown)
come from `store/readers.py`, which the HTTP API reads through too; their names are re-exported
here for the commands. The columns are ACP's printer columns.

`get KIND NAME`, `describe` and `history` start a process for one object, so what this module
imports is in every figure (DESIGN §9): `lookup` reads through a `ReadOnlyRepo` (no GitPython) and
works on plain dicts; the pydantic models are imported only by the functions that parse one.
The names of `store/readers.py` (and PyYAML with them) are imported when first used;
`open_repo` and `open_reader` are `cli/repos.py`'s, which `history` imports instead of this module.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Sequence

from gitops_acp.cli.repos import open_reader, open_repo
from gitops_acp.resources.meta import ANNOTATION_FIRST_CHECKPOINT, Kind, parse_rfc3339

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:  # imported where used: pydantic and GitPython only when a command needs them
    from typing import Any

    from gitops_acp.resources.models import AnyResource
    from gitops_acp.store.readers import STATUS_ONLY, Found, Listing, Snapshot, listing, lookup, snapshot

__all__ = [
    "STATUS_ONLY",
    "Found",
    "Listing",
    "Snapshot",
    "listing",
    "lookup",
    "open_reader",
    "open_repo",
    "render_table",
    "snapshot",
    "table_rows",
]

_FROM_READERS = frozenset({"STATUS_ONLY", "Found", "Listing", "Snapshot", "listing", "lookup", "snapshot"})


def __getattr__(name: str) -> object:
    if name not in _FROM_READERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("gitops_acp.store.readers"), name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


def parse(document: dict[str, Any]) -> AnyResource | None:
    """The typed object of a document, or None when it cannot be read."""
    from gitops_acp.resources.models import from_document

    try:
        return from_document(document)
    except Exception:
        return None


def _one_line(text: object, width: int | None) -> str:
    value = "" if text is None else str(text)
    value = " ".join(value.split())
    if width is not None and len(value) > width:
        return value[: width - 3] + "..."
    return value


def _s(doc: dict[str, Any], *path: str) -> Any:
    node: Any = doc
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _bool(value: object) -> str:
    return "" if value is None else str(bool(value)).lower()


if TYPE_CHECKING:  # an alias for type checkers: `Any` is theirs
    Column = tuple[str, Callable[[dict[str, Any]], object], bool]  # header, getter, wide-only

COLUMNS: dict[Kind, list[Column]] = {
    Kind.LLM: [
        ("PROVIDER", lambda d: _s(d, "spec", "provider"), False),
        ("READY", lambda d: _bool(_s(d, "status", "ready")), False),
        ("STATUS", lambda d: _s(d, "status", "status"), False),
        ("DETAIL", lambda d: _s(d, "status", "statusDetail"), True),
    ],
    Kind.Agent: [
        ("READY", lambda d: _bool(_s(d, "status", "ready")), False),
        ("STATUS", lambda d: _s(d, "status", "status"), False),
        ("DETAIL", lambda d: _s(d, "status", "statusDetail"), True),
    ],
    Kind.MCPServer: [
        ("CONNECTED", lambda d: _bool(_s(d, "status", "connected")), False),
        ("STATUS", lambda d: _s(d, "status", "status"), False),
        ("DETAIL", lambda d: _s(d, "status", "statusDetail"), True),
    ],
    Kind.ContactChannel: [
        ("TYPE", lambda d: _s(d, "spec", "type") or "git", False),
        ("READY", lambda d: _bool(_s(d, "status", "ready")), False),
        ("STATUS", lambda d: _s(d, "status", "status"), False),
        ("DETAIL", lambda d: _s(d, "status", "statusDetail"), True),
    ],
    Kind.Task: [
        ("AGENT", lambda d: _s(d, "spec", "agentRef", "name"), False),
        ("READY", lambda d: _bool(_s(d, "status", "ready")), False),
        ("STATUS", lambda d: _s(d, "status", "status"), False),
        ("PHASE", lambda d: _s(d, "status", "phase"), False),
        ("PREVIEW", lambda d: _s(d, "status", "userMsgPreview") or _s(d, "spec", "userMessage"), False),
        ("OUTPUT", lambda d: _s(d, "status", "output"), False),
        ("DETAIL", lambda d: _s(d, "status", "statusDetail"), True),
        ("ERROR", lambda d: _s(d, "status", "error"), True),
        ("TURNS", lambda d: _s(d, "status", "turns"), True),
        ("TOKENS", lambda d: _tokens(d), True),
        ("STARTED", lambda d: _s(d, "status", "startTime"), True),
        ("COMPLETED", lambda d: _s(d, "status", "completionTime"), True),
    ],
    Kind.ToolCall: [
        ("PHASE", lambda d: _s(d, "status", "phase"), False),
        ("TASK", lambda d: _s(d, "spec", "taskRef", "name"), False),
        ("TOOL", lambda d: _s(d, "spec", "toolRef", "name"), False),
        ("STARTED", lambda d: _s(d, "status", "startTime"), True),
        ("COMPLETED", lambda d: _s(d, "status", "completionTime"), True),
        ("ERROR", lambda d: _s(d, "status", "error"), True),
    ],
    Kind.TaskSchedule: [  # a CronJob's columns
        ("SCHEDULE", lambda d: _s(d, "spec", "schedule"), False),
        ("TIMEZONE", lambda d: _s(d, "spec", "timeZone") or "<none>", False),
        ("SUSPEND", lambda d: _bool(bool(_s(d, "spec", "suspend"))), False),
        ("ACTIVE", lambda d: str(len(_s(d, "status", "active") or [])), False),
        ("LAST SCHEDULE", lambda d: _ago(_s(d, "status", "lastScheduleTime")) or "<none>", False),
        ("AGE", lambda d: _ago(_s(d, "metadata", "annotations", ANNOTATION_FIRST_CHECKPOINT)), False),
        ("POLICY", lambda d: _s(d, "spec", "concurrencyPolicy") or "Allow", True),
        ("NEXT SCHEDULE", lambda d: _s(d, "status", "nextScheduleTime"), True),
        ("LAST SUCCESSFUL", lambda d: _s(d, "status", "lastSuccessfulTime"), True),
        ("DETAIL", lambda d: _s(d, "status", "statusDetail"), True),
    ],
    Kind.Source: [
        ("BRANCH", lambda d: _s(d, "spec", "branch"), False),
        ("STATUS", lambda d: _s(d, "status", "status"), False),
        ("VERIFIED", lambda d: _bool(_s(d, "status", "verified")), False),
        ("APPLIED", lambda d: _short(_s(d, "status", "appliedCommit")), False),
        ("HEAD", lambda d: _short(_s(d, "status", "headCommit")), False),
        ("DETAIL", lambda d: _s(d, "status", "statusDetail"), False),
        ("BLOCKED", lambda d: _s(d, "status", "blockedCommit"), True),
        ("SIGNERS", lambda d: ", ".join(_s(d, "status", "signedBy") or []), True),
    ],
}


def _ago(timestamp: Any, now: float | None = None) -> str:
    """How long ago an RFC 3339 time was, as kubectl says it (`45s`, `3m12s`, `5h`, `12d`); "" if unset."""
    if not timestamp:
        return ""
    try:
        seconds = int((time.time() if now is None else now) - parse_rfc3339(str(timestamp)))
    except ValueError:
        return ""
    seconds = max(seconds, 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 730 else f"{days // 365}y"


def _short(sha: Any) -> str:
    return str(sha)[:12] if sha else ""


def _tokens(doc: dict[str, Any]) -> str:
    usage = _s(doc, "status", "usage")
    if not isinstance(usage, dict):
        return ""
    return str(int(usage.get("promptTokens") or 0) + int(usage.get("completionTokens") or 0))


def table_rows(kind: Kind, documents: Iterable[dict[str, Any]], *, wide: bool) -> list[list[str]]:
    """The header and one row per document, with ACP's columns (more with `wide`)."""
    columns = [c for c in COLUMNS[kind] if wide or not c[2]]
    width = None if wide else 60
    rows = [["NAME", *(header for header, _, _ in columns)]]
    for doc in documents:
        name = _s(doc, "metadata", "name")
        rows.append([str(name), *(_one_line(get(doc), width) for _, get, _ in columns)])
    return rows


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded kubectl-style (three spaces between columns)."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines)
