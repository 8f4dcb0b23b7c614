"""Retention: finished tasks leave the status branch's tip, as Kubernetes Jobs do (DESIGN §9).

    Task "t" FinalAnswer at 10:00 ── retained ── 10:00 + ttl ──► archive: 3 resources
        status/tasks/…/t.yaml              ──moved──►  archive/tasks/…/t.yaml
        status/toolcalls/…/t-…-tc-01.yaml  ──moved──►  archive/toolcalls/…
        status/tasks/…/t-…-child.yaml      ──moved──►  archive/tasks/…   (a delegated sub-task)

A task is archived `spec.ttlSecondsAfterFinished` (else `serve --retain-finished`, default 168h)
after its `completionTime`, together with everything it made: its tool calls and delegated child
tasks, recursively. Nothing of a group moves while any part of it is unfinished, waits for a
checkpoint, or is being reconciled, or while the task's answer is still being delivered
(`responseUrl`). One `archive:` commit moves the files as they are, so the archived copy is the
last checkpoint and every earlier one stays in history.

A Task whose file stays on `main` is not run again once archived: its name is checked against
`archive/` when it first appears, at start-up included, and the reactor leaves it out of the
desired state as it leaves out other shards' tasks (reactor/ownership.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from gitops_acp.controllers.cold import Cold, Facts, facts_of, finished_at
from gitops_acp.errors import UserError
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import ARCHIVE_ROOT, STATUS_ROOT, Kind, parse_duration, status_path
from gitops_acp.resources.models import AnyResource, Task
from gitops_acp.store.status import BATCH_MAX_PATHS, changed_paths

__all__ = ["Group", "Retention", "due_groups", "parse_retain"]

log = logging.getLogger(__name__)

NEVER = "never"
#: Resources moved by one `archive:` commit at most; and at most BATCH_MAX_PATHS paths changed
#: (each file leaves `status/` for `archive/`: ~80 resources a commit), so that git keeps the
#: commit's changed-path filter and a task's `history` need not diff it (store/status.py).
MAX_ARCHIVE_BATCH = 2000


def _moved_paths(keys: Sequence[Key]) -> list[str]:
    """The files an archive commit of `keys` changes: each one's in `status/` and in `archive/`."""
    return [status_path(kind, name, root=root) for kind, name in keys for root in (STATUS_ROOT, ARCHIVE_ROOT)]


def parse_retain(text: str) -> float | None:
    """`serve --retain-finished`: seconds, or None for `never`; a one-line error otherwise."""
    if text.strip().lower() == NEVER:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise UserError(
            f"--retain-finished {text!r}: expected a duration such as 168h, 30m, 90s or 0 (archive at "
            f"once), or {NEVER!r}"
        ) from None


@dataclass(frozen=True)
class Group:
    """A finished task and everything it made, archived together."""

    root: str  # the task's name
    keys: tuple[Key, ...]  # the task first, then its tool calls and child tasks


def due_groups(
    observed: Iterable[tuple[Key, AnyResource | Cold]],
    *,
    now: float,
    retain: float | None,
    busy: Callable[[Key], bool] = lambda key: False,
    held: list[str] | None = None,
    facts_cache: dict[Key, tuple[AnyResource, Facts | None]] | None = None,
) -> tuple[list[Group], float | None]:
    """The groups to archive now, and when the next one falls due (None: none is waiting).

    `observed`: the tip's resources, parsed or cold (only their `Facts` are read).
    `retain`: seconds a finished task stays (None: never, unless its own TTL says otherwise).
    `busy(key)`: being reconciled or checkpointed right now; its whole group waits.
    `held`: given, it gets the root of each group that is due but waits (busy or unfinished).
    `facts_cache`: the facts of parsed resources from the last pass, by key and object; updated to
    this pass's (a finished resource keeps its object until it changes or goes cold: its facts are
    read once, not at every pass over the tip).
    """
    roots: list[tuple[str, Facts]] = []
    toolcalls: dict[str, list[tuple[str, Facts]]] = defaultdict(list)  # task name -> its tool calls
    children: dict[str, list[tuple[str, Facts]]] = defaultdict(list)  # tool call -> delegated tasks
    cache = facts_cache if facts_cache is not None else {}
    fresh: dict[Key, tuple[AnyResource, Facts | None]] = {}
    for key, obj in observed:
        kind, name = key
        if isinstance(obj, Cold):
            facts: Facts | None = obj.facts
        else:
            cached = cache.get(key)
            facts = cached[1] if cached is not None and cached[0] is obj else facts_of(obj)
            fresh[key] = (obj, facts)
        if facts is None:
            continue
        if kind == Kind.ToolCall:
            toolcalls[facts.owner or ""].append((name, facts))
        elif facts.owner:
            children[facts.owner].append((name, facts))
        else:
            roots.append((name, facts))
    if facts_cache is not None:
        facts_cache.clear()
        facts_cache.update(fresh)
    calls = {name for found in toolcalls.values() for name, _ in found}
    for parent in set(children) - calls:  # a child whose call is gone (removed by hand): its own root
        roots.extend(children.pop(parent))
    groups: list[Group] = []
    next_due: float | None = None
    for name, facts in roots:
        keep = facts.ttl if facts.ttl is not None else retain
        finished = facts.finished_at
        if keep is None or finished is None:
            continue
        if finished + keep > now:
            next_due = finished + keep if next_due is None else min(next_due, finished + keep)
            continue
        keys = _closure(name, toolcalls, children)
        if keys is not None and not any(busy(key) for key in keys):
            groups.append(Group(name, tuple(keys)))
        elif held is not None:
            held.append(name)
    return groups, next_due


