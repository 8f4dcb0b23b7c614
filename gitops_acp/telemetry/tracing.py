"""OpenTelemetry traces of DESIGN §11: one trace per task, off unless the `OTEL_*` variables ask.

    serve starts ── configure(): OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_*ENDPOINT set? ── no: off
                                 (every call below returns at its first line; no SDK is imported)
    a task's first checkpoint ── controllers/state.py stamps status.spanContext {traceID, spanID}:
                                 a new trace, or the trace of its `acp.gitops.dev/traceparent`
    each LLM request ───────────  LLMCall: a live `chat <model>` span (GenAI semantic conventions),
                                 child of the task's span, rebuilt from status.spanContext
    landed checkpoints ─────────  landed(): `execute_tool <tool>` when a tool call ends, `wait for
                                 approval` / `wait for human input` when a person decided, and the
                                 task's own span when the task ends (with the ids in its status)
    serve stops (SIGTERM) ──────  shutdown(): the batch of spans not yet exported is flushed

Why spans are made from committed state: a task outlives processes. Its root span cannot stay
open across a restart, so it is emitted when the task ends, with the trace and span ids its first
checkpoint committed; everything in between (this process's or a killed one's) already named
those ids as parent. Spans of a tool call and of a wait for a person are emitted the same way,
from the times in their status, when the checkpoint that ends them lands. A tool call's span id
is derived from its task's trace id and its own name, so a delegated child task's trace can link
to the call that delegated it without storing anything more.

This module imports nothing of gitops_acp's layers: it reads resources by their attribute names.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gitops_acp.errors import UserError
from gitops_acp.telemetry import metrics

__all__ = [
    "ANNOTATION_TRACEPARENT",
    "LLMCall",
    "configure",
    "enabled",
    "landed",
    "new_span_context",
    "parse_traceparent",
    "shutdown",
]

log = logging.getLogger("gitops_acp")

#: A Task annotation holding a W3C traceparent: the task's trace becomes a child of that context.
ANNOTATION_TRACEPARENT = "acp.gitops.dev/traceparent"
#: The label a delegated child task carries: the tool call that created it (resources/meta.py).
_LABEL_PARENT_TOOLCALL = "acp.gitops.dev/parent-toolcall"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TERMINAL_TASK = frozenset({"FinalAnswer", "Failed", "Cancelled"})
_TERMINAL_CALL = frozenset(
    {"Succeeded", "Failed", "ToolCallRejected", "ErrorRequestingHumanApproval", "ErrorRequestingHumanInput"}
)
_WAITS = {"AwaitingHumanApproval": "wait for approval", "AwaitingHumanInput": "wait for human input"}
#: GenAI semantic conventions' gen_ai.provider.name for our LLM providers.
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "mistral": "mistral_ai",
    "google": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
}

_tracer: Any = None  # an SDK Tracer when on; None: off
_provider: Any = None
#: (trace id, span id) the next span started on this context must take (see _ids_generator).
_forced: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("forced_ids", default=None)
#: Tool calls waiting for a person in this process: name -> when the wait was committed.
_waiting_since: dict[str, float] = {}


def enabled() -> bool:
    """Whether traces are on (configure() found an exporter to send them to)."""
    return _tracer is not None


def _wanted(environ: dict[str, str]) -> str | None:
    """The exporter the standard variables ask for, or None: tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = ",".join(
        n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").lower().split(",") if n.strip()
    )
    if exporter:
        return None if exporter == "none" else exporter
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


def configure(environ: dict[str, str] | None = None, *, exporter: Any = None) -> bool:
    """Turn traces on when the `OTEL_*` variables ask for them; return whether they are on.

    `exporter`: a span exporter to use instead (the tests' in-memory one), exported synchronously.
    Raises UserError naming the variable for an exporter this installation cannot provide.
    """
    global _tracer, _provider
    shutdown()  # a second configuration replaces the first
    environ = dict(os.environ if environ is None else environ)
    wanted = "given" if exporter is not None else _wanted(environ)
    if wanted is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from gitops_acp import __version__

    if exporter is not None:
        processors: list[Any] = [SimpleSpanProcessor(exporter)]
    else:  # a list is allowed ("otlp,console"); a wrong name stops serve before anything is sent
        processors = [BatchSpanProcessor(_exporter(name.strip(), environ)) for name in wanted.split(",")]
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read here by the SDK; ours only by default.
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "gitops-acp"}))
    provider = TracerProvider(resource=resource, id_generator=_ids_generator())
    for processor in processors:
        provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("gitops_acp", __version__)
    return True


