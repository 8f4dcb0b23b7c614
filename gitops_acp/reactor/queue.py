"""The work queue: one key per resource, serial per key, parallel across keys, delayed requeue.

This is the heart of the reactor, after kopf's ``queueing.py`` and controller-runtime's workqueue:

- a key is never reconciled by two workers at once (a resource's checkpoints stay ordered);
- different keys run concurrently, up to ``concurrency`` at a time (an LLM call of one task never
  blocks another task: ACP ran one worker per controller);
- a key added while it is being reconciled is reconciled once more afterwards (the event is never
  lost, and bursts of events collapse into one extra pass);
- ``add_after`` schedules a key for later (backoff, timeouts); a sooner request wins.

The handler returns a ``Requeue`` (or None): a delay after which the key runs again, and whether that
wait is progress (a backoff timer the task will pass by itself) or only a watchdog (re-validation of
something in Error). ``serve --once`` exits when nothing is queued or running and no progress timer
is pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from gitops_acp.telemetry import metrics

__all__ = ["Requeue", "WorkQueue"]

log = logging.getLogger(__name__)

#: After a handler raises, the key is retried after min(cap, base * 2**failures) seconds.
ERROR_BACKOFF_BASE = 0.5
ERROR_BACKOFF_CAP = 300.0


@dataclass(frozen=True)
class Requeue:
    """Run the key again after ``after`` seconds; ``progress`` says whether the wait counts as work."""

    after: float
    progress: bool = True


Handler = Callable[[Hashable], Awaitable[Requeue | None]]


class WorkQueue:
    """Serial per key, parallel across keys, with delayed requeue and idleness tracking."""

    def __init__(self, handler: Handler, *, concurrency: int = 512) -> None:
        self._handler = handler
        self._concurrency = concurrency
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle, bool]] = {}
        self._failures: dict[Hashable, int] = {}
        self._inflight: dict[Hashable, asyncio.Future[Requeue | None]] = {}
        self._interrupted: set[Hashable] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        metrics.watch_queue(self)

    # -- feeding -------------------------------------------------------------------------------

    def add(self, key: Hashable) -> None:
        """Reconcile `key` as soon as a worker is free (once more if it is running now)."""
        if self._stopping:
            return
        if key in self._running:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._idle.clear()
        self._ready.put_nowait(key)

    def add_after(self, key: Hashable, delay: float, *, progress: bool = True) -> None:
        """Reconcile `key` after `delay` seconds, unless it is already due sooner."""
        if self._stopping:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= due:
                if progress and not current[2]:
                    self._timers[key] = (current[0], current[1], True)
                return
            current[1].cancel()
        handle = loop.call_later(delay, self._fire, key)
        self._timers[key] = (due, handle, progress)
        self._idle.clear()

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)
        self._check_idle()

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers on the running loop."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self._concurrency)
            ]

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._running.add(key)
            inflight = asyncio.ensure_future(self._handler(key))
            self._inflight[key] = inflight
            try:
                requeue = await inflight
            except asyncio.CancelledError:
                if key not in self._interrupted or self._stopping:
                    self._running.discard(key)
                    self._inflight.pop(key, None)
                    raise
                self._interrupted.discard(key)
                self._dirty.add(key)  # interrupted on purpose: reconcile again at once
                requeue = None
            except Exception:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(ERROR_BACKOFF_CAP, ERROR_BACKOFF_BASE * 2 ** (failures - 1))
                log.exception("reconcile of %s failed (attempt %d); retrying in %.1fs", key, failures, delay)
                requeue = Requeue(delay, progress=True)
            else:
                self._failures.pop(key, None)
            self._inflight.pop(key, None)
            self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif requeue is not None:
                self.add_after(key, requeue.after, progress=requeue.progress)
            self._check_idle()

    def interrupt(self, key: Hashable) -> None:
        """Cancel the reconcile of `key` in flight (e.g. an LLM call of a task just removed) and rerun it.

        Safe because controllers only make progress through committed checkpoints, and the manager
        shields those from cancellation: what was handed to the status writer still lands.
        """
        inflight = self._inflight.get(key)
        if inflight is not None and not inflight.done():
            self._interrupted.add(key)
            inflight.cancel()

    def _check_idle(self) -> None:
        if self._queued or self._running or any(progress for _, _, progress in self._timers.values()):
            self._idle.clear()
        else:
            self._idle.set()

    def is_idle(self) -> bool:
        """True when nothing is queued or running and no progress timer is pending."""
        self._check_idle()
        return self._idle.is_set()

    async def wait_idle(self) -> None:
        """Wait until the queue is idle (see `is_idle`)."""
        while not self.is_idle():
            await self._idle.wait()

    def busy(self, key: Hashable) -> bool:
        """Whether `key` is queued, being reconciled, or waiting on a timer."""
        return key in self._queued or key in self._running or key in self._timers

    @property
    def depth(self) -> int:
        """Keys queued and waiting for a worker (`gitops_acp_queue_depth`)."""
        return len(self._queued)

    @property
    def pending_keys(self) -> int:
        """Keys queued, running or waiting on a timer."""
        return len(self._queued | self._running | set(self._timers))

    async def stop(self) -> None:
        """Stop accepting work, cancel timers and workers (in-flight handlers see CancelledError)."""
        self._stopping = True
        for _, handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
