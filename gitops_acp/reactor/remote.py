"""Keeping the mirror and the remote in step while `serve` runs: fetches, pipelined pushes, outages.

    start:  prepare the mirror ──► fetch ──► push what an earlier run left unpushed (waits for the
            remote: nothing advances on state the remote does not have)
    loop:   every --fetch-interval, or at once on poke() ──► fetch ──► main moved / a branch deleted
            on the remote ──► on_change() (the manager reads main, re-checks pending approvals)
            a checkpoint committed / a branch created ──► push round: the newest tip of every
            reconciler branch, one push; it releases every waiter that was registered before it began
    failure: a rejected push ──► fetch, merge (store/mirror), push again at once
             an unreachable remote ──► retry with backoff (0.25 s doubling, capped at the fetch
             interval); one warning when it starts, one line when it ends; waiters keep waiting

A push round is a group commit of pushes: while one push is in flight the status writer keeps
committing, and the next round sends the newest tip, so the number of pushes follows the remote's
round trips, not the number of checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gitops_acp.errors import ConflictError, RemoteError, StoreError
from gitops_acp.store import mirror as mirrors
from gitops_acp.store.git import GitRepo, redact_url
from gitops_acp.telemetry import metrics
from gitops_acp.waiting import wait_event

__all__ = ["RemoteOptions", "RemoteSync"]

log = logging.getLogger("gitops_acp")

T = TypeVar("T")

#: First retry delay after a failed fetch or push; doubles up to the fetch interval.
RETRY_BASE = 0.25
#: Rejected pushes in a row retried at once (fetch, merge, push); past this the remote is refusing
#: for another reason (a protected branch, a hook) and it is handled as an outage, with backoff.
MAX_QUICK_REJECTIONS = 3


@dataclass(frozen=True)
class RemoteOptions:
    """Where the remote is and how often to look at it."""

    url: str
    mirror: Path  # the bare mirror (in the cache dir: the reconciler's durable state)
    fetch_interval: float = 15.0


@dataclass
class RemoteStats:
    """Counters for logs and the benchmark."""

    fetches: int = 0
    pushes: int = 0  # successful push rounds that sent something
    rejected: int = 0  # pushes refused because someone moved a branch first
    merges: int = 0  # merges of someone else's status commits


class RemoteSync:
    """Fetches and pushes the mirror of one remote (see the module docstring)."""

    def __init__(
        self,
        options: RemoteOptions,
        *,
        main: str,
        status_branch: str,
        identity: tuple[str, str],
        on_change: Callable[[], None],
    ) -> None:
        self.options = options
        self.stats = RemoteStats()
        self._main = main
        self._status_branch = status_branch
        self._identity = identity
        self._on_change = on_change
        self._url = redact_url(options.url)
        self._git = ThreadPoolExecutor(max_workers=1, thread_name_prefix="git-remote")
        self._repo: GitRepo | None = None
        self._mirror: mirrors.Mirror | None = None
        self._wake = asyncio.Event()
        self._fetch_now = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_since: float | None = None
        self._failures = 0
        self._rejections = 0  # rejected pushes in a row

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._git, fn)

    def _open(self) -> mirrors.Mirror:
        mirrors.prepare_mirror(self.options.mirror, self.options.url)
        self._repo = GitRepo.open(self.options.mirror)
        return mirrors.Mirror(
            self._repo, main=self._main, status_branch=self._status_branch, identity=self._identity
        )

    async def start(self) -> None:
        """Prepare the mirror, fetch, and push what an earlier run left unpushed; then keep in step.

        A mirror that never fetched `main` cannot serve anything: its first failure is an error. An
        existing one waits for the remote (one warning), since its unpushed commits must go first.
        """
        mirror = self._mirror = await self._call(self._open)
        fresh = not await self._call(mirror.has_main)
        while True:
            try:
                await self._fetch(catch_up=True)
                if await self._push_round([]):
                    break
                # Rejected (someone pushed meanwhile): fetch theirs, merge, push again.
            except ConflictError:
                continue
            except RemoteError as exc:
                if fresh:
                    raise RemoteError(f"cannot serve {self._url}: {exc}") from exc
                self._outage(exc)
                await asyncio.sleep(self._backoff())
        self._recovered()
        self._loop_task = asyncio.create_task(self._loop(), name="remote-sync")

    def describe(self) -> str:
        """The remote and its mirror, for the start-up log line (credentials left out)."""
        return f"{self._url} (mirror {self.options.mirror})"

    def poke(self) -> None:
        """Fetch now (a webhook said the remote changed), not at the next interval."""
        self._fetch_now.set()
        self._wake.set()

    async def pushed(self, _sha: str = "") -> None:
        """Return once a push that began after this call succeeded (it carries every commit made before).

        The status writer's `confirm`; also awaited after creating a branch, which must be on the
        remote before the state that names it is committed.
        """
        if self._closing:
            raise StoreError("not pushed: serve is stopping (kept in the mirror, pushed at the next start)")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        await future

    async def delete_branch(self, ref: str) -> None:
        """Delete one of the reconciler's branches on the remote (a push with a lease), then here.

        On this thread, so no fetch can bring the branch back between the two. Raises RemoteError
        when the remote cannot be reached or refuses (someone moved the branch: fetched, tried later).
        """
        mirror = self._mirror
        if mirror is None:
            raise RemoteError("the remote is not started yet")
        refused = await self._call(lambda: mirror.delete_branch(ref))
        if refused is not None:
            self.poke()  # learn where the remote's branch is now
            raise RemoteError(f"the remote refused to delete {ref}: {refused}")

    async def _loop(self) -> None:
        interval = self.options.fetch_interval
        next_fetch = time.monotonic() + interval
        while not self._closing:
            await wait_event(self._wake, next_fetch - time.monotonic())
            self._wake.clear()
            if self._closing:
                return
            try:
                if self._fetch_now.is_set() or time.monotonic() >= next_fetch:
                    self._fetch_now.clear()
                    next_fetch = time.monotonic() + interval
                    await self._fetch()
                waiting, self._waiters = self._waiters, []
                if not await self._push_round(waiting):
                    self._fetch_now.set()  # rejected: fetch theirs, merge, push again at once
                    self._wake.set()
                self._recovered()
            except ConflictError:
                self._wake.set()  # the writer moved the branch under a merge: again, at once
            except RemoteError as exc:
                self._outage(exc)
                self._fetch_now.set()  # what happened on the remote meanwhile counts too
                await asyncio.sleep(self._backoff())
                self._wake.set()
            except Exception as exc:  # a bug or a broken mirror: keep serving, keep retrying
                log.error("remote %s: %s", self._url, exc)
                await asyncio.sleep(self._backoff())
                self._wake.set()

    async def _fetch(self, *, catch_up: bool = False) -> None:
        mirror = self._mirror
        assert mirror is not None
        result = await self._call(lambda: mirror.fetch(catch_up=catch_up))
        self.stats.fetches += 1
        for ref in result.deleted:
            log.info("%s was deleted on the remote", ref.removeprefix(mirrors.HEADS))
        if result.main_moved or result.deleted:
            self._on_change()

    async def _push_round(self, waiting: list[asyncio.Future[None]]) -> bool:
        """Push everything unpushed; release `waiting` if it all went. False when something was rejected."""
        assert self._mirror is not None
        try:
            result = await self._call(self._mirror.push)
        except BaseException as exc:
            self._waiters[:0] = waiting  # not released: they wait for the next round
            if isinstance(exc, Exception):
                metrics.PUSH_FAILURES.inc()
            raise
        if result.merged is not None:
            self.stats.merges += 1
            log.warning(
                "someone else pushed to %s on the remote: merged their commits with ours (%s)",
                self._status_branch,
                result.merged[:12],
            )
        if result.rejected:
            metrics.PUSH_FAILURES.inc()
            self.stats.rejected += 1
            self._rejections += 1
            self._waiters[:0] = waiting
            refused = ", ".join(f"{ref} ({why})" for ref, why in sorted(result.rejected.items()))
            if self._rejections > MAX_QUICK_REJECTIONS:
                raise RemoteError(f"the remote keeps refusing the push of {refused}")
            log.info("push of %s rejected: fetching and trying again", refused)
            return False
        self._rejections = 0
        if result.pushed:
            self.stats.pushes += 1
        for future in waiting:
            if not future.done():
                future.set_result(None)
        return True

    def _backoff(self) -> float:
        self._failures += 1
        cap = max(self.options.fetch_interval, RETRY_BASE)
        return float(min(cap, RETRY_BASE * 2 ** min(self._failures - 1, 16)))

    def unreachable(self) -> str | None:
        """Why the remote cannot be reached right now (an outage under way), or None."""
        if self._down_since is None:
            return None
        down = time.monotonic() - self._down_since
        return f"the remote {self._url} is unreachable or refusing us (for {down:.0f}s)"

    def _outage(self, exc: Exception) -> None:
        """Log an outage once, when it starts; the retries that follow are debug lines."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "remote %s unreachable or refusing us: %s; checkpoints wait, committed in the mirror %s, "
                "and are pushed when it is back (retrying)",
                self._url,
                exc,
                self.options.mirror,
            )
        else:
            log.debug("remote %s still unreachable: %s", self._url, exc)

    def _recovered(self) -> None:
        self._failures = 0
        if self._down_since is not None:
            log.warning(
                "remote %s reachable again after %.1fs: everything committed meanwhile is pushed",
                self._url,
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    async def close(self, *, timeout: float = 10.0) -> None:
        """Stop the loop, try once more (within `timeout`) to push what is unpushed, close the mirror."""
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._mirror is not None:
            waiting, self._waiters = self._waiters, []
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it may lose a cancellation (waiting.py)
                    await self._push_round(waiting)
            except (StoreError, TimeoutError) as exc:
                log.warning("stopping with commits not pushed to %s (%s): pushed next start", self._url, exc)
            for future in self._waiters:
                if not future.done():
                    future.set_exception(StoreError("not pushed: serve is stopping"))
        if self._repo is not None:
            await self._call(self._repo.close)
        self._git.shutdown(wait=False)
