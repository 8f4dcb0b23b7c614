"""The Prometheus metrics of DESIGN §11, in a registry of our own, and the few calls that feed them.

    controllers/kinds/task.py, llm.py ── llm_request(...) ──► llm_requests_total, _seconds, _tokens_total
    controllers/mcptools.py ─────────── tool_call(...) ────► tool_calls_total, tool_call_seconds
    store/status.StatusWriter ────────── committed(...) ────► checkpoint_commits_total, _seconds,
                                                              tasks{phase}, approval_wait_seconds
    reactor/queue.WorkQueue ──────────── watch_queue(q) ────► queue_depth (read at scrape time)
    reactor/remote.RemoteSync ────────── PUSH_FAILURES.inc()
    reactor/webhooks ─────────────────── exposition() ─────► GET /metrics

The reconciler commits about a thousand checkpoints a second, so every update here is a dict
lookup and an increment on a labelled child made once and kept (prometheus-client's `.labels()`
costs a lock and a tuple per call). `gitops_acp_tasks{phase}` never scans the tasks: it is set
from the status branch's tip at start-up (`tasks_at_start`) and then moved by each landed
checkpoint's phase change (old -1, new +1; archived and deleted tasks leave it). Labels never
name a task or a tool call: their number is unbounded, and each label value is a time series.

This module imports nothing of gitops_acp's layers; every layer may import it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = [
    "CONTENT_TYPE",
    "PUSH_FAILURES",
    "REGISTRY",
    "committed",
    "exposition",
    "llm_request",
    "tasks_at_start",
    "tool_call",
    "watch_queue",
]

REGISTRY = CollectorRegistry()
#: The classic text format every Prometheus parses (our names need none of 1.0.0's UTF-8 quoting).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: From 5 ms (a local model, the stub) to 2 minutes (the default LLM timeout).
_LLM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
#: A group commit takes ~1 ms on a local disk; a slow disk or a full batch tens of ms.
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: People answer in minutes to days.
_WAIT_BUCKETS = (1, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)

TASKS = Gauge(
    "gitops_acp_tasks", "Tasks in the tip of the status branch, by phase", ["phase"], registry=REGISTRY
)
CHECKPOINT_COMMITS = Counter(
    "gitops_acp_checkpoint_commits", "Commits the status writer put on the status branch", registry=REGISTRY
)
CHECKPOINT_COMMIT_SECONDS = Histogram(
    "gitops_acp_checkpoint_commit_seconds",
    "Seconds from a group commit's start to its ref update",
    buckets=_COMMIT_BUCKETS,
    registry=REGISTRY,
)
LLM_REQUESTS = Counter(
    "gitops_acp_llm_requests",
    "Chat completion requests, by LLM resource and outcome (success, temporary_error, permanent_error)",
    ["llm", "outcome"],
    registry=REGISTRY,
)
LLM_REQUEST_SECONDS = Histogram(
    "gitops_acp_llm_request_seconds",
    "Seconds per chat completion request, by LLM resource",
    ["llm"],
    buckets=_LLM_BUCKETS,
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "gitops_acp_llm_tokens",
    "Tokens the LLM reported in its answers' usage, by LLM resource and type (prompt, completion)",
    ["llm", "type"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "gitops_acp_tool_calls",
    "MCP tool invocations, by MCP server, tool and outcome (success, error)",
    ["server", "tool", "outcome"],
    registry=REGISTRY,
)
TOOL_CALL_SECONDS = Histogram(
    "gitops_acp_tool_call_seconds",
    "Seconds per MCP tool invocation, by MCP server",
    ["server"],
    buckets=_LLM_BUCKETS,
    registry=REGISTRY,
)
APPROVAL_WAIT_SECONDS = Histogram(
    "gitops_acp_approval_wait_seconds",
    "Seconds a tool call waited for a person (approval or answer), from the commit that made it wait "
    "to the commit that records the decision",
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "gitops_acp_queue_depth", "Resources queued for a reconcile and waiting for a worker", registry=REGISTRY
)
PUSH_FAILURES = Counter(
    "gitops_acp_push_failures",
    "Pushes to the remote that failed (unreachable) or were rejected",
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The registry in Prometheus' text format (`GET /metrics`)."""
    return generate_latest(REGISTRY)


# -- LLM requests and tool calls: children made once per label value --------------------------


class _LLMSeries:
    """One LLM resource's children."""

    __slots__ = ("completion", "outcomes", "prompt", "seconds")

    def __init__(self, llm: str) -> None:
        self.outcomes: dict[str, Any] = {}
        self.prompt = LLM_TOKENS.labels(llm, "prompt")
        self.completion = LLM_TOKENS.labels(llm, "completion")
        self.seconds = LLM_REQUEST_SECONDS.labels(llm)


