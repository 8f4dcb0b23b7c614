"""What every forge client shares: the protocol, the rate-limit budget, and one careful HTTP loop.

    request ──► budget says wait? ── short (≤ max_wait): sleep ── long: TemporaryForgeError(retry_after)
       │
       ▼ response ──► rate-limit headers recorded (X-RateLimit-*, RateLimit-*, Retry-After)
          ├─ 429, or 403 that is a (secondary) rate limit ──► wait as told, try again
          ├─ 5xx, timeout, connection error ──► exponential backoff, try again (bounded)
          ├─ 401 / 403 / 404 / 4xx ──► PermanentForgeError naming what to fix
          └─ 2xx ──► the JSON body

Polling a pull request's state is gated here too: `poll_state` asks the forge at most once per
`poll_interval` per pull request, and less often when the budget runs low; a webhook calls
`invalidate()` so the next look is fresh (webhooks are the fast path, polling the safety net).
The token is only ever put in a request header: no message, log line or repr carries it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import httpx2

from gitops_acp import retry
from gitops_acp.errors import ForgeError, PermanentForgeError, TemporaryForgeError

__all__ = ["ForgeClient", "HttpForge", "MergeInfo", "PRState", "PullRequest", "RateBudget"]


class PRState(StrEnum):
    """Where a pull request is, in every forge's terms."""

    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"  # closed without merging


@dataclass(frozen=True)
class PullRequest:
    """A pull request (GitLab: merge request) as the reconciler records it."""

    number: int  # GitHub/Gitea `number`, GitLab `iid`
    url: str  # the page a person opens
    state: PRState = PRState.OPEN


@dataclass(frozen=True)
class MergeInfo:
    """What the forge says about who decided a pull request (DESIGN §10 "Who approved")."""

    forge: str  # github | gitea | gitlab: the start of `decidedVia`
    number: int
    state: PRState
    merged_by: str | None  # the login of who merged it (None: not merged, or the forge does not say)
    approved_by: tuple[str, ...] = ()  # logins whose latest review approves it (GitLab: approvals)
    merge_commit: str | None = None  # the commit the merge made on the base (None: not merged, unknown)


@dataclass
class RateBudget:
    """One forge endpoint's request budget, as its last responses reported it (shared by its clients)."""

    limit: int | None = None  # requests per window
    remaining: int | None = None  # left in this window
    reset_at: float | None = None  # when the window resets (epoch seconds)
    blocked_until: float = 0.0  # a 429 / secondary limit said: nothing before then

    def observe(self, headers: Mapping[str, str], status: int, body: str, now: float) -> float | None:
        """Record a response's rate-limit headers; return how long to wait if it was rate-limited."""
        for prefix in ("x-ratelimit-", "ratelimit-"):  # GitHub/Gitea, GitLab
            if (value := _number(headers.get(prefix + "limit"))) is not None:
                self.limit = int(value)
            if (value := _number(headers.get(prefix + "remaining"))) is not None:
                self.remaining = int(value)
            if (value := _number(headers.get(prefix + "reset"))) is not None:
                self.reset_at = value
        limited = status == 429 or (
            status == 403
            and ("retry-after" in headers or self.remaining == 0 or "rate limit" in body.lower())
        )
        if not limited:
            if self.remaining == 0 and self.reset_at is not None and self.reset_at > now:
                self.blocked_until = max(self.blocked_until, self.reset_at)
            return None
        wait = retry.retry_after(headers, now=now)
        if wait is None and self.remaining == 0 and self.reset_at is not None:
            wait = self.reset_at - now
        if wait is None:
            wait = 60.0  # GitHub's advice for a secondary limit without a header
        wait = max(wait, 0.0)
        self.blocked_until = max(self.blocked_until, now + wait)
        return wait

    def wait_time(self, now: float) -> float:
        """Seconds to wait before the next request may go out."""
        return max(0.0, self.blocked_until - now)

    def poll_interval(self, now: float, *, base: float, pending: int) -> float:
        """How often each of `pending` pull requests may be polled without eating the budget.

        At most half of what is left in the window goes to polling (the rest opens pull requests);
        with less than 10 requests left, polling waits for the window to reset.
        """
        interval = base
        if self.remaining is not None and self.reset_at is not None and self.reset_at > now:
            window = self.reset_at - now
            if self.remaining < 10:
                return max(interval, window)
            per_second = self.remaining / 2 / window
            interval = max(interval, max(pending, 1) / per_second)
        return max(interval, self.wait_time(now))


class ForgeClient(Protocol):
    """Pull requests on one repository of one forge."""

    forge: str
    repository: str

    async def validate(self) -> str:
        """Check the token and the repository; return a short description of what was found."""
        ...

    async def open_pull_request(
        self, *, head: str, base: str, title: str, body: str, labels: list[str], reviewers: list[str]
    ) -> PullRequest:
        """Open a pull request from `head` into `base`, with labels and reviewers."""
        ...

    async def find_pull_request(self, head: str) -> PullRequest | None:
        """The pull request (any state) whose head is `head`, or None: found again after a crash."""
        ...

    async def pull_request_state(self, number: int) -> PRState:
        """Ask the forge whether the pull request is open, merged or closed."""
        ...

    async def poll_state(self, number: int) -> tuple[PRState, float]:
        """The state (asked at most once per poll interval) and seconds until it is worth asking again."""
        ...

    def invalidate(self) -> None:
        """Forget polled states: a webhook said something changed."""
        ...

    async def merge_info(self, number: int) -> MergeInfo:
        """Ask the forge who merged the pull request and whose reviews approve it (never cached)."""
        ...

    async def comment(self, number: int, text: str) -> None:
        """Add a comment to the pull request's conversation."""
        ...

    async def close_pull_request(self, number: int) -> None:
        """Close the pull request without merging (closing a closed one is fine)."""
        ...


