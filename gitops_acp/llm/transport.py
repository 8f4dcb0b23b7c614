"""A lean keep-alive HTTP/1.1 client on asyncio streams, for plain-``http://`` LLM endpoints.

Why: against an OpenAI-compatible server that answers at once, most of a chat completion's CPU
was HTTP plumbing, not JSON or our own code. Measured here (openai 3.54, httpx2 2.16, 2000
requests, 16 in flight, against the stub; CPU of the client process per request):

    openai SDK ``post()`` over httpx2's default transport (httpcore + h11)   2.2 ms
    the same SDK over httpx2 with a keep-alive transport like this one       1.25 ms
    httpx2 alone over that transport                                         0.57 ms
    this module (request bytes in, status + headers + body out)              0.14 ms

The reconciler of thousands of tasks sends hundreds of requests a second to in-cluster vLLM,
Ollama or llama.cpp servers (plain http, next to it), so that is where its CPU went. Endpoints
over TLS, behind a proxy, or on Azure keep going through the openai SDK (llm/openai_client.py):
providers there answer in seconds, where per-request CPU does not matter.

The protocol subset: HTTP/1.1 requests with a known body; answers delimited by
``Content-Length``, ``Transfer-Encoding: chunked`` or the connection closing; interim 1xx answers
skipped; keep-alive unless either side says ``Connection: close``. A pooled connection the server
closed while idle is noticed before reuse; if a reused connection still fails before the first
byte of the answer, the request is sent once more on a new connection (what urllib3 and browsers
do: the server closed the idle connection as the request went out). That can repeat a chat
completion, which is safe: it has no effect beyond its reply.

Timeouts are the caller's (``asyncio.timeout`` around `request`): a request cancelled half-way
closes its connection, which is never reused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["HTTPPool", "Reply", "TransportError"]

_MAX_HEAD = 1 << 20  # a status line and headers longer than this are refused
_MAX_IDLE_PER_HOST = 256
_NO_BODY_STATUSES = frozenset({204, 304})


class TransportError(Exception):
    """The exchange failed: cannot connect, the connection broke, or the answer was not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class _Connection:
    """One keep-alive TCP connection (a reader/writer pair)."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """False once the peer closed it (the event loop already read its EOF) or it failed."""
        return not (self.reader.at_eof() or self.writer.is_closing() or self.reader.exception() is not None)

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A reused connection failed before any byte of the answer: send the request again, once."""


class HTTPPool:
    """Keep-alive connections per (host, port); one request at a time on each connection."""

    def __init__(self, *, max_idle_per_host: int = _MAX_IDLE_PER_HOST) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_host

    def __repr__(self) -> str:
        return f"HTTPPool(idle={sum(len(c) for c in self._idle.values())})"

    async def request(self, host: str, port: int, head: bytes, body: bytes = b"") -> Reply:
        """Send `head` (request line and headers, ending with a blank line) and `body`; read the answer.

        Raises TransportError; the caller bounds the time with ``asyncio.timeout``.
        """
        payload = head + body
        method = head.split(b" ", 1)[0]
        connection = self._checkout(host, port)
        if connection is not None:
            try:
                return await self._exchange(connection, host, port, payload, method, fresh=False)
            except _Stale:
                pass
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=_MAX_HEAD)
        except OSError as exc:
            raise TransportError(str(exc) or type(exc).__name__) from None
        return await self._exchange(_Connection(reader, writer), host, port, payload, method, fresh=True)

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _checkout(self, host: str, port: int) -> _Connection | None:
        connections = self._idle.get((host, port))
        while connections:
            connection = connections.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    async def _exchange(
        self, connection: _Connection, host: str, port: int, payload: bytes, method: bytes, *, fresh: bool
    ) -> Reply:
        """One request on `connection`; the connection goes back to the pool only after a clean answer."""
        keep = False  # until the whole answer was read and both sides allow it
        try:
            try:
                connection.writer.write(payload)
                await connection.writer.drain()
                status, reason, headers, http11 = await _read_head(connection.reader, fresh=fresh)
                body, delimited = await _read_body(connection.reader, method, status, headers)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                if not fresh and isinstance(exc, OSError):
                    raise _Stale from None  # e.g. reset while writing to a connection closed while idle
                raise TransportError(_describe(exc)) from None
            keep = http11 and delimited and "close" not in headers.get("connection", "").lower()
            return Reply(status, reason, headers, body)
        finally:
            if keep:
                self._checkin(host, port, connection)
            else:
                connection.close()

    def _checkin(self, host: str, port: int, connection: _Connection) -> None:
        connections = self._idle.setdefault((host, port), [])
        if len(connections) < self._max_idle and connection.usable():
            connections.append(connection)
        else:
            connection.close()


async def _read_head(reader: asyncio.StreamReader, *, fresh: bool) -> tuple[int, str, dict[str, str], bool]:
    """Read the status line and headers, skipping interim (1xx) answers."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            if not fresh:
                raise _Stale from None
            raise TransportError("the server closed the connection without answering") from None
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise TransportError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        status = int(parts[1])
        if status < 200:
            continue  # 100 Continue and friends: the real answer follows
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise TransportError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        return status, parts[2] if len(parts) > 2 else "", headers, parts[0] == "HTTP/1.1"


async def _read_body(
    reader: asyncio.StreamReader, method: bytes, status: int, headers: dict[str, str]
) -> tuple[bytes, bool]:
    """Read the body; also say whether its end was known (else the connection was read to its end)."""
    if method == b"HEAD" or status in _NO_BODY_STATUSES:
        return b"", True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader), True
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise TransportError(f"invalid Content-Length {length[:40]!r}")
        return await reader.readexactly(int(length)), True
    return await reader.read(), False


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_text = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise TransportError(f"invalid chunk size {size_text[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise TransportError("a chunk not followed by CRLF")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the server closed the connection in the middle of the answer"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "the answer's headers are too long"
    return str(exc) or type(exc).__name__
