"""The admission line of an MCP server (gitops_acp/mcp/gate.py): who waits, and what limit it learns.

The servers here are asyncio functions with the shape of real ones: a serial server runs one call
at a time behind a lock (the test MCP server's sync tools do exactly that), a parallel one runs
them all at once. Latencies are real (tens of milliseconds), so what the gate learns is what it
would learn from a real server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from gitops_acp.mcp.gate import MAX_LIMIT, CallGate

SERVICE = 0.02  # seconds one call takes on the server


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def serial_server() -> Callable[[], Awaitable[None]]:
    lock = asyncio.Lock()

    async def call() -> None:
        async with lock:
            await asyncio.sleep(SERVICE)

    return call


def parallel_server() -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await asyncio.sleep(SERVICE)

    return call


async def _drive(gate: CallGate, server: Callable[[], Awaitable[None]], calls: int, *, safe: bool) -> int:
    """Send `calls` calls through the gate at once; return the most ever in flight."""
    peak = 0

    async def one() -> None:
        nonlocal peak
        ticket = await gate.acquire(safe=safe)
        peak = max(peak, gate.inflight)
        sent = time.monotonic()
        try:
            await server()
        finally:
            gate.release(ticket, latency=time.monotonic() - sent)

    await asyncio.gather(*(one() for _ in range(calls)))
    return peak


def test_a_serial_server_is_learned_to_take_one_call_at_a_time() -> None:
    gate = CallGate()
    learned: list[int] = []
    gate._on_learned = lambda: learned.append(gate.limit)  # what the MCPServer status would record

    async def scenario() -> None:
        await _drive(gate, serial_server(), 40, safe=False)

    run(scenario())
    assert gate.limit == 1
    assert learned[0] == 2, learned  # it probed two once, saw queueing ...
    assert learned[-1] == 1, learned  # ... and went back to one
    assert len(learned) == 2, f"probed again although two had shown queueing: {learned}"


def test_a_parallel_server_earns_a_higher_limit() -> None:
    gate = CallGate()

    async def scenario() -> None:
        for _ in range(3):
            await _drive(gate, parallel_server(), 60, safe=False)

    run(scenario())
    assert gate.limit >= 4, gate.limit


def test_a_fixed_limit_is_kept_and_never_exceeded() -> None:
    gate = CallGate(3)

    async def scenario() -> int:
        return await _drive(gate, parallel_server(), 30, safe=False)

    peak = run(scenario())
    assert peak == 3
    assert gate.limit == 3


def test_safe_calls_go_at_once_while_nobody_waits() -> None:
    gate = CallGate(1)

    async def scenario() -> int:
        return await _drive(gate, parallel_server(), 10, safe=True)

    assert run(scenario()) == 10


def test_the_line_is_first_come_first_served_and_safe_calls_do_not_overtake() -> None:
    gate = CallGate(1)
    order: list[str] = []

    async def scenario() -> None:
        first = await gate.acquire(safe=False)
        waiting = asyncio.ensure_future(gate.acquire(safe=False))
        await asyncio.sleep(0)
        assert not gate.free(safe=True)  # somebody waits: a safe call queues behind it
        safe = asyncio.ensure_future(gate.acquire(safe=True))
        waiting.add_done_callback(lambda _: order.append("unsafe"))
        safe.add_done_callback(lambda _: order.append("safe"))
        await asyncio.sleep(0.01)
        assert order == []
        gate.release(first, latency=None)
        second = await waiting
        gate.release(second, latency=None)
        gate.release(await safe, latency=None)
        assert gate.inflight == 0

    run(scenario())
    assert order == ["unsafe", "safe"]


def test_a_caller_that_gives_up_leaves_the_line() -> None:
    gate = CallGate(1)

    async def scenario() -> None:
        held = await gate.acquire(safe=False)
        waiter = asyncio.ensure_future(gate.acquire(safe=False))
        await asyncio.sleep(0)
        assert gate.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
        gate.release(held, latency=None)
        assert gate.inflight == 0
        assert gate.free(safe=False)

    run(scenario())


def test_a_seeded_limit_is_not_probed_again_after_a_restart() -> None:
    """A restarted reconciler trusts what the last one learned: no queued call at each restart."""
    gate = CallGate()
    gate.seed(1)

    async def scenario() -> int:
        return await _drive(gate, serial_server(), 20, safe=False)

    assert run(scenario()) == 1
    assert gate.limit == 1


def test_a_learned_limit_seeds_a_new_gate_within_bounds() -> None:
    gate = CallGate()
    gate.seed(5)
    assert gate.limit == 5
    gate.seed(10_000)
    assert gate.limit == MAX_LIMIT
    gate.seed(0)
    assert gate.limit == 1
