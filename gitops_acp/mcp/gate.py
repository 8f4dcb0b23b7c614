"""How many tool calls one MCP server takes at once, and the reconciler's own line of calls waiting.

A call is marked `Running` (committed) before its request is sent: that is what makes a
non-idempotent tool run at most once. But a request sent to a server that is busy does not run: it
waits in the server's input. If the reconciler is killed then, every queued call is found
`Running` at restart and must be declared "outcome unknown", although it never started. So calls
that cannot be re-run wait *here*, still `Pending`, until the server has room:

    acquire(safe=False) ──► in flight < limit and nobody ahead? ──► go (the caller commits Running)
                              └─ no: wait in line (FIFO) ──────────► released by a finished call
    acquire(safe=True)  ──► nobody waiting? go at once (idempotent and read-only calls are re-run
                            after a crash, so being queued by the server costs nothing)

The limit is `spec.maxConcurrentCalls` when set; otherwise it is learned from latencies, in the way
of TCP Vegas and Netflix's concurrency-limits: a call sent alone measures the server's base
latency; a call sent with n in flight that takes about n times as long shows the server works on
fewer at once (a server that runs one call at a time shows exactly 1), and the limit falls to what
it showed; while calls wait and `_WINDOW` calls in a row came back about as fast as a lone call,
the limit grows by one. It starts at 1; a limit that showed queueing is not probed again for
`_PROBE_AFTER` calls. The learned value is kept in the MCPServer's status, so a restarted
reconciler starts where the last one was (`seed`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CallGate", "Ticket"]

#: Largest learned limit.
MAX_LIMIT = 64
#: A latency within this factor of the base latency shows no queueing ...
_FAST = 1.5
#: ... nor does one within this many seconds of it (scheduling noise on a busy event loop).
_NOISE = 0.005
#: Calls in a row without queueing, with calls waiting, before the limit grows by one.
_WINDOW = 4
#: Calls after which a limit that showed queueing may be probed again.
_PROBE_AFTER = 200


@dataclass
class Ticket:
    """One admitted call: how busy the server was when it was sent."""

    concurrent: int  # calls in flight when it was sent, itself included
    safe: bool


class CallGate:
    """The admission line of one MCP server (see the module docstring); used on the event loop only."""

    def __init__(self, limit: int | None = None, *, on_learned: Callable[[], None] = lambda: None) -> None:
        """A gate with a fixed `limit`, or a learned one (None); `on_learned` hears of a new learned limit."""
        self.fixed = limit
        self._on_learned = on_learned
        self._learned = 1
        self.inflight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._base: float | None = None  # latency of a call sent alone (seconds)
        self._fast = 0  # calls in a row sent with company that showed no queueing
        self._ceiling: int | None = None  # a limit that showed queueing: not probed until ...
        self._calls_since = 0  # ... this many calls later

    @property
    def limit(self) -> int:
        """Calls that may be in flight at once."""
        return self.fixed if self.fixed is not None else self._learned

    @property
    def learned(self) -> int:
        """The learned limit (what the status records)."""
        return self._learned

    def seed(self, learned: int) -> None:
        """Start from a limit learned by an earlier run (from the MCPServer's status).

        It is trusted like a limit learned here: nothing above it is probed for `_PROBE_AFTER`
        calls. Otherwise every restart would probe one more at once, and a server that runs one
        call at a time would get a queued call at each restart (the crash soak saw exactly that).
        """
        self._learned = max(1, min(MAX_LIMIT, learned))
        self._ceiling, self._calls_since = self._learned + 1, 0

    @property
    def waiting(self) -> int:
        """Calls waiting in line."""
        return len(self._waiting)

    def free(self, *, safe: bool) -> bool:
        """Whether a call would be admitted right now (without waiting)."""
        return not self._waiting and (safe or self.inflight < self.limit)

    async def acquire(self, *, safe: bool) -> Ticket:
        """Wait for room (FIFO), then count the call as in flight; `safe`: it may be re-run."""
        if not self.free(safe=safe):
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    # Admitted just as the caller went away: pass the room on.
                    self.inflight -= 1
                    self._admit()
                else:
                    self._waiting.remove(waiter)
                raise
        else:
            self.inflight += 1
        return Ticket(concurrent=self.inflight, safe=safe)

    def release(self, ticket: Ticket, *, latency: float | None) -> None:
        """The call came back (`latency` seconds after it was sent; None: it failed, learn nothing)."""
        self.inflight -= 1
        if latency is not None and self.fixed is None:
            before = self._learned
            self._learn(ticket, latency)
            if self._learned != before:
                self._on_learned()
        self._admit()

    def _admit(self) -> None:
        """Let waiting calls in while there is room."""
        while self._waiting and self.inflight < self.limit:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self.inflight += 1
                waiter.set_result(None)

    def _learn(self, ticket: Ticket, latency: float) -> None:
        self._calls_since += 1
        if self._ceiling is not None and self._calls_since >= _PROBE_AFTER:
            self._ceiling = None
        base = self._base
        if ticket.concurrent == 1:
            # The fastest lone call is the base; drift up slowly so one lucky sample does not pin it.
            self._base = latency if base is None or latency < base else base + (latency - base) * 0.05
            if self._learned == 1:
                self._grow()  # lone calls say nothing about more: try two, if calls are waiting
            return
        if base is None:
            return
        if latency > base * _FAST and latency - base > _NOISE:
            # Sent with n in flight, it took about n / parallelism times a lone call.
            self._fast = 0
            parallelism = max(1, round(ticket.concurrent * base / latency))
            if parallelism < self._learned:
                self._ceiling, self._calls_since = self._learned, 0
                self._learned = parallelism
            return
        self._fast += 1
        if self._fast >= _WINDOW:
            self._fast = 0
            self._grow()

    def _grow(self) -> None:
        if not self._waiting:
            return  # no demand: nothing to learn about more
        candidate = self._learned + 1
        if candidate > MAX_LIMIT or (self._ceiling is not None and candidate >= self._ceiling):
            return
        self._learned = candidate
