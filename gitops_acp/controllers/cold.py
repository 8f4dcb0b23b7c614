"""Finished tasks and tool calls kept cold: the blob of their status file (DESIGN §9).

    Task/ToolCall lands terminal ── COLD_AFTER seconds unread, or WARM_FINISHED ──► Cold(blob sha, Facts)
                                    finished landed or read since
    State.observed(kind, name) of a cold one ──► its file read and parsed again (as a restart reads
                                                 it), warm again
    ...but a tool call whose task is in flight (a child task whose tool call is) stays parsed until
    that reader lands its next checkpoint (State._reader_of): it is about to be read

A single-turn Task held as pydantic models takes ~7.5 KB and 30 objects that the cycle collector
walks at every full collection. Without archiving (`--retain-finished never`) the tip grows with
every task run, and so did the reconciler's memory (~800 MB at 100,000 tasks) and the share of each
batch spent collecting. A finished task is rarely read again (a parent reading its child's answer,
a `responseUrl` delivery), so it is kept as the sha of the status file it was committed as (in the
tip, so in the repository), and read back from git when it is (~0.2 ms: a `cat-file` round trip,
~0.1 ms, and `yamlio.load`, which reads the emitter's own files without PyYAML, ~0.07 ms). Its
JSON, kept until 2026-12, took ~1 KB a task (~100 MB at 100,000) and ~40 µs of the reconciler's
thread to make; a State without a repository (unit tests) still keeps that.

`Facts` are what retention and the reactor need without parsing: the phase, who made the resource
(a tool call's task, a child task's tool call), its TTL and when it finished.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitops_acp.resources import lifecycle
from gitops_acp.resources.kinds.toolcall import MCP_TASK_TERMINAL
from gitops_acp.resources.meta import LABEL_PARENT_TOOLCALL, LABEL_TASK, Kind, parse_rfc3339
from gitops_acp.resources.models import AnyResource, Task, ToolCall, from_document, to_document
from gitops_acp.store import yamlio

__all__ = ["COLD_AFTER", "COLD_KINDS", "WARM_FINISHED", "Cold", "Facts", "facts_of", "finished_at"]

#: Seconds a finished Task or ToolCall stays parsed after it landed (or was last read)...
COLD_AFTER = 30.0
#: ...unless this many more finished ones landed (or were read) since. A time alone held as many
#: as 30 s of throughput: ~14,000 parsed tasks (~110 MB, and the share of each batch the cycle
#: collector walks) at 700 tasks/s. What reads a finished task again does so within moments of
#: its landing (the reconcile its own checkpoint wakes, a parent reading its child's answer).
WARM_FINISHED = 2_000
COLD_KINDS = frozenset({Kind.Task, Kind.ToolCall})


@dataclass(frozen=True, slots=True)
class Facts:
    """What is read of a Task or ToolCall without parsing it (retention, the reactor)."""

    phase: str  # as lifecycle.phase_of says it
    terminal: bool
    owner: str | None  # a ToolCall's task; a delegated Task's tool call; None for a root task
    ttl: float | None  # a Task's spec.ttlSecondsAfterFinished
    finished_at: float | None  # a Task's completionTime once its answer is delivered (retention)
    # Finished with nothing left to do: a Task's answer delivered (or none to deliver); a ToolCall
    # with no branch for a person (to delete, its pull request to close) and no MCP task to cancel.
    # A start does not reconcile these (reactor/manager.py).
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Cold:
    """A finished resource as the blob of its committed status file (or, without a repository to
    read it from, as the JSON of its document)."""

    sha: bytes | None  # the blob's sha, 20 bytes (its hex string took 36 bytes more a task)
    document: bytes | None
    facts: Facts

    @property
    def blob(self) -> str | None:
        """The sha of the status file's blob, as git names it."""
        return None if self.sha is None else self.sha.hex()

    @classmethod
    def of(cls, obj: AnyResource, *, blob: str | None = None, document: dict[str, Any] | None = None) -> Cold:
        """`obj` cold: by the blob it was committed as, else as JSON of the document it was
        committed as or read from (else made from `obj`).

        A status file read at start-up may hold what JSON cannot (a YAML date in a free-form
        field, written by a person): then the document is made from the model instead.
        """
        facts = facts_of(obj)
        assert facts is not None
        if blob is not None:
            return cls(bytes.fromhex(blob), None, facts)
        try:
            text = json.dumps(document if document is not None else to_document(obj), separators=(",", ":"))
        except (TypeError, ValueError):
            text = json.dumps(to_document(obj), separators=(",", ":"))
        return cls(None, text.encode(), facts)

    def warm(self, read_blob: Callable[[str], bytes] | None) -> AnyResource:
        """The resource parsed again, as start-up parses a status file."""
        if self.document is not None:
            return from_document(json.loads(self.document))
        assert self.sha is not None
        assert read_blob is not None
        return from_document(yamlio.load(read_blob(self.sha.hex())))


def facts_of(obj: AnyResource) -> Facts | None:
    """The facts of a Task or ToolCall (None for other kinds).

    The phase is interned: a few words shared by every cold resource, not a string each (60 bytes
    a finished task, held as long as the tip holds it).
    """
    if isinstance(obj, ToolCall):
        owner = obj.metadata.labels.get(LABEL_TASK) or obj.spec.task_ref.name
        terminal = lifecycle.terminal(obj)
        return Facts(
            sys.intern(lifecycle.phase_of(obj)), terminal, owner, None, None, terminal and _quiet(obj)
        )
    if isinstance(obj, Task):
        ttl = obj.spec.ttl_seconds_after_finished
        terminal, finished = lifecycle.terminal(obj), finished_at(obj)
        return Facts(
            sys.intern(lifecycle.phase_of(obj)),
            terminal,
            obj.metadata.labels.get(LABEL_PARENT_TOOLCALL) or None,
            float(ttl) if ttl is not None else None,
            finished,
            terminal and finished is not None,
        )
    return None


def _quiet(call: ToolCall) -> bool:
    """A finished call with nothing for a restart to tidy: no branch it asked a person on
    (controllers/cleanup.py) and no MCP task still to cancel (controllers/mcptasks.py)."""
    status = call.status
    if status is None:
        return True
    if (status.approval is not None and status.approval.branch) or (
        status.human_contact is not None and status.human_contact.branch
    ):
        return False
    task = status.mcp_task
    return task is None or task.status in MCP_TASK_TERMINAL or task.cancel_requested_at is not None


def finished_at(task: Task) -> float | None:
    """When a task finished, for retention: None while unfinished or its answer is being delivered."""
    status = task.status
    if status is None or not lifecycle.terminal(task) or not status.completion_time:
        return None
    delivery = status.delivery or {}
    if delivery and delivery.get("state") not in ("Delivered", "Failed"):
        return None  # the answer is still on its way to responseUrl
    try:
        return parse_rfc3339(status.completion_time)
    except ValueError:
        return None
