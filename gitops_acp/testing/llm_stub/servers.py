"""Where the stub runs: in a thread, in the running event loop, or as the main thread of a process.

``with StubServer(script) as stub: stub.url`` serves from a daemon thread (tests, the demo);
``async with StubServer(script)`` from a task of the current loop; ``serve_forever()`` in the main
thread of a process (``gitops-acp llm-stub``), which prints its URL as the first line of stdout and
exits when its parent dies or after ``max_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from gitops_acp.testing.llm_stub.app import create_app
from gitops_acp.testing.llm_stub.replies import StubState
from gitops_acp.testing.llm_stub.script import load_script

__all__ = ["StubServer"]


class _Uvicorn(uvicorn.Server):
    """uvicorn that stops by itself: at a deadline, when its parent process dies, or when asked."""

    def __init__(
        self, config: uvicorn.Config, *, deadline: float | None, parent: int | None, signals: bool
    ) -> None:
        super().__init__(config)
        self._deadline = deadline
        self._parent = parent
        self._signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Embedded in a test or the demo, SIGINT belongs to the host program.
        if self._signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return True
        if self._parent is not None and os.getppid() != self._parent:
            return True
        return await super().on_tick(counter)


class StubServer:
    """The stub on 127.0.0.1: `with StubServer(script) as s:` (thread) or `async with` (current loop)."""

    def __init__(
        self,
        script: Mapping[str, Any] | str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_records: int = 10_000,
        max_seconds: float | None = None,
    ) -> None:
        self.state = StubState(load_script(script), max_records=max_records)
        self.app = create_app(self.state)
        self._host = host
        self._port = port
        self._max_seconds = max_seconds
        self._sock: socket.socket | None = None
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._sock is None:
            raise RuntimeError("the stub server is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client, e.g. http://127.0.0.1:43121/v1."""
        return f"http://{self._host}:{self.port}/v1"

    def requests(self) -> list[dict[str, Any]]:
        """Return the recorded requests, oldest first."""
        return self.state.requests()

    def set_script(self, script: Mapping[str, Any] | str | Path | None) -> None:
        """Replace the script (and restart its `times` counters)."""
        self.state.set_script(load_script(script))

    def reset(self) -> None:
        """Forget recorded requests and `times` counters."""
        self.state.reset()

    def _prepare(self, *, signals: bool = False, parent: int | None = None) -> _Uvicorn:
        if self._server is not None:
            raise RuntimeError("the stub server is already started")
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
            # Listening now means a client given the URL can connect at once: the kernel queues
            # connections until uvicorn starts accepting (the process prints its URL before that).
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="auto",  # httptools (a dependency): the stub needs a quarter less CPU than with h11
            timeout_graceful_shutdown=1,
        )
        deadline = time.monotonic() + self._max_seconds if self._max_seconds else None
        self._server = _Uvicorn(config, deadline=deadline, parent=parent, signals=signals)
        return self._server

    def start(self) -> StubServer:
        """Serve from a daemon thread; return once the server accepts connections."""
        server = self._prepare()
        assert self._sock is not None
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._sock]}, name="llm-stub", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the LLM stub server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the thread started by start() and release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._release()

    async def start_async(self) -> StubServer:
        """Serve from a task in the running event loop; return once it accepts connections."""
        server = self._prepare()
        assert self._sock is not None
        self._task = asyncio.create_task(server.serve(sockets=[self._sock]), name="llm-stub")
        while not server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the LLM stub server did not start")
            await asyncio.sleep(0.005)
        return self

    async def stop_async(self) -> None:
        """Stop the task started by start_async() and release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        self._release()

    def _release(self) -> None:
        if self._sock is not None:
            self._sock.close()  # uvicorn closes it on shutdown; a second close is harmless
        self._server = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> StubServer:
        return await self.start_async()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_async()

    def serve_forever(self, *, parent: int | None = None) -> None:
        """Serve in this (main) thread until SIGINT/SIGTERM, the deadline, or process `parent` is gone.

        The parent counts as gone when this process is re-parented (``os.getppid() != parent``).
        """
        server = self._prepare(signals=True, parent=parent)
        assert self._sock is not None
        print(self.url, flush=True)
        try:
            server.run(sockets=[self._sock])
        finally:
            self._release()
