"""The lean HTTP/1.1 pool (llm/transport.py) against a scripted TCP server on 127.0.0.1.

The server answers each request with the next canned bytes of its script, so each test pins one
protocol case: keep-alive, chunked bodies, interim answers, a connection closed while idle, and
the failures that must surface as TransportError.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from gitops_acp.llm.transport import HTTPPool, Reply, TransportError

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


# What the server does with one request: the bytes to send back, or None to close without answering.
Answer = Callable[[int, int], bytes | None]  # (connection number, request number on it) -> reply


@asynccontextmanager
async def serving(answer: Answer | Sequence[bytes | None]) -> AsyncIterator[Server]:
    replies = list(answer) if not callable(answer) else None
    state = Server(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        connection = state.connections
        number = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                state.requests.append(head + await reader.readexactly(length))
                number += 1
                reply = replies.pop(0) if replies is not None else answer(connection, number)  # type: ignore[operator]
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply or reply.startswith(b"HTTP/1.0"):
                    break  # as a server does after saying so (or after a body only its end delimits)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test ended
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


async def ask(pool: HTTPPool, server: Server) -> Reply:
    async with asyncio.timeout(5):
        return await pool.request("127.0.0.1", server.port, HEAD, b"{}")


def run(coro: Callable[[], object]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_keep_alive_reuses_one_connection() -> None:
    async def go() -> None:
        async with serving([OK, OK, OK]) as server:
            pool = HTTPPool()
            replies = [await ask(pool, server) for _ in range(3)]
            await pool.aclose()
        assert [(r.status, r.reason, r.body) for r in replies] == [(200, "OK", b'{"ok": true}')] * 3
        assert replies[0].headers["content-type"] == "application/json"
        assert server.connections == 1
        assert server.requests[0] == HEAD + b"{}"

    run(go)


def test_chunked_body_with_trailers_is_joined() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"a":\r\n3\r\n 1}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )

    async def go() -> None:
        async with serving([chunked, OK]) as server:
            pool = HTTPPool()
            first, second = await ask(pool, server), await ask(pool, server)
            await pool.aclose()
        assert first.body == b'{"a": 1}'
        assert second.status == 200
        assert server.connections == 1  # the chunked answer's end was known: the connection was kept

    run(go)


def test_connection_close_and_close_delimited_bodies_are_not_reused() -> None:
    close = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy"
    until_eof = b'HTTP/1.0 200 OK\r\n\r\n{"old": 1}'

    async def go() -> None:
        async with serving(lambda connection, number: [close, until_eof, OK][connection - 1]) as server:
            pool = HTTPPool()
            replies = [await ask(pool, server) for _ in range(3)]
            await pool.aclose()
        expected = [(503, b"busy"), (200, b'{"old": 1}'), (200, b'{"ok": true}')]
        assert [(r.status, r.body) for r in replies] == expected
        assert server.connections == 3

    run(go)


def test_interim_answers_are_skipped() -> None:
    async def go() -> None:
        async with serving([b"HTTP/1.1 100 Continue\r\n\r\n" + OK]) as server:
            pool = HTTPPool()
            reply = await ask(pool, server)
            await pool.aclose()
        assert reply.status == 200

    run(go)


def test_a_connection_closed_while_idle_is_retried_once_on_a_new_one() -> None:
    # The server takes the second request on the first connection and closes it unanswered, as a
    # server whose idle timeout fires just as the request arrives.
    def answer(connection: int, number: int) -> bytes | None:
        return None if (connection, number) == (1, 2) else OK

    async def go() -> None:
        async with serving(answer) as server:
            pool = HTTPPool()
            await ask(pool, server)
            reply = await ask(pool, server)
            await pool.aclose()
        assert reply.status == 200
        assert server.connections == 2
        assert len(server.requests) == 3  # the unanswered one, sent again

    run(go)


def test_a_new_connection_closed_without_an_answer_is_an_error() -> None:
    async def go() -> None:
        async with serving([None]) as server:
            pool = HTTPPool()
            with pytest.raises(TransportError, match="closed the connection without answering"):
                await ask(pool, server)
            await pool.aclose()

    run(go)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort", "in the middle"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
    ],
)
def test_broken_answers_are_transport_errors(reply: bytes, error: str) -> None:
    async def go() -> None:
        async with serving([reply, OK]) as server:
            pool = HTTPPool()
            with pytest.raises(TransportError, match=error):
                await ask(pool, server)
            assert (await ask(pool, server)).status == 200  # a broken connection is never reused
            await pool.aclose()
        assert server.connections == 2

    run(go)


def test_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def go() -> None:
        with pytest.raises(TransportError):
            await HTTPPool().request("127.0.0.1", port, HEAD, b"{}")

    run(go)


def test_a_request_cut_by_its_timeout_leaves_no_connection_behind() -> None:
    def answer(connection: int, number: int) -> bytes | None:
        return b"" if connection == 1 else OK  # the first connection never answers

    async def go() -> None:
        async with serving(answer) as server:
            pool = HTTPPool()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.request("127.0.0.1", server.port, HEAD, b"{}")
            assert (await ask(pool, server)).status == 200
            await pool.aclose()
        assert server.connections == 2

    run(go)