def _closure(
    root: str,
    toolcalls: dict[str, list[tuple[str, Facts]]],
    children: dict[str, list[tuple[str, Facts]]],
) -> list[Key] | None:
    """The task, its tool calls and its child tasks (recursively); None if any is unfinished."""
    keys: list[Key] = []
    stack: list[tuple[str, Facts | None]] = [(root, None)]
    while stack:
        task, facts = stack.pop()
        if facts is not None and not facts.terminal:
            return None
        keys.append((Kind.Task, task))
        for call, call_facts in toolcalls.get(task, ()):
            if not call_facts.terminal:
                return None
            keys.append((Kind.ToolCall, call))
            stack.extend(children.get(call, ()))
    return keys


class Retention:
    """Archives finished tasks on time; knows which Tasks on `main` were archived (see module)."""

    def __init__(
        self,
        *,
        retain: float | None,
        observed: Callable[[], list[tuple[Key, AnyResource | Cold]]],
        archive: Callable[[list[Key]], Awaitable[str | None]],
        busy: Callable[[Key], bool],
        clock: Callable[[], float],
        on_archived: Callable[[list[str]], None],
    ) -> None:
        """`archive(keys)` is awaited to commit one `archive:` commit (State.archive)."""
        self.retain = retain
        self._observed = observed
        self._archive = archive
        self._busy = busy
        self._clock = clock
        self._on_archived = on_archived
        self._wake = asyncio.Event()
        self.archived_total = 0
        # When the last pass found the next group due, if it found no due group held back (None:
        # unknown). Nothing finishing later can fall due sooner unless its own TTL is shorter.
        self._next_due: float | None = None
        self._facts: dict[Key, tuple[AnyResource, Facts | None]] = {}  # due_groups' facts_cache
        # Nothing can fall due until a task finishes (or its TTL changes): `never`, no TTL in the
        # tip, nothing held back. No pass then, not even the minute's: at 100,000 tasks a pass over
        # the tip is ~0.5 s of the loop's thread.
        self._idle = False

    def finished(self, task: AnyResource) -> None:
        """A task just finished (or a finished one's TTL changed): look again soon, if it can fall
        due (a retention, or its own TTL).

        With `--retain-finished never` and no TTL, nothing can: no pass over the whole tip. Nor is
        there one when it falls due after the group the run already waits for: that pass sees it
        (a pass per second over every resource of the tip was 2-4% of the reconciler's CPU while
        tasks finished by the hundred, issue 12 item 6)."""
        ttl = task.spec.ttl_seconds_after_finished if isinstance(task, Task) else None
        keep = float(ttl) if ttl is not None else self.retain
        if keep is None:
            return
        finished = finished_at(task) if isinstance(task, Task) else None
        if finished is not None and self._next_due is not None and finished + keep >= self._next_due:
            return
        self._wake.set()

    async def pass_once(self) -> float | None:
        """Archive what is due now; return when the next group falls due (None: nothing waits)."""
        self._next_due = None  # unknown until this pass is through
        held: list[str] = []
        groups, next_due = due_groups(
            self._observed(),
            now=self._clock(),
            retain=self.retain,
            busy=self._busy,
            held=held,
            facts_cache=self._facts,
        )
        batch: list[Group] = []
        size = 0
        paths: set[str] = set()  # what the archive commit changes, as git counts it
        for group in [*groups, None]:
            adds = changed_paths(_moved_paths(group.keys), paths) if group is not None else set()
            if group is not None and (
                not batch
                or (size + len(group.keys) <= MAX_ARCHIVE_BATCH and len(paths) + len(adds) <= BATCH_MAX_PATHS)
            ):
                batch.append(group)
                size += len(group.keys)
                paths |= adds
                continue
            if batch:
                keys = [key for member in batch for key in member.keys]
                await self._archive(keys)
                self.archived_total += len(keys)
                self._on_archived([member.root for member in batch])
                log.info("archived %d finished task(s), %d resources", len(batch), len(keys))
            if group is not None:
                batch, size, paths = [group], len(group.keys), changed_paths(_moved_paths(group.keys))
        self._next_due = next_due if not held else None  # held back: look again at the next finish
        self._idle = self.retain is None and next_due is None and not held
        return next_due

    async def run(self, stop: asyncio.Event) -> None:
        """Archive on time until `stop` is set. Checks at least once a minute, at most once a second;
        with nothing that can fall due (`never`, no TTL), only when a task finishes."""
        while not stop.is_set():
            try:
                next_due = await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed commit is retried at the next pass
                log.warning("archiving failed, retried in a minute: %s", exc)
                next_due = self._clock() + 60.0
            delay = 60.0 if next_due is None else min(60.0, max(0.0, next_due - self._clock()))
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(
                    waiters,
                    timeout=None if self._idle else max(delay, 1.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if self._wake.is_set() and not stop.is_set():
                await asyncio.sleep(1.0)  # a burst of finishing tasks is one pass, not one each
