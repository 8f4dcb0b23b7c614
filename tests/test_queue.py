"""The work queue: serial per key, parallel across keys, events during a run not lost, delayed requeue."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from gitops_acp.reactor.queue import Requeue, WorkQueue


def run(coro):  # one event loop per test, closed afterwards (warnings are errors)
    return asyncio.run(coro)


def test_serial_per_key_parallel_across_keys() -> None:
    active: dict[Hashable, int] = {}
    overlap_same_key = 0
    max_parallel = 0
    gate = asyncio.Event()

    async def handler(key: Hashable) -> Requeue | None:
        nonlocal overlap_same_key, max_parallel
        active[key] = active.get(key, 0) + 1
        if active[key] > 1:
            overlap_same_key += 1
        max_parallel = max(max_parallel, sum(1 for v in active.values() if v))
        await gate.wait()
        active[key] -= 1
        return None

    async def main() -> None:
        queue = WorkQueue(handler, concurrency=8)
        queue.start()
        for key in ("a", "b", "c"):
            queue.add(key)
        await asyncio.sleep(0.01)
        queue.add("a")  # while "a" runs: must run again after, never concurrently
        await asyncio.sleep(0.01)
        assert max_parallel == 3
        gate.set()
        await asyncio.wait_for(queue.wait_idle(), 5)
        await queue.stop()

    run(main())
    assert overlap_same_key == 0


def test_event_during_run_is_not_lost_and_bursts_collapse() -> None:
    calls: list[Hashable] = []
    release = asyncio.Event()

    async def handler(key: Hashable) -> Requeue | None:
        calls.append(key)
        if len(calls) == 1:
            await release.wait()
        return None

    async def main() -> None:
        queue = WorkQueue(handler, concurrency=2)
        queue.start()
        queue.add("k")
        await asyncio.sleep(0.01)
        for _ in range(5):
            queue.add("k")
        release.set()
        await asyncio.wait_for(queue.wait_idle(), 5)
        await queue.stop()

    run(main())
    assert calls == ["k", "k"]


@pytest.mark.parametrize(("progress", "idle_while_waiting"), [(True, False), (False, True)])
def test_requeue_after_and_idleness(progress: bool, idle_while_waiting: bool) -> None:
    calls: list[float] = []

    async def handler(key: Hashable) -> Requeue | None:
        calls.append(asyncio.get_running_loop().time())
        return Requeue(0.05, progress=progress) if len(calls) == 1 else None

    async def main() -> bool:
        queue = WorkQueue(handler, concurrency=1)
        queue.start()
        queue.add("k")
        await asyncio.sleep(0.01)
        idle = queue.is_idle()
        await asyncio.sleep(0.1)
        await queue.stop()
        return idle

    assert run(main()) is idle_while_waiting
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.04


def test_sooner_requeue_wins() -> None:
    async def handler(key: Hashable) -> Requeue | None:
        return None

    async def main() -> int:
        queue = WorkQueue(handler, concurrency=1)
        queue.start()
        queue.add_after("k", 60)
        queue.add_after("k", 0.01)
        await asyncio.sleep(0.05)
        pending = queue.pending_keys
        await queue.stop()
        return pending

    assert run(main()) == 0


def test_handler_exception_is_retried_with_backoff() -> None:
    calls = 0

    async def handler(key: Hashable) -> Requeue | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return None

    async def main() -> None:
        queue = WorkQueue(handler, concurrency=1)
        queue.start()
        queue.add("k")
        await asyncio.wait_for(queue.wait_idle(), 5)
        await queue.stop()

    run(main())
    assert calls == 2


def test_interrupt_cancels_the_reconcile_in_flight_and_reruns_it() -> None:
    started: list[int] = []
    finished: list[int] = []

    async def handler(key: Hashable) -> Requeue | None:
        started.append(len(started))
        if len(started) == 1:
            await asyncio.sleep(30)  # an LLM call nobody will read
        finished.append(len(started))
        return None

    async def main() -> None:
        queue = WorkQueue(handler, concurrency=2)
        queue.start()
        queue.add("task")
        await asyncio.sleep(0.01)
        queue.interrupt("task")
        await asyncio.wait_for(queue.wait_idle(), 5)
        await queue.stop()

    run(main())
    assert started == [0, 1]
    assert finished == [2]
