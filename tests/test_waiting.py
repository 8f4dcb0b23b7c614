"""Timed waits that never lose a cancellation (gitops_acp/waiting.py): the case `asyncio.wait_for`
gets wrong on Python 3.11, a cancellation in the same turn of the loop as the event is set."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from gitops_acp import waiting
from gitops_acp.reactor.watcher import RefWatcher


async def _cancelled_as_woken(wait_once: Callable[[], Awaitable[object]], wake: Callable[[], None]) -> bool:
    """Run `wait_once` in a loop; set the event and cancel the loop in one turn: did it stop?"""
    turns = 0

    async def forever() -> None:
        nonlocal turns
        while True:
            await wait_once()
            turns += 1

    task = asyncio.create_task(forever())
    await asyncio.sleep(0.01)  # the task waits
    wake()
    task.cancel()
    done, _pending = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()  # a second one gets through: let the test end
        await asyncio.wait({task}, timeout=1.0)
    return bool(done) and task.cancelled() and turns == 0


def test_wait_event_answers_whether_the_event_came() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        late = await waiting.wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        came = await waiting.wait_event(event, 5)
        at_once = await waiting.wait_event(event, 0)
        return late, came, at_once

    assert asyncio.run(scenario()) == (False, True, True)


def test_a_cancellation_that_comes_as_the_event_is_set_is_not_lost() -> None:
    async def scenario() -> bool:
        event = asyncio.Event()

        async def once() -> None:
            await waiting.wait_event(event, 5)
            event.clear()

        return await _cancelled_as_woken(once, event.set)

    assert asyncio.run(scenario())


def test_the_ref_watcher_stops_when_cancelled_as_a_ref_moves(tmp_path: Path) -> None:
    """`events --watch` and the reactor wait on it: an interrupt must stop them, whenever it comes."""

    async def scenario() -> bool:
        watchers = [RefWatcher(tmp_path, poll_interval=5.0) for _ in range(5)]
        return all([await _cancelled_as_woken(watcher.wait, watcher.poke) for watcher in watchers])

    assert asyncio.run(scenario())
