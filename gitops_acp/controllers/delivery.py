"""The responseUrl outbox: POST a finished task's answer to the URL its spec names, durably.

Once a task is terminal (FinalAnswer, Failed or Cancelled) and its spec has `responseUrl`, the
delivery is a small state machine kept in `status.delivery` and committed like every checkpoint:

    Pending ──POST──► Delivered (2xx; deliveredAt, statusCode)
       │  └── 408/429/5xx, connection errors: attempts+1, nextAttemptTime (backoff) ──► POST again
       └──── other 4xx, or too many attempts ──► Failed (lastError)
       └──── a URL `serve --policy` does not allow ──► Failed at once, no request (DESIGN §10)

The record is written before the first attempt, so a restart resumes the outbox. A crash between a
successful POST and its commit makes the POST happen again: delivery is at least once, and every
request carries an `Idempotency-Key` (the task's name and completion time) so a receiver can drop
the repeat.
"""

from __future__ import annotations

import random
from typing import Any

from gitops_acp.controllers.base import DONE, Context, Result, parse_rfc3339, rfc3339
from gitops_acp.resources.models import Task, TaskStatus

__all__ = ["deliver", "payload"]

_RNG = random.SystemRandom()
_RETRYABLE = frozenset({408, 429})


def payload(task: Task) -> dict[str, Any]:
    """The JSON body sent to responseUrl."""
    status = task.status or TaskStatus()
    return {
        "task": task.metadata.name,
        "agent": task.spec.agent_ref.name,
        "phase": str(status.phase),
        "output": status.output,
        "error": status.error,
        "completionTime": status.completion_time,
        "turns": status.turns,
    }


async def deliver(task: Task, ctx: Context) -> Result:
    """Move the task's delivery one step; return when to come back (a backoff) or DONE."""
    url = task.spec.response_url
    status = task.status or TaskStatus()
    if not url:
        return DONE
    record: dict[str, Any] = dict(status.delivery or {})
    if record.get("state") in ("Delivered", "Failed"):
        return DONE
    if not record:
        record = {"url": url, "state": "Pending", "attempts": 0}
        await _save(task, ctx, record)
    due = parse_rfc3339(record["nextAttemptTime"]) if record.get("nextAttemptTime") else 0.0
    if due > ctx.now():
        return Result(due - ctx.now(), progress=True)

    policy = ctx.settings.policy
    refused = policy.refuse_response_url(url) if policy is not None else None
    if refused is not None:  # not one request: the answer stays in the status file
        record.update(state="Failed", lastError=refused, nextAttemptTime=None)
        await _save(task, ctx, record)
        return DONE
    attempts = int(record.get("attempts", 0)) + 1
    key = f"{task.metadata.name}-{status.completion_time or ''}"
    try:
        code = await ctx.http.post_json(url, payload(task), headers={"Idempotency-Key": key}, timeout=30.0)
        error = None if 200 <= code < 300 else f"HTTP {code}"
    except OSError as exc:
        code, error = None, f"cannot reach {url}: {exc}"
    record = {**record, "attempts": attempts, "statusCode": code}
    if error is None:
        record.update(state="Delivered", deliveredAt=rfc3339(ctx.now()), nextAttemptTime=None, lastError=None)
        await _save(task, ctx, record)
        return DONE
    retryable = code is None or code >= 500 or code in _RETRYABLE
    if not retryable or attempts >= ctx.settings.max_delivery_attempts:
        record.update(state="Failed", lastError=error, nextAttemptTime=None)
        await _save(task, ctx, record)
        return DONE
    delay = min(ctx.settings.backoff_cap, ctx.settings.backoff_base * 2 ** (attempts - 1)) * _RNG.uniform(
        0.5, 1.0
    )
    record.update(lastError=error, nextAttemptTime=rfc3339(ctx.now() + delay))
    await _save(task, ctx, record)
    return Result(delay, progress=True)


async def _save(task: Task, ctx: Context, record: dict[str, Any]) -> None:
    status = task.status or TaskStatus()
    record = {k: v for k, v in record.items() if v is not None}
    saved = status.model_copy(update={"delivery": record})
    await ctx.state.checkpoint(task.model_copy(update={"status": saved}))
