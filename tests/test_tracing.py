"""Traces (telemetry/tracing.py) with the SDK's in-memory exporter: the spans, their ids and parents."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gitops_acp.controllers.state import State
from gitops_acp.errors import TemporaryLLMError, UserError
from gitops_acp.llm.client import Completion, LLMConfig
from gitops_acp.resources.models import Task, ToolCall, from_document
from gitops_acp.store.status import Change
from gitops_acp.telemetry import tracing

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
API = "acp.gitops.dev/v1alpha1"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure({}, exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def task(name: str, phase: str | None = None, **extra: Any) -> Task:
    annotations = extra.pop("annotations", {})
    labels = extra.pop("labels", {})
    status = {"phase": phase, **extra} if phase else None
    document = {
        "apiVersion": API,
        "kind": "Task",
        "metadata": {"name": name, "annotations": annotations, "labels": labels},
        "spec": {"agentRef": {"name": "helper"}, "userMessage": "hi"},
        "status": status,
    }
    obj = from_document(document)
    assert isinstance(obj, Task)
    return obj


def toolcall(name: str, task_name: str, phase: str, **status: Any) -> ToolCall:
    obj = from_document(
        {
            "apiVersion": API,
            "kind": "ToolCall",
            "metadata": {"name": name, "labels": {"acp.gitops.dev/task": task_name}},
            "spec": {
                "toolCallId": "call_1",
                "taskRef": {"name": task_name},
                "toolRef": {"name": "tools__echo"},
                "toolType": "MCP",
                "arguments": "{}",
            },
            "status": {"phase": phase, **status},
        }
    )
    assert isinstance(obj, ToolCall)
    return obj


def stamped(*objects: Any) -> list[dict[str, Any]]:
    """Checkpoint the objects in order through the real State; return the documents committed."""
    committed: list[dict[str, Any]] = []

    async def commit(changes: Sequence[Change], spec_commit: str) -> str | None:
        committed.extend(c.document for c in changes if c.document is not None)
        return "0" * 40

    async def scenario() -> None:
        state = State(commit)
        for obj in objects:
            await state.checkpoint(obj)

    asyncio.run(scenario())
    return committed


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_off_unless_the_variables_ask() -> None:
    assert not tracing.configure({})
    assert not tracing.configure({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not tracing.configure({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.enabled()
    assert tracing.new_span_context({tracing.ANNOTATION_TRACEPARENT: TRACEPARENT}) is None
    # Off: no spanContext is stamped, nothing is emitted, the metrics still count.
    (document,) = stamped(task("quiet", "ReadyForLLM"))
    assert "spanContext" not in document["status"]
    with tracing.LLMCall("stub", None, task("quiet", "ReadyForLLM")):
        pass
    tracing.landed("Task", None, task("quiet", "FinalAnswer"), lambda kind, name: None)


def test_the_variables_choose_the_exporter_and_bad_values_are_one_line_errors() -> None:
    try:
        assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
        assert tracing.enabled()
    finally:
        tracing.shutdown()
    assert not tracing.enabled()
    try:
        assert tracing.configure({"OTEL_TRACES_EXPORTER": "otlp, console"})  # a list: both
        provider = tracing._provider
        assert len(provider._active_span_processor._span_processors) == 2
        assert provider.resource.attributes["service.name"] == "gitops-acp"
    finally:
        tracing.shutdown()
    with pytest.raises(UserError, match="OTEL_TRACES_EXPORTER=zipkin: expected otlp, console or none"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(UserError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc: only http/protobuf"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_the_first_checkpoint_commits_the_trace_and_later_ones_keep_it(spans: InMemorySpanExporter) -> None:
    first, second = stamped(task("fresh", "Pending"), task("fresh", "ReadyForLLM"))
    context = first["status"]["spanContext"]
    assert len(context["traceID"]) == 32
    assert len(context["spanID"]) == 16
    assert second["status"]["spanContext"] == context  # built without it: kept from the committed one
    # A traceparent annotation: the task's trace is the caller's.
    (child,) = stamped(task("called", "Pending", annotations={tracing.ANNOTATION_TRACEPARENT: TRACEPARENT}))
    assert child["status"]["spanContext"]["traceID"] == PARENT_TRACE
    assert child["status"]["spanContext"]["spanID"] != PARENT_SPAN
    # A delegated child created without status gets its own trace with its first checkpoint.
    (delegated,) = stamped(task("delegate-x", labels={"acp.gitops.dev/parent-toolcall": "x"}))
    assert delegated["status"]["spanContext"]["traceID"] not in (context["traceID"], PARENT_TRACE)
    # Invalid traceparents are ignored (a new trace), never an error.
    for bad in ("00-zz-00f067aa0ba902b7-01", f"00-{'0' * 32}-{PARENT_SPAN}-01", "garbage"):
        (doc,) = stamped(task("odd", "Pending", annotations={tracing.ANNOTATION_TRACEPARENT: bad}))
        assert doc["status"]["spanContext"]["traceID"] != PARENT_TRACE


def _traced(name: str, phase: str, **extra: Any) -> Task:
    return task(name, phase, spanContext={"traceID": PARENT_TRACE, "spanID": "1111111111111111"}, **extra)


def test_an_llm_request_is_a_genai_span_under_the_task(spans: InMemorySpanExporter) -> None:
    config = LLMConfig(
        provider="mistral", model="m-large", api_key="k", base_url="http://llm.local:8000/v1", max_tokens=64
    )
    with tracing.LLMCall("my-llm", config, _traced("asking", "ReadyForLLM")) as call:
        call.answered(Completion("hi", (), 12, 5, {"role": "assistant", "content": "hi"}, "stop"))
    with (
        pytest.raises(TemporaryLLMError),
        tracing.LLMCall("my-llm", config, _traced("asking", "ReadyForLLM")),
    ):
        raise TemporaryLLMError("LLM request failed: 503 Service Unavailable", status_code=503)
    ok, failed = spans.get_finished_spans()
    assert ok.name == "chat m-large"
    assert ok.parent is not None
    assert (ok.context.trace_id, ok.parent.span_id) == (int(PARENT_TRACE, 16), 0x1111111111111111)
    attributes = dict(ok.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "mistral_ai"
    assert attributes["gen_ai.request.model"] == "m-large"
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.conversation.id"] == "asking"
    assert (attributes["server.address"], attributes["server.port"]) == ("llm.local", 8000)
    assert failed.status.status_code == StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "503"
    # A task without a trace (off when it started), or no task (an LLM's validation): no span.
    with tracing.LLMCall("my-llm", config, task("untraced", "ReadyForLLM")):
        pass
    with tracing.LLMCall("my-llm", config):
        pass
    assert len(spans.get_finished_spans()) == 2


def test_tool_calls_waits_and_the_task_span_from_landed_checkpoints(spans: InMemorySpanExporter) -> None:
    root = _traced("job", "ToolCallsPending", annotations={tracing.ANNOTATION_TRACEPARENT: TRACEPARENT})
    observed = {("Task", "job"): root}

    def lookup(kind: Any, name: str) -> Any:
        return observed.get((str(kind), name))

    start = "2026-12-05T08:00:00.000000Z"
    pending = toolcall("job-abc-tc-01", "job", "Pending")
    waiting = toolcall("job-abc-tc-01", "job", "AwaitingHumanApproval", startTime=start)
    approved = toolcall(
        "job-abc-tc-01",
        "job",
        "ReadyToExecuteApprovedTool",
        startTime=start,
        approval={"decidedAt": "2026-12-05T08:05:00.000000Z", "decidedBy": "Alice"},
    )
    done = toolcall(
        "job-abc-tc-01", "job", "Succeeded", startTime=start, completionTime="2026-12-05T08:05:01.000000Z"
    )
    for old, new in ((None, pending), (pending, waiting), (waiting, approved), (approved, done)):
        tracing.landed("ToolCall", old, new, lookup)
    finished = _traced(
        "job",
        "FinalAnswer",
        annotations={tracing.ANNOTATION_TRACEPARENT: TRACEPARENT},
        startTime="2026-12-05T07:59:59.000000Z",
        completionTime="2026-12-05T08:05:02.000000Z",
        usage={"promptTokens": 30, "completionTokens": 7},
    )
    tracing.landed("Task", root, finished, lookup)
    found = by_name(spans)
    assert set(found) == {"wait for approval", "execute_tool tools__echo", "invoke_agent helper"}
    wait, tool, top = (
        found["wait for approval"],
        found["execute_tool tools__echo"],
        found["invoke_agent helper"],
    )
    trace_id = int(PARENT_TRACE, 16)
    assert {s.context.trace_id for s in found.values()} == {trace_id}
    # The task's span has the committed ids and the traceparent's span as parent.
    assert top.context.span_id == 0x1111111111111111
    assert top.parent is not None
    assert top.parent.span_id == int(PARENT_SPAN, 16)
    assert dict(top.attributes or {})["gen_ai.usage.input_tokens"] == 30
    assert tool.parent is not None
    assert tool.parent.span_id == top.context.span_id
    assert wait.parent is not None
    assert wait.parent.span_id == tool.context.span_id
    assert dict(tool.attributes or {})["gen_ai.tool.name"] == "tools__echo"
    assert dict(tool.attributes or {})["gen_ai.operation.name"] == "execute_tool"
    # The wait ends when the person decided (decidedAt), not when the reconciler noticed.
    assert wait.end_time is not None
    assert wait.start_time is not None
    assert (wait.end_time - wait.start_time) / 1e9 == pytest.approx(300, abs=0.01)

    # A delegated child's trace is its own, linked to the call that delegated it.
    spans.clear()
    delegating = toolcall("job-abc-tc-02", "job", "AwaitingSubAgent")
    observed[("ToolCall", "job-abc-tc-02")] = delegating
    child = task(
        "delegate-job-abc-tc-02",
        "FinalAnswer",
        labels={"acp.gitops.dev/parent-toolcall": "job-abc-tc-02"},
        spanContext={"traceID": "2" * 32, "spanID": "3" * 16},
        completionTime="2026-12-05T08:06:00.000000Z",
    )
    tracing.landed("Task", None, child, lookup)
    done2 = toolcall("job-abc-tc-02", "job", "Succeeded", completionTime="2026-12-05T08:06:01.000000Z")
    tracing.landed("ToolCall", delegating, done2, lookup)
    found = by_name(spans)
    child_span, call_span = found["invoke_agent helper"], found["execute_tool tools__echo"]
    assert child_span.context.trace_id == int("2" * 32, 16)
    assert child_span.parent is None
    (link,) = child_span.links
    assert (link.context.trace_id, link.context.span_id) == (trace_id, call_span.context.span_id)


def test_a_task_that_failed_is_an_error_span(spans: InMemorySpanExporter) -> None:
    tracing.landed(
        "Task",
        _traced("bad", "ReadyForLLM"),
        _traced("bad", "Failed", error="LLM request failed: 401 Unauthorized"),
        lambda kind, name: None,
    )
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "LLM request failed: 401 Unauthorized"
    assert span.parent is None


def test_telemetry_imports_no_layer() -> None:
    """Every layer imports telemetry/, so it may import none of them (import-linter checks the layers)."""
    import ast
    from pathlib import Path

    import gitops_acp.telemetry

    layers = ("cli", "api", "reactor", "controllers", "humans", "llm", "mcp", "store", "resources", "testing")
    package = Path(gitops_acp.telemetry.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                assert not name.startswith(tuple(f"gitops_acp.{layer}" for layer in layers)), (
                    path.name,
                    name,
                )
