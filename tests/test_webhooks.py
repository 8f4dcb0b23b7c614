"""The HTTP side of `serve --http`: supervised, so a dead server stops `serve` (reactor/webhooks.py)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from gitops_acp.reactor import webhooks


def test_a_dead_http_server_stops_serve_with_exit_1(caplog: pytest.LogCaptureFixture) -> None:
    stopped = asyncio.Event()

    async def run() -> int:  # a manager that would run forever unless stopped
        await stopped.wait()
        return 0

    async def scenario() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # not a stream: the server fails
            sock.bind(("127.0.0.1", 0))
            return await asyncio.wait_for(
                webhooks.serve(run, lambda forge, branch: None, sock, b"secret", stop=stopped.set), timeout=30
            )

    with caplog.at_level(logging.ERROR, logger="gitops_acp"):
        assert asyncio.run(scenario()) == 1
    assert stopped.is_set()
    assert "the HTTP server stopped" in caplog.text


def test_serve_returns_the_managers_code_when_it_stops_first() -> None:
    async def scenario() -> int:
        async def run() -> int:
            await asyncio.sleep(0.2)
            return 0

        with webhooks.listen("127.0.0.1", 0) as sock:
            return await webhooks.serve(run, lambda forge, branch: None, sock, None)

    assert asyncio.run(scenario()) == 0