@dataclass
class HttpForge:
    """The HTTP loop and the poll gate every forge client shares; subclasses speak one forge's API."""

    forge: str
    repository: str
    api_url: str
    token: str = field(repr=False)
    http: httpx2.AsyncClient = field(repr=False)
    budget: RateBudget = field(default_factory=RateBudget)
    poll_base: float = 60.0  # seconds between two polls of one pull request, at best
    max_wait: float = 10.0  # a rate-limit wait longer than this is handed back to the reconciler
    attempts: int = 4  # tries of one request through 5xx / connection errors
    timeout: float = 30.0
    clock: Callable[[], float] = time.time
    _states: dict[int, tuple[float, PRState]] = field(default_factory=dict, repr=False)

    def auth_headers(self) -> dict[str, str]:
        """The forge's authentication header."""
        raise NotImplementedError

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """Send one API request through the budget; return the decoded JSON (None: 404 with missing_ok)."""
        url = self.api_url.rstrip("/") + path
        last = ""
        for attempt in range(self.attempts):
            wait = self.budget.wait_time(self.clock())
            if wait > self.max_wait:
                raise TemporaryForgeError(
                    f"{self.forge} rate limit: the next request is allowed in {wait:.0f}s", retry_after=wait
                )
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                response = await self.http.request(
                    method,
                    url,
                    json=body,
                    params=dict(params) if params else None,
                    headers={**self.auth_headers(), "Accept": "application/json"},
                    timeout=self.timeout,
                )
            except httpx2.HTTPError as exc:
                last = f"{self.forge} {self.api_url} unreachable: {type(exc).__name__}"
                await self._backoff(attempt)
                continue
            headers = {k.lower(): v for k, v in response.headers.items()}
            text = response.text
            limited = self.budget.observe(headers, response.status_code, text, self.clock())
            if limited is not None:
                last = f"{self.forge} rate limit ({response.status_code}), retry in {limited:.0f}s"
                continue
            if response.status_code >= 500:
                last = f"{self.forge} {method} {path}: {response.status_code} {_message(text)}"
                await self._backoff(attempt)
                continue
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code >= 400:
                raise self._refused(method, path, response.status_code, text)
            return response.json() if text.strip() else None
        raise TemporaryForgeError(last or f"{self.forge} {method} {path} failed", retry_after=self.max_wait)

    async def _backoff(self, attempt: int) -> None:
        """Wait before the next try of a failed request (not after the last one)."""
        if attempt + 1 < self.attempts:
            await asyncio.sleep(min(8.0, 0.5 * 2**attempt))

    def _refused(self, method: str, path: str, status: int, text: str) -> ForgeError:
        where = f"{self.forge} {self.repository}"
        if status == 401:
            return PermanentForgeError(f"{where}: the token was refused (401): check the secret in tokenFrom")
        if status == 403:
            return PermanentForgeError(
                f"{where}: forbidden (403) on {method} {path}: the token lacks a permission "
                f"({_message(text)})"
            )
        if status == 404:
            return PermanentForgeError(
                f"{where}: not found (404) on {method} {path}: check git.repository and that the token "
                "can see the repository"
            )
        return PermanentForgeError(f"{where}: {method} {path} refused ({status}): {_message(text)}")

    async def poll_state(self, number: int) -> tuple[PRState, float]:
        now = self.clock()
        interval = self.budget.poll_interval(now, base=self.poll_base, pending=len(self._states) or 1)
        seen = self._states.get(number)
        if seen is not None and now - seen[0] < interval:
            return seen[1], interval - (now - seen[0])
        state = await self.pull_request_state(number)
        self._states[number] = (self.clock(), state)
        return state, interval

    def remember(self, number: int, state: PRState) -> None:
        """Record a state just learned (an opened pull request is open: no need to ask)."""
        self._states[number] = (self.clock(), state)

    def invalidate(self) -> None:
        self._states.clear()

    # What each forge's module implements.

    async def validate(self) -> str:
        raise NotImplementedError

    async def open_pull_request(
        self, *, head: str, base: str, title: str, body: str, labels: list[str], reviewers: list[str]
    ) -> PullRequest:
        raise NotImplementedError

    async def find_pull_request(self, head: str) -> PullRequest | None:
        raise NotImplementedError

    async def pull_request_state(self, number: int) -> PRState:
        raise NotImplementedError

    async def merge_info(self, number: int) -> MergeInfo:
        raise NotImplementedError

    async def comment(self, number: int, text: str) -> None:
        raise NotImplementedError

    async def close_pull_request(self, number: int) -> None:
        raise NotImplementedError


def approving_reviewers(reviews: Any) -> tuple[str, ...]:
    """The logins whose latest deciding review (GitHub, Gitea) approves, in the order they reviewed.

    Reviews come oldest first. A comment-only review changes nothing; a later request for changes
    or a dismissal takes an approval back (as the forge's own merge rules count them).
    """
    latest: dict[str, bool] = {}
    for review in reviews or []:
        login = (review.get("user") or {}).get("login")
        state = str(review.get("state") or "").upper()
        if not login or state in ("COMMENTED", "COMMENT", "PENDING", ""):
            continue
        latest.pop(login, None)  # keep the order of each login's latest decision
        latest[login] = state == "APPROVED" and not review.get("dismissed") and not review.get("stale")
    return tuple(login for login, approved in latest.items() if approved)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _message(text: str) -> str:
    """The forge's error message from a JSON error body, else the start of the body."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(data, dict):
        for key in ("message", "error", "errors"):
            if key in data:
                return str(data[key])[:200]
    return text.strip()[:200]