def _exporter(name: str, environ: dict[str, str]) -> Any:
    if name == "otlp":
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        if protocol and protocol != "http/protobuf":
            raise UserError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf is supported "
                "(point it at the collector's OTLP/HTTP port, usually 4318)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The SDK reads the rest (headers, timeout, TLS) itself; the endpoint is taken from
        # `environ` here so that what configure() was given is what is used.
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        return OTLPSpanExporter(endpoint=endpoint or None)
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise UserError(f"OTEL_TRACES_EXPORTER={name}: expected otlp, console or none")


def shutdown() -> None:
    """Export the spans not sent yet and stop (serve's shutdown; a SIGKILL loses them)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    _waiting_since.clear()
    if provider is not None:
        try:
            provider.shutdown()
        except Exception as exc:  # an exporter failing at exit must not fail the shutdown
            log.warning("traces: flushing at shutdown failed: %s", exc)


def _ids_generator() -> Any:
    """The SDK's random ids, except for a span started under `_forced` (a task's committed ids)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class Ids(RandomIdGenerator):
        def generate_span_id(self) -> int:
            forced = _forced.get()
            return forced[1] if forced is not None else super().generate_span_id()

        def generate_trace_id(self) -> int:
            forced = _forced.get()
            return forced[0] if forced is not None else super().generate_trace_id()

    return Ids()


# -- span contexts ------------------------------------------------------------------------------


def parse_traceparent(value: object) -> tuple[str, str] | None:
    """(trace id, span id) of a valid W3C traceparent (version 00), else None."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(1), match.group(2)


def new_span_context(annotations: dict[str, str] | None) -> tuple[str, str] | None:
    """The ids a new task's trace gets (None when traces are off): its traceparent's trace, or a new one."""
    if _tracer is None:
        return None
    parent = parse_traceparent((annotations or {}).get(ANNOTATION_TRACEPARENT))
    trace_id = parent[0] if parent is not None else f"{random.getrandbits(128) or 1:032x}"
    return trace_id, f"{random.getrandbits(64) or 1:016x}"


def _ids(obj: Any) -> tuple[int, int] | None:
    """A resource's status.spanContext as integers, or None."""
    status = getattr(obj, "status", None)
    context = getattr(status, "span_context", None)
    if context is None:
        return None
    try:
        trace_id, span_id = int(context.trace_id, 16), int(context.span_id, 16)
    except (TypeError, ValueError):
        return None
    return (trace_id, span_id) if trace_id and span_id else None


