"""The stdio transport: one MCP server process, its pipes, and making sure it is gone afterwards.

Why not the SDK's `stdio_client`: it hides the process, and the manager needs three things it does
not give. The pid and exit code, so a crash reads "exited during the call (exit code 3)" and the
owner task notices a dead server at once instead of at the next call. The whole process group
killed on every exit: the SDK escalates only when the server itself outlives the stdin close,
so children a well-behaved server leaves behind (an `npx` wrapper's node, a tool's helper) stay
alive. And stderr appended to a real log file opened per start.

The wire handling mirrors the SDK's (newline-delimited JSON-RPC, parsed with `mcp_types`), with
two changes measured to matter under ~1000 calls/s: outgoing messages already queued are
written with one syscall, and parsed messages are buffered so the reader does not switch tasks
per line.

Shutdown order (the MCP spec's, then the group): close stdin, wait up to `STDIN_GRACE`; SIGTERM
the process group, wait `TERM_GRACE`; SIGKILL the group. Then, with the leader gone, SIGTERM and
SIGKILL whatever is left in its group. The server runs in its own session (setsid), so the group
is exactly the server and the children that did not leave it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import anyio
import anyio.abc
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client._transport import TransportStreams
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage

__all__ = ["StdioTransport", "child_environment"]

STDIN_GRACE = 2.0  # seconds a server gets to exit by itself once stdin closes (the SDK's value)
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
LEFTOVER_GRACE = 0.5  # seconds children left behind get between SIGTERM and SIGKILL
_POLL = 0.01  # seconds between looks at a process that should be exiting
_WATCH = 0.25  # seconds between looks at a running server whose stdout is still open
_READ_BUFFER = 256  # parsed messages the reader may run ahead of the dispatcher


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """Return the server's environment: the SDK's allow-list (PATH, HOME, USER, ...) plus `extra`.

    The reconciler's own environment may hold secrets (API keys for other resources), so a server
    gets only what it is given; PATH and HOME are what `npx` and `uvx` need to find themselves.
    """
    return get_default_environment() | dict(extra)


class StdioTransport(contextlib.AbstractAsyncContextManager[TransportStreams]):
    """Start a server process on enter; stop it and its process group on exit.

    `on_exit` is called once, from the event loop, when the process is seen to have died on its
    own (not when we stop it): the owner task uses it to notice a crash between calls.
    """

    def __init__(
        self,
        command: str,
        args: tuple[str, ...],
        env: Mapping[str, str],
        log_path: Path | None,
        *,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self._argv = [command, *args]
        self._env = child_environment(env)
        self._log_path = log_path
        self._on_exit = on_exit
        self._process: anyio.abc.Process | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._eof = anyio.Event()
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The server's process id, once started."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); None while running or before start."""
        return self._process.returncode if self._process is not None else None

    async def __aenter__(self) -> TransportStreams:
        log = _open_log(self._log_path) if self._log_path is not None else None
        # Shielded (the spawn and its pipes take milliseconds): a cancellation landing while
        # asyncio connects the pipes left a started process that nobody held, never reaped, its
        # pipes never closed (asyncio's own clean-up awaits, and anyio cancels that await too). A
        # cancellation waiting here lands at the next checkpoint, with the process ours to stop.
        try:
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    self._argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log if log is not None else subprocess.DEVNULL,
                    env=self._env,
                    start_new_session=True,
                )
        finally:
            # The child has its own descriptor now; ours is not needed.
            if log is not None:
                log.close()
        self._process = process

        # Both directions are memory streams between the dispatcher and our three tasks.
        read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](_READ_BUFFER)
        write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](_READ_BUFFER)
        stack = contextlib.AsyncExitStack()
        try:
            # Exit order (last registered runs first): stop the process while the reader still
            # drains stdout (a server blocked on a full pipe cannot see its stdin close), then
            # cancel the pipe tasks, then leave their task group.
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            stack.push_async_callback(self._shutdown, read_send, read_recv, write_send, write_recv)
            tg.start_soon(self._read, process, read_send)
            tg.start_soon(self._write, process, write_recv, read_send)
            tg.start_soon(self._watch, process)
        except BaseException:
            _signal_group(process.pid, signal.SIGKILL)
            await stack.aclose()
            raise
        self._stack = stack
        return read_recv, write_send

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping = True
        assert self._stack is not None
        stack, self._stack = self._stack, None
        await stack.aclose()

    async def _read(
        self, process: anyio.abc.Process, out: MemoryObjectSendStream[SessionMessage | Exception]
    ) -> None:
        """Parse stdout lines into messages until EOF."""
        assert process.stdout is not None
        buffer = b""
        try:
            async with out:
                async for chunk in process.stdout:
                    lines = (buffer + chunk).split(b"\n")
                    buffer = lines.pop()
                    for line in lines:
                        if not line.strip():
                            continue
                        item: SessionMessage | Exception
                        try:
                            item = SessionMessage(
                                mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                            )
                        except ValueError as exc:
                            # Surfaced to the session like the SDK does; a server printing junk to
                            # stdout is a server bug, and the message names it.
                            item = exc
                        try:
                            # send() would first yield to the event loop, once per message; a
                            # waiting dispatcher or room in the buffer takes it at once.
                            out.send_nowait(item)
                        except anyio.WouldBlock:
                            await out.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass  # our own shutdown closed a side; the session sees the stream end
        finally:
            self._eof.set()

    async def _write(
        self,
        process: anyio.abc.Process,
        messages: MemoryObjectReceiveStream[SessionMessage],
        read_side: MemoryObjectSendStream[SessionMessage | Exception],
    ) -> None:
        """Serialize messages to stdin, all those already queued in one write."""
        assert process.stdin is not None
        try:
            async with messages:
                async for first in messages:
                    parts = [first.message.model_dump_json(by_alias=True, exclude_unset=True)]
                    with contextlib.suppress(anyio.WouldBlock):
                        while len(parts) < _READ_BUFFER:
                            parts.append(messages.receive_nowait().message.model_dump_json(
                                by_alias=True, exclude_unset=True
                            ))  # fmt: skip
                    await process.stdin.send(("\n".join(parts) + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            # The server stopped reading (it died or closed stdin): end the read side too, so a
            # request waiting for an answer gets "connection closed" instead of hanging.
            await read_side.aclose()

    async def _watch(self, process: anyio.abc.Process) -> None:
        """Call `on_exit` once the server dies on its own (stdout EOF or an exit code)."""
        while process.returncode is None and not self._eof.is_set():
            with anyio.move_on_after(_WATCH):
                await self._eof.wait()
        # EOF usually comes a moment before the exit code: wait for it briefly, so the crash
        # report can say how it ended. A server that closed stdout but lives on is stopped on exit.
        with anyio.move_on_after(1.0):
            while process.returncode is None:
                await anyio.sleep(_POLL)
        if not self._stopping:
            self._on_exit()

    async def _shutdown(
        self,
        read_send: MemoryObjectSendStream[SessionMessage | Exception],
        read_recv: MemoryObjectReceiveStream[SessionMessage | Exception],
        write_send: MemoryObjectSendStream[SessionMessage],
        write_recv: MemoryObjectReceiveStream[SessionMessage],
    ) -> None:
        """Stop the server and its group, then release pipes and streams (shielded, every wait bounded)."""
        process = self._process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        with anyio.CancelScope(shield=True):
            self._stopping = True
            write_send.close()
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.aclose()
            if not await _exited(process, STDIN_GRACE):
                _signal_group(process.pid, signal.SIGTERM)
                if not await _exited(process, TERM_GRACE):
                    _signal_group(process.pid, signal.SIGKILL)
                    await _exited(process, TERM_GRACE)
            await _reap_group(process.pid)
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdout.aclose()
            for stream in (read_send, read_recv, write_recv):
                stream.close()
            # anyio's Process.aclose() would wait for the pipes' EOF, which a child that escaped
            # the group could hold open for ever: close the asyncio transport directly instead.
            transport = getattr(getattr(process, "_process", None), "_transport", None)
            close = getattr(transport, "close", None)
            if callable(close):
                close()


def _open_log(path: Path) -> IO[bytes]:
    """Open the server's stderr log for appending, creating its directory (a local file: fast)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")


async def _exited(process: anyio.abc.Process, timeout: float) -> bool:
    """Return whether the process has exited within `timeout` seconds (polls: see `_shutdown`)."""
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            await anyio.sleep(_POLL)
    return process.returncode is not None


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; return whether anything was there to receive it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member that changed user (setuid helper): nothing we may do about it.
        return False
    return True


async def _reap_group(pgid: int) -> None:
    """Stop what the server left behind in its group: SIGTERM, a short grace, then SIGKILL.

    The group id stays reserved while any member lives, so this cannot hit an unrelated process.
    """
    if not _signal_group(pgid, signal.SIGTERM):
        return
    with anyio.move_on_after(LEFTOVER_GRACE):
        while _signal_group(pgid, 0):  # signal 0 only probes
            await anyio.sleep(_POLL)
        return
    _signal_group(pgid, signal.SIGKILL)
