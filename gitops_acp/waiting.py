"""Waiting with a time limit in asyncio, without ever losing a cancellation.

`asyncio.wait_for(aw, timeout)` on Python 3.11 returns normally when its task is cancelled in the
same turn of the loop as `aw` finishes (it sees the inner future done and returns its result;
gh-86296, fixed in 3.12): the cancellation is gone, and a loop around the wait runs on. An
`events --watch` interrupted as a checkpoint moves the ref it watches would keep following, and
the ref watcher's `stop` swallowed a cancellation too (tests/test_waiting.py makes the race happen
every time). `asyncio.timeout` (3.11) tells its own expiry from a cancellation by someone else,
so every timed wait here goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, at most `timeout` seconds; return whether it is set.

    A cancellation of the waiting task always propagates, also one that comes as the event is set.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
    return event.is_set()