def _parent(trace_id: int, span_id: int) -> Any:
    """An OpenTelemetry context whose current span is (trace_id, span_id), e.g. a task's."""
    from opentelemetry import trace

    span_context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(1))
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def _call_span_id(trace_id: int, call: str) -> int:
    """A tool call's span id: derived from its task's trace and its name (the same in every process)."""
    digest = hashlib.sha256(f"{trace_id:032x}/{call}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def _ns(text: object) -> int | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


# -- live spans: LLM requests ---------------------------------------------------------------------


class LLMCall:
    """Around one chat completion request: its metrics, and its span when the task has a trace.

        with tracing.LLMCall(llm_name, config, task) as call:
            completion = await ctx.llm.complete(config, messages, tools)
            call.answered(completion)

    An exception leaving the block counts as the outcome its `retryable` says (`temporary_error`
    or `permanent_error`; `cancelled` for a request abandoned because the task went away).
    """

    __slots__ = ("_completion", "_config", "_finish", "_llm", "_prompt", "_span", "_started", "_task")

    def __init__(self, llm: str, config: Any, task: Any = None) -> None:
        self._llm = llm
        self._config = config
        self._task = task
        self._span: Any = None
        self._prompt = 0
        self._completion = 0
        self._finish: str | None = None

    def __enter__(self) -> LLMCall:
        self._started = time.perf_counter()
        if _tracer is not None and self._task is not None:
            self._span = _llm_span(self._config, self._task)
        return self

    def answered(self, completion: Any) -> None:
        """Record what the answer reported (usage, finish reason)."""
        self._prompt = getattr(completion, "prompt_tokens", 0) or 0
        self._completion = getattr(completion, "completion_tokens", 0) or 0
        self._finish = getattr(completion, "finish_reason", None)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        seconds = time.perf_counter() - self._started
        if exc is None:
            outcome = "success"
        elif not isinstance(exc, Exception):
            outcome = "cancelled"
        else:
            outcome = "temporary_error" if getattr(exc, "retryable", False) else "permanent_error"
        metrics.llm_request(
            self._llm, seconds, outcome, prompt_tokens=self._prompt, completion_tokens=self._completion
        )
        span = self._span
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        if exc is None:
            span.set_attribute("gen_ai.usage.input_tokens", self._prompt)
            span.set_attribute("gen_ai.usage.output_tokens", self._completion)
            if self._finish:
                span.set_attribute("gen_ai.response.finish_reasons", [self._finish])
        else:
            code = getattr(exc, "status_code", None)  # an HTTP status, as the conventions ask
            span.set_attribute("error.type", str(code) if code else type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
        span.end()


def _llm_span(config: Any, task: Any) -> Any:
    ids = _ids(task)
    if ids is None:
        return None
    from opentelemetry.trace import SpanKind

    model = getattr(config, "model", None) or ""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _provider_name(config),
        "gen_ai.request.model": model,
        "gen_ai.conversation.id": task.metadata.name,
    }
    for name, attribute in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("top_k", "gen_ai.request.top_k"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
    ):
        value = getattr(config, name, None)
        if value is not None:
            attributes[attribute] = value
    base = getattr(config, "base_url", None)
    if isinstance(base, str):
        from urllib.parse import urlsplit

        url = urlsplit(base)
        if url.hostname:
            attributes["server.address"] = url.hostname
            attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    return _tracer.start_span(
        f"chat {model}", context=_parent(*ids), kind=SpanKind.CLIENT, attributes=attributes
    )


def _provider_name(config: Any) -> str:
    if getattr(config, "api_type", None) in ("AZURE", "AZURE_AD"):
        return "azure.ai.openai"
    provider = str(getattr(config, "provider", "openai"))
    return _PROVIDERS.get(provider, provider)


# -- spans from landed checkpoints: tool calls, waits for people, tasks ------------------------------

Lookup = Callable[[Any, str], Any]  # (kind, name) -> the observed resource, or None


def landed(kind: str, old: Any, new: Any, observed: Lookup) -> None:
    """A checkpoint of (kind, old → new) landed: emit the spans it ends. Returns at once when off."""
    if _tracer is None or new is None:
        return
    try:
        if kind == "ToolCall":
            _toolcall_landed(old, new, observed)
        elif kind == "Task":
            _task_landed(old, new, observed)
    except Exception as exc:  # a span must never stop a checkpoint's bookkeeping
        log.warning("traces: no span for %s/%s: %s", kind, new.metadata.name, exc)


def _phase(obj: Any) -> str | None:
    status = getattr(obj, "status", None)
    phase = getattr(status, "phase", None)
    return str(phase) if phase else None


def _task_ids_of_call(call: Any, observed: Lookup) -> tuple[int, int] | None:
    return _ids(observed("Task", call.spec.task_ref.name))


def _toolcall_landed(old: Any, new: Any, observed: Lookup) -> None:
    was, now = _phase(old), _phase(new)
    name = new.metadata.name
    if now in _WAITS and was not in _WAITS:
        _waiting_since.setdefault(name, time.time())
    if was == now:
        return
    task = _task_ids_of_call(new, observed)
    if task is None:
        return
    trace_id, task_span = task
    call_span = _call_span_id(trace_id, name)
    if was in _WAITS and now not in _WAITS:
        # When the wait began: the status says (it is set on asking), else when this process saw it.
        since = _waiting_since.pop(name, None)
        start = _ns(new.status.start_time) or (int(since * 1e9) if since is not None else None)
        approval = getattr(new.status, "approval", None)
        end = _ns(getattr(approval, "decided_at", None)) or time.time_ns()
        if start is not None:
            _emit(
                _WAITS[was],
                trace_id=trace_id,
                span_id=None,
                parent=(trace_id, call_span),
                start=start,
                end=max(start, end),
                attributes={"acp.toolcall.name": name, "acp.toolcall.phase": now or ""},
            )
    if now in _TERMINAL_CALL and was not in _TERMINAL_CALL:
        status = new.status
        start = _ns(new.metadata.annotations.get("acp.gitops.dev/first-checkpoint")) or _ns(status.start_time)
        end = _ns(status.completion_time) or time.time_ns()
        tool = new.spec.tool_ref.name
        _emit(
            f"execute_tool {tool}",
            trace_id=trace_id,
            span_id=call_span,
            parent=(trace_id, task_span),
            start=start or end,
            end=end,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.tool.call.id": new.spec.tool_call_id,
                "gen_ai.tool.type": "function",
                "acp.toolcall.name": name,
                "acp.toolcall.type": str(new.spec.tool_type or ""),
                "acp.toolcall.phase": now,
            },
            error=None if now in ("Succeeded", "ToolCallRejected") else (status.error or now),
        )


