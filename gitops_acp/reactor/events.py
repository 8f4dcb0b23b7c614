"""The live event stream of a running reconciler: `EventHub`, what `GET /v1/events` follows.

    status writer ── on_commit(sha) ──► EventHub: the branch's newest commit noted, worker woken
                                          │ (only while someone listens) the commits of
                                          │ cursor..newest diffed through one persistent
                                          │ `git cat-file`, on its own thread (store/events.py)
                                          ▼
                                   each subscriber's bounded queue: one item per commit, in order

Why events are read back from the commits rather than built from memory: a live event is then the
very event a replay from history gives (the same rules derive both), archive commits are
covered like checkpoints, times are the commits' own, and a stream resuming after a commit
(`Last-Event-ID`) joins history and live at one exact commit, the hub's cursor, with no gap and
no duplicate. The cost, while someone listens, is a few object reads per commit through one
long-lived `git cat-file` (the trees on the changed paths only; a `git log` only when far behind);
none when nobody does. The writer only notes a sha, it never waits for the hub.

A slow subscriber never slows the reconciler nor the other subscribers: its queue is bounded
(`max_pending` commits); when full, the subscription is dropped and marked `lagged`, and the
reader resumes from history after the last commit it handled (`api/events.py` does so), then
subscribes again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gitops_acp.store import events as store_events
from gitops_acp.store.events import Event
from gitops_acp.store.git import ReadOnlyRepo
from gitops_acp.store.statustree import branch_ref

__all__ = ["Batch", "EventHub", "Lagged", "Subscription"]

log = logging.getLogger(__name__)

#: One commit's events: (commit sha, its events in the commit's order).
Batch = tuple[str, list[Event]]


class Lagged(Exception):
    """The subscriber fell `max_pending` commits behind and was dropped: resume from history."""


class Subscription:
    """One listener's bounded queue of commits, in branch order, after `start`."""

    def __init__(self, hub: EventHub, start: str | None, limit: int) -> None:
        """Follow `hub` from commit `start` (exclusive; None: from the branch's first commit)."""
        self.start = start  # the hub's cursor when subscribing: history up to here, live after it
        self.lagged = False
        self.closed = False
        self._hub = hub
        self._limit = limit
        self._items: deque[Batch] = deque()
        self._ready = asyncio.Event()

    def _offer(self, batch: Batch) -> bool:
        """Queue a commit's events; False (and lagged) when the queue is full."""
        if len(self._items) >= self._limit:
            self.lagged = True
            self._ready.set()
            return False
        self._items.append(batch)
        self._ready.set()
        return True

    def _close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout: float | None = None) -> Batch | None:
        """The next commit's events; None once the hub closed (serve stops).

        Raises TimeoutError after `timeout` seconds without one (a keep-alive is due), and
        `Lagged` once every queued commit was taken and the hub had to drop this subscriber.
        """
        while True:
            if self._items:
                return self._items.popleft()
            if self.lagged:
                raise Lagged(f"more than {self._limit} commits behind")
            if self.closed:
                return None
            self._ready.clear()
            async with asyncio.timeout(timeout):  # not wait_for: it may lose a cancellation (waiting.py)
                await self._ready.wait()

    def close(self) -> None:
        """Stop following (the reader went away)."""
        self._hub._unsubscribe(self)


