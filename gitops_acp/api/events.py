"""`GET /v1/events`: the status branch's checkpoint events as Server-Sent Events (DESIGN §11).

Each event is one message::

    event: checkpoint
    data: {"commit":"<sha>","time":"2026-12-05T07:25:11Z","kind":"Task","name":"hello",
           "from":"ReadyForLLM","to":"FinalAnswer"}       (on one line)
    id: <sha>

`id:` is on the last event of each commit only, so the id a client remembers (`Last-Event-ID`) is
always a commit it has every event of: a stream cut in the middle of a commit resumes at that
commit's first event.

Resuming: with a `Last-Event-ID` header (or `?after=COMMIT`), the events of the commits after that
one are read from history up to the live hub's cursor, then the live events follow: the hub hands
out only commits after its cursor, so the join has no gap and no duplicate. A commit that is not on
the status branch answers 410 (history was replaced, or the id is from another repository): start
again without it. A slow reader whose queue overflowed resumes the same way, from history.

`?kind=task&name=hello` keeps one resource's events (or one kind's, without `name`).
A comment line every `hub.keepalive` seconds keeps proxies from cutting an idle stream; the stream
ends when serve stops. No authentication here: the API mounts this behind the `viewer` role.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gitops_acp.errors import UserError
from gitops_acp.reactor.events import EventHub, Lagged, Subscription
from gitops_acp.resources.meta import Kind, resolve_kind
from gitops_acp.store import events as store_events
from gitops_acp.store.events import Event, UnknownCommitError

__all__ = ["sse"]

_COMMIT = re.compile(r"[0-9a-fA-F]{4,40}")
_CATCH_UP = 2.0  # seconds a resume waits for the hub to reach a commit already on the branch


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=code)


async def sse(request: Request, hub: EventHub) -> Response:
    """Stream the status branch's events (see the module docstring)."""
    after = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if after is not None and not _COMMIT.fullmatch(after.strip()):
        return _error(400, f"Last-Event-ID {after!r}: expected a commit sha (the id of an event)")
    after = after.strip() if after is not None else None
    kind: Kind | None = None
    name = request.query_params.get("name") or None
    if request.query_params.get("kind"):
        try:
            kind = resolve_kind(request.query_params["kind"])
        except UserError as exc:
            return _error(400, f"kind: {exc}")
    elif name is not None:
        return _error(400, "name needs kind (e.g. ?kind=task&name=hello)")
    subscription = await hub.subscribe()
    backlog: list[Event] = []
    waited = 0.0
    while after is not None:
        try:
            backlog = await hub.history(after, subscription.start)
            break
        except UnknownCommitError as exc:
            subscription.close()
            # A commit the hub has not reached yet (read from the branch by someone else a moment
            # ago) is on the branch: wait for the hub, briefly, rather than refuse it.
            if waited >= _CATCH_UP or not await hub.on_branch(after):
                return _error(410, f"Last-Event-ID: {exc}; reconnect without it to follow from now")
            await asyncio.sleep(0.02)
            waited += 0.02
            subscription = await hub.subscribe()
    stream = _stream(hub, subscription, backlog, _Filter(kind, name))
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Filter:
    def __init__(self, kind: Kind | None, name: str | None) -> None:
        self.kind = kind
        self.name = name

    def __call__(self, events: Sequence[Event]) -> list[Event]:
        return [event for event in events if self.wanted(event)]

    def wanted(self, event: Event) -> bool:
        if self.kind is not None and event.kind != self.kind:
            return False
        return self.name is None or event.name == self.name


def _frames(commit: str, events: Sequence[Event]) -> bytes:
    """One message per event; the commit's last carries `id:` (see the module docstring)."""
    parts = []
    for i, event in enumerate(events):
        data = json.dumps(event.to_json(), separators=(",", ":"))
        last = f"id: {commit}\n" if i == len(events) - 1 else ""
        parts.append(f"event: checkpoint\ndata: {data}\n{last}\n")
    return "".join(parts).encode("utf-8")


async def _stream(
    hub: EventHub, subscription: Subscription, backlog: list[Event], keep: _Filter
) -> AsyncIterator[bytes]:
    position = subscription.start  # every commit up to here was sent (or had nothing to send)
    try:
        yield b": gitops-acp events\nretry: 2000\n\n"  # the headers go out now; reconnect after 2 s
        for commit, events in store_events.group(keep(backlog)):
            yield _frames(commit, events)
        while True:
            try:
                batch = await subscription.next(timeout=hub.keepalive)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            except Lagged:
                # Dropped for being slow: what it missed is history by now.
                subscription = await hub.subscribe()
                try:
                    missed = await hub.history(position, subscription.start)
                except UnknownCommitError:
                    return  # the branch was replaced under us: the client starts again
                for commit, events in store_events.group(missed):
                    position = commit
                    chosen = keep(events)
                    if chosen:
                        yield _frames(commit, chosen)
                position = subscription.start
                continue
            if batch is None:
                return  # serve stops
            commit, events = batch
            position = commit
            chosen = keep(events)
            if chosen:
                yield _frames(commit, chosen)
    finally:
        subscription.close()