def _task_landed(old: Any, new: Any, observed: Lookup) -> None:
    was, now = _phase(old), _phase(new)
    if now not in _TERMINAL_TASK or was in _TERMINAL_TASK:
        return
    ids = _ids(new)
    if ids is None:
        return
    trace_id, span_id = ids
    status = new.status
    end = _ns(status.completion_time) or time.time_ns()
    start = _ns(new.metadata.annotations.get("acp.gitops.dev/first-checkpoint")) or _ns(status.start_time)
    parent = parse_traceparent(new.metadata.annotations.get(ANNOTATION_TRACEPARENT))
    links: list[tuple[int, int]] = []
    delegated_by = new.metadata.labels.get(_LABEL_PARENT_TOOLCALL)
    if delegated_by:
        call = observed("ToolCall", delegated_by)
        parent_task = _task_ids_of_call(call, observed) if call is not None else None
        if parent_task is not None:
            links.append((parent_task[0], _call_span_id(parent_task[0], delegated_by)))
    usage = getattr(status, "usage", None)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": new.spec.agent_ref.name,
        "gen_ai.conversation.id": new.metadata.name,
        "acp.task.name": new.metadata.name,
        "acp.task.phase": now,
        "acp.task.turns": getattr(status, "turns", 0),
    }
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
    follow_up = getattr(status, "follow_ups_applied", 0) or 0
    if follow_up:  # a later exchange of a conversation (DESIGN §12): its own span, under the task's
        attributes["acp.task.follow_up"] = follow_up
        _emit(
            f"invoke_agent {new.spec.agent_ref.name} (follow-up {follow_up})",
            trace_id=trace_id,
            span_id=None,
            parent=(trace_id, span_id),
            start=_ns(getattr(status, "last_follow_up_time", None)) or end,
            end=end,
            attributes=attributes,
            error=None if now == "FinalAnswer" else (status.error or now),
        )
        return
    _emit(
        f"invoke_agent {new.spec.agent_ref.name}",
        trace_id=trace_id,
        span_id=span_id,
        parent=(int(parent[0], 16), int(parent[1], 16))
        if parent is not None and int(parent[0], 16) == trace_id
        else None,
        start=start or end,
        end=end,
        attributes=attributes,
        error=None if now == "FinalAnswer" else (status.error or now),
        links=links,
    )


def _emit(
    name: str,
    *,
    trace_id: int,
    span_id: int | None,
    parent: tuple[int, int] | None,
    start: int,
    end: int,
    attributes: dict[str, Any],
    error: str | None = None,
    links: list[tuple[int, int]] = (),  # type: ignore[assignment]
) -> None:
    """Emit a finished span with these ids and times (span_id None: a new one)."""
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    # No parent: an empty context, so nothing current in the caller's can become one.
    context = _parent(*parent) if parent is not None else Context()
    token = _forced.set((trace_id, span_id if span_id is not None else random.getrandbits(64) or 1))
    try:
        span = _tracer.start_span(
            name,
            context=context,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=[
                Link(trace.SpanContext(t, s, is_remote=True, trace_flags=trace.TraceFlags(1)))
                for t, s in links
            ],
            start_time=start,
        )
    finally:
        _forced.reset(token)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error[:500]))
    span.end(end_time=max(start, end))