class EventHub:
    """Publishes each commit of the status branch's events to subscribers (see the module docstring)."""

    def __init__(self, repo: Path, branch: str, *, max_pending: int = 1000, keepalive: float = 15.0) -> None:
        """Follow `branch` of the repository at `repo` (with a remote: the mirror the writer writes)."""
        self.repo = Path(repo)
        self.branch = branch
        self.max_pending = max_pending
        self.keepalive = keepalive  # seconds between SSE keep-alive comments (api/events.py)
        self.published = 0  # commits whose events were handed to subscribers (tests, benchmarks)
        self._subscribers: set[Subscription] = set()
        self._cursor: str | None = None  # every commit up to here is published (or nobody listened)
        self._newest: str | None = None  # the newest commit the writer reported
        self._wake = asyncio.Event()
        self._started = asyncio.Event()
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._reader: ReadOnlyRepo | None = None
        self._worker: asyncio.Task[None] | None = None

    # -- the reconciler's side -----------------------------------------------------------------

    async def start(self) -> None:
        """Begin at the branch's tip (call once the status writer has started)."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acp-events")
        loop = asyncio.get_running_loop()
        self._reader = await loop.run_in_executor(self._executor, ReadOnlyRepo.open, self.repo)
        tip = await loop.run_in_executor(self._executor, self._reader.resolve, branch_ref(self.branch))
        if self._newest is None:
            self._newest = tip
        self._cursor = tip
        self._worker = asyncio.create_task(self._run(), name="event-hub")
        self._started.set()
        self._wake.set()

    async def committed(self, sha: str) -> None:
        """A commit landed on the branch (the writer's `on_commit` hook): note it, wake the worker."""
        self._newest = sha
        self._wake.set()

    async def close(self) -> None:
        """Publish what the writer committed last, then end every subscription (serve stops)."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        for subscription in list(self._subscribers):
            subscription._close()
        self._subscribers.clear()
        self._started.set()  # a reader still waiting for the start sees the hub closed
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            if self._reader is not None:
                await loop.run_in_executor(self._executor, self._reader.close)
            self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            target = self._newest
            if target is not None and target != self._cursor:
                if self._subscribers:
                    cursor = self._cursor
                    try:
                        found = await loop.run_in_executor(self._executor, self._read, cursor, target)
                    except Exception as exc:  # never a silent gap: every reader re-reads history
                        log.warning("events after %s not read (%s): readers resume from history", cursor, exc)
                        self._drop_all()
                    else:
                        self._publish(store_events.group(found))
                self._cursor = target
            if self._closing and self._newest == self._cursor:
                return

    def _read(self, cursor: str | None, target: str) -> list[Event]:
        assert self._reader is not None
        found = store_events.follow(self._reader, after=cursor, until=target)
        if found is None:  # far behind, or not a descendant of the cursor: one git log
            found = store_events.read(
                self._reader, branch=self.branch, after=cursor, until=target, trusted=True
            )
        return found

    def _drop_all(self) -> None:
        for subscription in list(self._subscribers):
            subscription.lagged = True
            subscription._ready.set()
        self._subscribers.clear()

    def _publish(self, batches: list[Batch]) -> None:
        for batch in batches:
            self.published += 1
            for subscription in list(self._subscribers):
                if not subscription._offer(batch):
                    self._subscribers.discard(subscription)
                    log.info("an event reader fell %d commits behind: resumes from history", self.max_pending)

    # -- the readers' side ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether serve is stopping (no more events will come)."""
        return self._closing

    async def subscribe(self) -> Subscription:
        """Follow the branch from now on; `start` of the result is the commit "now" is (waits for
        start-up recovery when called before it)."""
        await self._started.wait()
        subscription = Subscription(self, self._cursor, self.max_pending)
        if self._closing:
            subscription._close()
        else:
            self._subscribers.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    async def history(self, after: str | None, until: str | None) -> list[Event]:
        """Events of the commits after `after` up to `until` (a subscription's `start`), read on a
        thread of their own; raises store.events.UnknownCommitError if `after` is not on the branch."""

        def read() -> list[Event]:
            with ReadOnlyRepo.open(self.repo) as repo:
                if until is None:
                    if after is not None:
                        raise store_events.UnknownCommitError(
                            f"commit {after} is not on {self.branch}: the branch has no commit yet"
                        )
                    return []
                return store_events.read(repo, branch=self.branch, after=after, until=until)

        return await asyncio.to_thread(read)

    async def on_branch(self, commit: str) -> bool:
        """Whether `commit` is on the branch now (the hub may not have read that far yet)."""

        def check() -> bool:
            with ReadOnlyRepo.open(self.repo) as repo:
                tip = repo.resolve(branch_ref(self.branch))
                if tip is None:
                    return False
                try:
                    store_events.read(repo, branch=self.branch, after=commit, until=tip, n=0)
                except store_events.UnknownCommitError:
                    return False
                return True

        return await asyncio.to_thread(check)
