"""HTTP as the controllers see it: JSON in, status and JSON out, through one injected client.

Used for `responseUrl` deliveries and HumanLayer's API (forges have their own clients in
`humans/forges/`, on the same connection pool). The reactor builds one `httpx2.AsyncClient` and
closes it; a test passes a client with a mock transport, or one pointed at a server on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2

from gitops_acp import retry

__all__ = ["Http", "HttpReply"]


@dataclass(frozen=True)
class HttpReply:
    """An HTTP response as controllers see it: the status, the JSON body (None if not JSON), Retry-After."""

    status: int
    body: Any
    retry_after: float | None = None  # seconds, when the server sent Retry-After


class Http:
    """JSON requests through one client; a failure to reach the server is an OSError."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        """Send everything through `client` (its owner closes it)."""
        self.client = client

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str],
        timeout: float,
    ) -> HttpReply:
        """Send a request (JSON body, if any); raise OSError when the server can't be reached."""
        try:
            response = await self.client.request(method, url, json=body, headers=headers, timeout=timeout)
        except httpx2.HTTPError as exc:
            # The exception's text may carry the URL, never the headers: no credential leaks here.
            raise OSError(str(exc) or type(exc).__name__) from exc
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = None
        return HttpReply(response.status_code, parsed, retry.retry_after(response.headers))

    async def post_json(
        self, url: str, body: dict[str, Any], *, headers: dict[str, str], timeout: float
    ) -> int:
        """POST `body` as JSON and return the HTTP status; raise OSError when the server can't be reached."""
        try:
            response = await self.client.post(url, json=body, headers=headers, timeout=timeout)
        except httpx2.HTTPError as exc:
            raise OSError(str(exc) or type(exc).__name__) from exc
        return response.status_code
