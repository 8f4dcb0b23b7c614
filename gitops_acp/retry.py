"""`Retry-After` read once for every HTTP client here (LLM endpoints, forges, HumanLayer, responseUrl).

RFC 9110 §10.2.3 allows seconds or an HTTP date; OpenAI-style servers also send `retry-after-ms`.
The answer is seconds from `now`, never negative; None when the header is absent or unreadable (the
caller's own backoff applies then).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

__all__ = ["retry_after"]


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait that `headers` ask for (`retry-after-ms`, else `retry-after`), or None."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
