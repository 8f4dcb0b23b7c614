"""The world as the controllers read it, and the only way they change it: checkpoints.

    desired  ── DesiredState of the commit of `main` being reconciled (the reactor swaps it in)
    observed ── every status file, as last committed to the status branch (kept in memory)
    checkpoint(*objects) ──► skip what changes nothing ──► refuse to move a terminal Task/ToolCall
                         ──► stamp source and spec commit ──► redact secret values (redaction.py)
                         ──► one commit (the status writer)
                         ──► once landed, and only then: observed updated, `on_landed` told

The rules of a checkpoint live here, once: the reactor builds one State over the real status
writer, and a controller test builds the same State over a commit function that records what it
is given, so the tests exercise the real rules (the no-op skip, the terminal-phase guard). A
checkpoint returns once its commit is on the status branch (DESIGN §1): a controller never
advances past a checkpoint that is not committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gitops_acp import redaction
from gitops_acp.controllers.cold import COLD_AFTER, COLD_KINDS, WARM_FINISHED, Cold, Facts, facts_of
from gitops_acp.errors import StaleError
from gitops_acp.resources import lifecycle
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.loader import Loaded
from gitops_acp.resources.meta import (
    ANNOTATION_FIRST_CHECKPOINT,
    ANNOTATION_SOURCE,
    ANNOTATION_SPEC_COMMIT,
    API_VERSION,
    LABEL_PARENT_TOOLCALL,
    LABEL_TASK,
    Kind,
    rfc3339,
)
from gitops_acp.resources.models import (
    AnyResource,
    SpanContext,
    Task,
    TaskStatus,
    ToolCall,
    from_document,
    to_document,
)
from gitops_acp.store import yamlio
from gitops_acp.store.desired import DesiredState
from gitops_acp.store.git import blob_sha
from gitops_acp.store.status import Change
from gitops_acp.telemetry import tracing

__all__ = ["ARCHIVE_TOMBSTONE", "Commit", "Landed", "State"]

log = logging.getLogger("gitops_acp")

#: Seconds an archived resource's key is remembered, to refuse a late write of it (`State.archive`).
#: Only a reconcile that began during the archive commit can write late (busy keys are not
#: archived) and it writes at once; a short window keeps memory bounded at any archiving rate.
ARCHIVE_TOMBSTONE = 30.0
#: Commits one checkpoint's changes; returns the commit's sha (None: nothing changed) once it landed.
Commit = Callable[[Sequence[Change], str], Awaitable[str | None]]
#: Told of each resource a landed checkpoint changed: (key, old, new); new None = deleted.
Landed = Callable[[Key, AnyResource | None, AnyResource | None], None]


# The time a finished one released by its reader is queued at (`State._release`).
_RELEASED = 0.0


class State:
    """Desired and observed state, and checkpoints with their rules (see the module docstring)."""

    def __init__(
        self,
        commit: Commit,
        *,
        wake: Callable[[Key], None] = lambda key: None,
        on_landed: Landed = lambda key, old, new: None,
        clock: Callable[[], float] = time.time,
        read_blob: Callable[[str], bytes] | None = None,
        on_archived: Callable[[list[tuple[str, str]]], None] = lambda files: None,
    ) -> None:
        """A state that commits through `commit`; `wake` asks the reactor for another reconcile;
        `read_blob` reads a status file back from the repository (without it, finished resources
        are kept cold as JSON: cold.py); `on_archived` is told the (blob, phase) of the Task and
        ToolCall files each archive commit moved, once it landed (reactor/coldfacts.py keeps them)."""
        self._commit_changes = commit
        self._on_archived = on_archived
        self._clock = clock
        self._read_blob = read_blob
        self._wake = wake
        self._on_landed = on_landed
        self.desired_state = DesiredState(commit=None)  # the reactor swaps in each new read of main
        # Finished tasks and tool calls unread for COLD_AFTER seconds (or behind WARM_FINISHED
        # newer ones) are kept cold (cold.py).
        self._observed: dict[Key, AnyResource | Cold] = {}
        # (when, key) of each finished landing or read: only keys, so that what archiving or a new
        # checkpoint drops is freed at once (holding the objects for 30 s held ~200 MB at 600/s).
        self._cooling: deque[tuple[float, Key]] = deque()
        # Cold ones read again, with what they were: unchanged, they go cold again as they were
        # (a schedule reads its finished tasks at each reconcile: no new Cold for each read).
        self._rewarmed: dict[Key, tuple[AnyResource, Cold]] = {}
        # Finished ones whose reader has not read them yet (its owner, in flight: `_reader_of`),
        # kept warm past WARM_FINISHED until that owner lands its next checkpoint.
        self._held: dict[Key, list[Key]] = {}
        # The blob of each finished one's last landed (or loaded) status file, until it goes cold.
        self._blobs: dict[Key, str] = {}
        self._submitted: dict[Key, AnyResource | None] = {}  # handed to the writer, not landed yet
        # Archived lately (key -> until when): a reconcile that read the resource before it was
        # archived must not write it back as new. Forgotten after ARCHIVE_TOMBSTONE seconds.
        self._archived: dict[Key, float] = {}

    # -- reading --------------------------------------------------------------------------------

    @property
    def spec_commit(self) -> str:
        """The commit of `main` being reconciled ("" before the first read)."""
        return self.desired_state.commit or ""

    def desired(self, kind: Kind, name: str) -> Loaded | None:
        """The resource as declared on `main`, or None."""
        return self.desired_state.get(kind, name)

    def observed(self, kind: Kind, name: str) -> AnyResource | None:
        """The resource as last committed to the status branch, or None."""
        return self._warm((kind, name))

    def observed_all(self, kind: Kind) -> list[AnyResource]:
        """Every resource of `kind` on the status branch (cold ones parsed: for tests and tools)."""
        return [obj for (k, name) in list(self._observed) if k == kind if (obj := self._warm((k, name)))]

    def observed_items(self) -> list[tuple[Key, AnyResource]]:
        """Every (key, resource) on the status branch, cold ones parsed (a copy: safe to iterate
        while committing). Costly with a large tip: see `observed_keys` and `observed_entries`."""
        return [(key, obj) for key in list(self._observed) if (obj := self._warm(key)) is not None]

    def holds(self, key: Key) -> bool:
        """Whether the status branch has `key` (a cold one is not read back to say so)."""
        return key in self._observed

    def observed_keys(self) -> list[Key]:
        """The key of every resource on the status branch."""
        return list(self._observed)

    def observed_entries(self) -> list[tuple[Key, AnyResource | Cold]]:
        """Every resource on the status branch, parsed or cold, as held (retention reads their facts)."""
        return list(self._observed.items())

    def load(
        self, obj: AnyResource, document: dict[str, Any] | None = None, *, blob: str | None = None
    ) -> None:
        """Take `obj` as committed already (start-up reads the status branch's tip into this); a
        finished Task or ToolCall is kept cold at once when its `document` (and its file's `blob`,
        to read it back by) is given."""
        key = (Kind(obj.kind), obj.metadata.name)
        if document is not None and key[0] in COLD_KINDS and lifecycle.terminal(obj):
            by_blob = blob if self._read_blob is not None else None
            self._observed[key] = Cold.of(obj, blob=by_blob, document=document)
        else:
            self._observed[key] = obj

    def settled(self, key: Key) -> bool:
        """Whether `key` is a Task or ToolCall that finished and has nothing left to do
        (`Facts.settled`), with no checkpoint in flight; a cold one is not read."""
        if key[0] not in COLD_KINDS or key in self._submitted:
            return False
        held = self._observed.get(key)
        facts = held.facts if isinstance(held, Cold) else facts_of(held) if held is not None else None
        return facts is not None and facts.settled

    def load_cold(self, key: Key, blob: str, facts: Facts) -> None:
        """Take a finished Task or ToolCall as committed already, by its status file's blob and its
        facts, without reading the file (start-up, from the facts of an earlier run: coldfacts.py)."""
        assert key[0] in COLD_KINDS
        assert facts.terminal
        assert self._read_blob is not None
        self._observed[key] = Cold(bytes.fromhex(blob), None, facts)

    def cold_facts(self) -> list[tuple[bytes, Facts]]:
        """(blob sha, facts) of every finished Task and ToolCall whose committed file's blob is known:
        what a restart need not read again (coldfacts.py). Only finished ones are cold, have a
        blob remembered (`_blobs`) or were read back from cold (`_rewarmed`)."""
        found = [
            (held.sha, held.facts)
            for held in self._observed.values()
            if isinstance(held, Cold) and held.sha is not None
        ]
        for key, blob in self._blobs.items():  # finished lately, not cold yet
            obj = self._observed.get(key)
            facts = facts_of(obj) if obj is not None and not isinstance(obj, Cold) else None
            if facts is not None and key not in self._submitted:
                found.append((bytes.fromhex(blob), facts))
        for key, (warm, cold) in self._rewarmed.items():  # read back lately, unchanged
            if self._observed.get(key) is warm and cold.sha is not None:
                found.append((cold.sha, cold.facts))
        return found

    def _warm(self, key: Key) -> AnyResource | None:
        """The parsed resource of `key`; a cold one is parsed and kept warm for a while again."""
        obj = self._observed.get(key)
        if not isinstance(obj, Cold):
            return obj
        warm = obj.warm(self._read_blob)
        self._observed[key] = warm
        self._rewarmed[key] = (warm, obj)
        now = self._clock()
        self._cooling.append((now, key))
        self._cool(now)
        return warm

    def _cool(self, now: float) -> None:
        """Keep cold what finished (or was last read) COLD_AFTER seconds ago, or before the last
        WARM_FINISHED landings and reads of finished ones, if still finished.

        Cold or warm reads the same (`Cold.warm` parses what `to_document` wrote), so a resource
        read again meanwhile may go cold a little early: it only costs a parse if read once more."""
        cooling, observed = self._cooling, self._observed
        while cooling and (cooling[0][0] <= now - COLD_AFTER or len(cooling) > WARM_FINISHED):
            when, key = cooling.popleft()
            obj = observed.get(key)
            rewarmed = self._rewarmed.pop(key, None)
            if obj is None or isinstance(obj, Cold) or key in self._submitted:
                continue
            if rewarmed is not None and rewarmed[0] is obj:
                observed[key] = rewarmed[1]
            elif lifecycle.terminal(obj):
                if when != _RELEASED and (reader := self._reader_of(obj)) is not None:
                    self._held.setdefault(reader, []).append(key)
                else:
                    observed[key] = Cold.of(obj, blob=self._blobs.pop(key, None))

    def _reader_of(self, obj: AnyResource) -> Key | None:
        """The resource in flight that will read finished `obj` next: a tool call's task, a child
        task's tool call (parsed, not finished), or None.

        A burst of tasks all in flight at once finishes WARM_FINISHED tool calls between one
        call's end and its task collecting the result: with 3,000 tool tasks committed together
        (`bench_tasks.py --tools --n 3000`) nearly every result was read back from git and
        parsed again (12% of the reconciler's time in PyYAML). Held until that reader's next
        checkpoint lands (`_release`): what a task or call in flight is about to read stays
        warm, however many others finish meanwhile.
        """
        if isinstance(obj, ToolCall):
            reader: Key = (Kind.Task, obj.metadata.labels.get(LABEL_TASK) or obj.spec.task_ref.name)
        elif isinstance(obj, Task) and (parent := obj.metadata.labels.get(LABEL_PARENT_TOOLCALL)):
            reader = (Kind.ToolCall, parent)
        else:
            return None
        held = self._observed.get(reader)
        in_flight = held is not None and not isinstance(held, Cold) and not lifecycle.terminal(held)
        return reader if in_flight else None

    def _release(self, reader: Key) -> None:
        """`reader` landed a checkpoint (or left): what was held for it, due already, cools at the
        next sweep (at the front of the queue, as due as can be, and not held again)."""
        held = self._held.pop(reader, None)
        if held:
            self._cooling.extendleft((_RELEASED, key) for key in held)

    def wake(self, kind: Kind, name: str) -> None:
        """Ask for a reconcile of another resource."""
        self._wake((kind, name))

    # -- writing --------------------------------------------------------------------------------

    async def checkpoint(self, *objects: AnyResource) -> None:
        """Commit the objects' new state in one commit; return once it is on the status branch.

        Objects that change nothing are left out (no commit at all if none changes). Raises
        StaleError, before anything is written, when one would move a Task or ToolCall out of a
        terminal phase another reconcile committed meanwhile (but a follow-up reopens a Task that
        answered: `lifecycle.reopens`).
        """
        changes: list[Change] = []
        committed: list[tuple[Key, AnyResource | None, AnyResource | None]] = []
        for obj in objects:
            key = (Kind(obj.kind), obj.metadata.name)
            # The latest state includes checkpoints handed to the writer but not landed yet.
            old = self._submitted[key] if key in self._submitted else self._warm(key)
            if old is None and key in self._archived:
                raise StaleError(f"{key[0]}/{key[1]} was archived: not writing it again")
            if old is not None and _same_state(old, obj):
                continue
            was, new = lifecycle.phase_of(old), lifecycle.phase_of(obj)
            if lifecycle.terminal(old) and new != was and not lifecycle.reopens(old, obj):
                raise StaleError(f"{key[0]}/{key[1]} is already {was}: not moving it to {new}")
            stamped = self._stamp(key, obj, old)
            document = to_document(stamped)
            data = yamlio.dump(document)
            if redaction.may_hold(data) and (clean := redaction.document(document)) is not document:
                # A secret was echoed (a tool, a model, an error): never written, nor kept here.
                log.warning("%s/%s: a secret value was redacted from its status", key[0], key[1])
                document, stamped, data = clean, from_document(clean), yamlio.dump(clean)
            changes.append(
                Change(
                    kind=key[0],
                    name=key[1],
                    document=document,
                    old_phase=was,
                    new_phase=lifecycle.phase_of(stamped),
                    data=data,
                    blob=blob_sha(data),
                )
            )
            committed.append((key, stamped, old))
        if changes:
            await self._commit(changes, committed)

    async def remove(self, kind: Kind, name: str, *, reason: str) -> None:
        """Delete the resource's status file (the resource left `main`)."""
        old = self._warm((kind, name))
        change = Change(
            kind=kind, name=name, document=None, old_phase=lifecycle.phase_of(old), new_phase="Deleted"
        )
        log.info("%s/%s: %s", kind, name, reason)
        await self._commit([change], [((kind, name), None, old)])

    def busy(self, key: Key) -> bool:
        """Whether a checkpoint of `key` is with the writer and has not landed yet."""
        return key in self._submitted

    async def archive(self, keys: Sequence[Key]) -> str | None:
        """Move the resources' status files to `archive/` in one `archive:` commit (DESIGN §9).

        Once landed they are forgotten here: not observed, not reconciled, and a checkpoint of
        one of them written by a reconcile that began earlier is refused (StaleError). Returns the
        commit's sha, or None if there was nothing to archive. Controllers are not told (`on_landed`):
        an archived resource did not change.
        """
        changes: list[Change] = []
        blobs: list[tuple[str, str]] = []
        for key in keys:
            old = self._observed.get(key)
            if old is None or key in self._submitted:
                continue
            phase = old.facts.phase if isinstance(old, Cold) else lifecycle.phase_of(old)
            changes.append(Change(key[0], key[1], None, phase, "Archived", archive=True))
            blob = old.blob if isinstance(old, Cold) else self._blobs.get(key)
            if blob is not None and phase != "-":  # `status.phase` (a Task's or a ToolCall's)
                blobs.append((blob, phase))
        if not changes:
            return None
        sha = await asyncio.shield(self._commit_changes(changes, ""))
        if blobs:
            self._on_archived(blobs)
        now = self._clock()
        for key, until in list(self._archived.items()):
            if until < now:
                del self._archived[key]
        for change in changes:
            self._observed.pop(change.key, None)
            self._blobs.pop(change.key, None)
            self._archived[change.key] = now + ARCHIVE_TOMBSTONE
        return sha

    async def _commit(
        self, changes: list[Change], committed: list[tuple[Key, AnyResource | None, AnyResource | None]]
    ) -> None:
        """Hand the changes to the writer; apply them in memory once (and only once) they landed.

        Shielded: a reconcile interrupted while waiting (shutdown, a task removed mid-call) does not
        lose a checkpoint the writer is committing, and memory never disagrees with the branch.
        """
        landing = asyncio.ensure_future(self._commit_changes(changes, self.spec_commit))
        for key, obj, _ in committed:
            self._submitted[key] = obj

        def landed(future: asyncio.Future[str | None]) -> None:
            for key, obj, _ in committed:
                if key in self._submitted and self._submitted[key] is obj:
                    del self._submitted[key]
            if future.cancelled() or future.exception() is not None:
                return
            now = self._clock()
            blobs = self._blobs
            for (key, obj, old), change in zip(committed, changes, strict=True):
                if self._held:
                    self._release(key)
                if obj is None:
                    self._observed.pop(key, None)
                    blobs.pop(key, None)
                else:
                    self._observed[key] = obj
                    if key[0] in COLD_KINDS and lifecycle.terminal(obj):
                        self._cooling.append((now, key))
                        if change.blob is not None and self._read_blob is not None:
                            blobs[key] = change.blob
                    else:
                        blobs.pop(key, None)
                self._on_landed(key, old, obj)
            self._cool(now)

        landing.add_done_callback(landed)
        await asyncio.shield(landing)

    def _stamp(self, key: Key, obj: AnyResource, old: AnyResource | None) -> AnyResource:
        """Record where the declaration came from (the file on main, the commit reconciled) and
        when the resource's history began (its first checkpoint: readers walk no further back)."""
        given = obj.metadata.annotations
        first = old.metadata.annotations.get(ANNOTATION_FIRST_CHECKPOINT) if old is not None else None
        if first is None and old is None:
            first = rfc3339(self._clock())
        stamps: dict[str, str] = {}
        if first is not None:
            stamps[ANNOTATION_FIRST_CHECKPOINT] = first
        loaded = self.desired_state.get(*key)
        if loaded is not None:
            stamps[ANNOTATION_SOURCE] = loaded.path
        if self.spec_commit:
            stamps[ANNOTATION_SPEC_COMMIT] = self.spec_commit
        # Status files carry this project's apiVersion whatever the manifest used (ACP's are accepted).
        if obj.api_version == API_VERSION and all(given.get(k) == v for k, v in stamps.items()):
            stamped = obj  # a step's copy of a stamped checkpoint: stamped already (no copies)
        else:
            metadata = obj.metadata.model_copy(update={"annotations": {**given, **stamps}})
            stamped = obj.model_copy(update={"metadata": metadata, "api_version": API_VERSION})
        return _with_span_context(stamped, old) if isinstance(stamped, Task) else stamped


def _with_span_context(task: Task, old: AnyResource | None) -> Task:
    """Keep a task's trace ids (a step may build on a status read before they were stamped); with
    traces on, give a task its own with its first checkpoint (telemetry/tracing.py)."""
    status = task.status
    if status is not None and status.span_context is not None:
        return task
    kept = old.status.span_context if isinstance(old, Task) and old.status is not None else None
    if kept is None:
        ids = tracing.new_span_context(task.metadata.annotations)
        if ids is None:
            return task
        kept = SpanContext(trace_id=ids[0], span_id=ids[1])
    return task.model_copy(
        update={"status": (status or TaskStatus()).model_copy(update={"span_context": kept})}
    )


def _same_state(old: AnyResource, new: AnyResource) -> bool:
    """A checkpoint that changes nothing is not committed (annotations alone are not a change)."""
    return old.spec == new.spec and old.status == new.status and old.metadata.labels == new.metadata.labels