_llms: dict[str, _LLMSeries] = {}
_tools: dict[tuple[str, str, str], Any] = {}
_tool_seconds: dict[str, Any] = {}


def llm_request(
    llm: str, seconds: float, outcome: str, *, prompt_tokens: int = 0, completion_tokens: int = 0
) -> None:
    """Count one chat completion request of LLM resource `llm` (outcome: success, temporary_error, ...)."""
    series = _llms.get(llm)
    if series is None:
        series = _llms[llm] = _LLMSeries(llm)
    counter = series.outcomes.get(outcome)
    if counter is None:
        counter = series.outcomes[outcome] = LLM_REQUESTS.labels(llm, outcome)
    counter.inc()
    series.seconds.observe(seconds)
    if prompt_tokens:
        series.prompt.inc(prompt_tokens)
    if completion_tokens:
        series.completion.inc(completion_tokens)


def tool_call(server: str, tool: str, seconds: float, *, ok: bool) -> None:
    """Count one MCP tool invocation (`ok`: the tool answered without isError)."""
    key = (server, tool, "success" if ok else "error")
    counter = _tools.get(key)
    if counter is None:
        counter = _tools[key] = TOOL_CALLS.labels(*key)
    counter.inc()
    histogram = _tool_seconds.get(server)
    if histogram is None:
        histogram = _tool_seconds[server] = TOOL_CALL_SECONDS.labels(server)
    histogram.observe(seconds)


# -- checkpoints: the tasks gauge and the waits for people, from phase changes -----------------


class Moved(Protocol):
    """What a landed change says (store/status.Change has these fields)."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def old_phase(self) -> str: ...
    @property
    def new_phase(self) -> str: ...
    @property
    def document(self) -> dict[str, Any] | None: ...


#: Not phases: a resource without status yet, or leaving the tip.
_NOT_A_PHASE = frozenset({"-", "Deleted", "Archived"})
#: Tool call phases that wait for a person.
_WAITING = frozenset({"AwaitingHumanApproval", "AwaitingHumanInput"})
_phases: dict[str, Any] = {}
#: Tool calls waiting for a person in this process: name -> when the wait was committed.
_waiting_since: dict[str, float] = {}


def _phase(phase: str) -> Any:
    child = _phases.get(phase)
    if child is None:
        child = _phases[phase] = TASKS.labels(phase)
    return child


def tasks_at_start(documents: Iterable[Mapping[str, Any]], phases: Iterable[str] = ()) -> None:
    """Set `gitops_acp_tasks` from the status documents at the tip (start-up reads them anyway), and
    the `phases` of the Tasks it knew without reading their files."""
    counts: dict[str, int] = {}
    for document in documents:
        if document.get("kind") != "Task":
            continue
        phase = (document.get("status") or {}).get("phase")
        if phase:
            counts[phase] = counts.get(phase, 0) + 1
    for phase in phases:
        counts[phase] = counts.get(phase, 0) + 1
    for phase in set(_phases) | set(counts):
        _phase(phase).set(counts.get(phase, 0))


def committed(seconds: float, changes: Iterable[Moved]) -> None:
    """A group commit landed in `seconds`, with these changes: count it, move the gauges."""
    CHECKPOINT_COMMITS.inc()
    CHECKPOINT_COMMIT_SECONDS.observe(seconds)
    for change in changes:
        old, new = change.old_phase, change.new_phase
        if old == new:
            continue
        kind = change.kind
        if kind == "Task":
            if old not in _NOT_A_PHASE:
                _phase(old).dec()
            if new not in _NOT_A_PHASE:
                _phase(new).inc()
        elif kind == "ToolCall" and (old in _WAITING or new in _WAITING):
            _waited(change, old, new)


def _waited(change: Moved, old: str, new: str) -> None:
    now = time.time()
    if new in _WAITING:
        _waiting_since.setdefault(change.name, now)
        return
    since = _waiting_since.pop(change.name, None)
    if new in _NOT_A_PHASE:
        return  # archived or removed while waiting: nobody decided
    if since is None:  # it began waiting before this process started: its status says when
        since = _started(change.document)
    if since is not None:
        APPROVAL_WAIT_SECONDS.observe(max(0.0, now - since))


def _started(document: dict[str, Any] | None) -> float | None:
    text = ((document or {}).get("status") or {}).get("startTime")
    if not isinstance(text, str):
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- the work queue: read at scrape time, nothing on the hot path ------------------------------


class _Queue(Protocol):
    @property
    def depth(self) -> int: ...


def watch_queue(queue: _Queue) -> None:
    """Report `queue.depth` as `gitops_acp_queue_depth` (the newest queue of the process; weakly held)."""
    ref = weakref.ref(queue)

    def depth() -> float:
        current = ref()
        return float(current.depth) if current is not None else 0.0

    QUEUE_DEPTH.set_function(depth)
