"""Metrics and traces of a real `serve --http` (DESIGN §11), checked against what the run did.

metrics ..... three tasks, four MCP tool calls: /metrics agrees with the stub's record of requests
              and the usage it returned, the tool calls made, the tasks finished, and the commits
              on the status branch
traces ...... an OTLP/HTTP receiver made here gets the spans of a task whose `serve` is SIGKILLed
              while its tool call waits for an approval, then resumed: one trace, the one its
              traceparent annotation named; the second run's spans arrive only by the SIGTERM flush
delegation .. a sub-agent's child task has a trace of its own, linked to the call that delegated it
API ......... a `traceparent` header on POST /v1/tasks: the task's span is a child of the caller's
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    API,
    AcpRepo,
    Background,
    Stub,
    call,
    cli,
    mcpserver_yaml,
    one_error_line,
    tool_agent_yaml,
    toolcalls_of,
    wait_for,
)

pytestmark = pytest.mark.e2e

USAGE = {"prompt_tokens": 11, "completion_tokens": 4}
PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


def listening_url(server: Background) -> str:
    def printed() -> str | None:
        match = re.search(r"listening on (http://[0-9.]+:\d+)", server.stderr())
        return match[1] if match else None

    url: str = wait_for(printed, timeout=60, interval=0.1, what="serve --http to listen")
    return url


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics (no credentials), parsed: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def test_metrics_count_what_the_run_did(
    marker: str, acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    stub.rules(
        {
            "match": "^Use the tool",
            "when": "first",
            "toolCalls": [call("tools__echo", text="one"), call("tools__echo", text="two")],
            "usage": USAGE,
        },
        {"when": "tool", "content": "done: {tool}", "usage": USAGE},
        {"content": "plain answer", "usage": USAGE},  # the plain task, and the LLM's validation
    )
    tasks = {"tool-a": "Use the tool, a.", "tool-b": "Use the tool, b.", "plain": "Just answer."}
    files = {
        "mcpservers/tools.yaml": mcpserver_yaml("tools", marker=marker),
        "agents/e2e-agent.yaml": tool_agent_yaml("e2e-agent", servers=("tools",)),
    }
    for name, text in tasks.items():
        files[f"tasks/{name}.yaml"] = _task_yaml(name, text)
    acp_repo.commit(files, "Tasks with tools")
    server = serve_bg(acp_repo, "--http", "127.0.0.1:0")
    url = listening_url(server)
    wait_for(lambda: acp_repo.finished_tasks() == set(tasks), timeout=90, what="every task to finish")

    def settled() -> dict[Any, float] | None:
        samples = scrape(url)
        commits = acp_repo.status_commit_count()
        same = total(samples, "gitops_acp_checkpoint_commits_total") == commits
        return (
            samples if same and total(samples, "gitops_acp_llm_requests_total") == len(stub.chats()) else None
        )

    samples = wait_for(settled, timeout=30, interval=0.2, what="/metrics to catch up with the status branch")
    chats = stub.chats()
    # Two tool tasks: each asks for tools once, answers once; the plain task answers once; plus validation.
    assert len(chats) >= 5
    assert total(samples, "gitops_acp_llm_requests_total") == len(chats)
    assert total(samples, "gitops_acp_llm_requests_total", llm="stub-llm", outcome="success") == len(chats)
    assert total(samples, "gitops_acp_llm_request_seconds_count", llm="stub-llm") == len(chats)
    assert total(samples, "gitops_acp_llm_tokens_total", llm="stub-llm", type="prompt") == 11 * len(chats)
    assert total(samples, "gitops_acp_llm_tokens_total", llm="stub-llm", type="completion") == 4 * len(chats)
    calls = [c for t in ("tool-a", "tool-b") for c in toolcalls_of(acp_repo, t)]
    assert len(calls) == 4
    assert total(samples, "gitops_acp_tool_calls_total") == 4
    assert total(samples, "gitops_acp_tool_calls_total", server="tools", tool="echo", outcome="success") == 4
    assert total(samples, "gitops_acp_tool_call_seconds_count", server="tools") == 4
    assert total(samples, "gitops_acp_tasks", phase="FinalAnswer") == 3
    assert total(samples, "gitops_acp_tasks") == 3  # nothing left in another phase
    assert total(samples, "gitops_acp_checkpoint_commits_total") == acp_repo.status_commit_count()
    assert total(samples, "gitops_acp_checkpoint_commit_seconds_count") == acp_repo.status_commit_count()
    assert total(samples, "gitops_acp_queue_depth") == 0
    assert total(samples, "gitops_acp_push_failures_total") == 0  # no remote
    # No task or tool call name is a label value.
    for (_, labels), _value in samples.items():
        assert not {v for _, v in labels} & {*tasks, *(c["metadata"]["name"] for c in calls)}
    with urllib.request.urlopen(url + "/readyz", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ready"}
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0


def _task_yaml(name: str, message: str, *, annotations: dict[str, str] | None = None) -> str:
    text = f"apiVersion: {API}\nkind: Task\nmetadata:\n  name: {name}\n"
    if annotations:
        text += "  annotations:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in annotations.items())
    return text + f"spec:\n  agentRef:\n    name: e2e-agent\n  userMessage: {json.dumps(message)}\n"


# -- traces -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...] = ()


class Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1: POST /v1/traces, protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            receiver.spans += [_span(s) for s in scope.spans]
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


def _span(s: Any) -> Span:
    attributes = {}
    for kv in s.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        attributes[kv.key] = (
            getattr(value, kind)
            if kind != "array_value"
            else [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        )
    links = tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links)
    return Span(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), attributes, links)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()


def test_a_killed_and_resumed_task_continues_its_trace(
    marker: str,
    acp_repo: AcpRepo,
    stub: Stub,
    serve_bg: Callable[..., Background],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub.rules(
        {"match": "^Traced", "when": "first", "toolCalls": [call("gated__echo", text="traced")]},
        {"when": "tool", "content": "finished: {tool}"},
    )
    gated = mcpserver_yaml("gated", marker=marker) + "  approvalContactChannel:\n    name: people\n"
    channel = f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: people\nspec:\n  type: git\n"
    traceparent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
    acp_repo.commit(
        {
            "contactchannels/people.yaml": channel,
            "mcpservers/gated.yaml": gated,
            "agents/e2e-agent.yaml": tool_agent_yaml("e2e-agent", servers=("gated",)),
            "tasks/traced.yaml": _task_yaml(
                "traced", "Traced task.", annotations={"acp.gitops.dev/traceparent": traceparent}
            ),
        },
        "A task whose tool needs an approval",
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    first = serve_bg(acp_repo)

    def waiting() -> str | None:
        calls = toolcalls_of(acp_repo, "traced")
        phases = [c["status"]["phase"] for c in calls]
        return calls[0]["metadata"]["name"] if phases == ["AwaitingHumanApproval"] else None

    toolcall = wait_for(waiting, timeout=90, what="the tool call to wait for its approval")
    document = acp_repo.status("tasks", "traced")
    assert document is not None
    context = document["status"]["spanContext"]
    assert context["traceID"] == PARENT_TRACE  # the annotation's trace
    root = context["spanID"]
    # The first turn's span is exported (every 50 ms here) before the kill.
    wait_for(lambda: receiver.of_trace(PARENT_TRACE), timeout=30, what="the first LLM span")
    first.kill()
    assert cli("--repo", str(acp_repo.path), "approve", toolcall).returncode == 0
    before = len(receiver.of_trace(PARENT_TRACE))

    # Resumed: only the flush at SIGTERM can deliver this run's spans (the batch waits a minute).
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    second = serve_bg(acp_repo)
    wait_for(lambda: acp_repo.phase("traced") == "FinalAnswer", timeout=90, what="the task to finish")
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    after = acp_repo.status("tasks", "traced")
    assert after is not None
    assert after["status"]["spanContext"] == context  # the same trace, kept across the restart

    spans = receiver.of_trace(PARENT_TRACE)
    assert len(spans) > before
    names = [s.name for s in spans]
    chats = [s for s in spans if s.name == "chat stub-model"]
    assert len(chats) == 2, names  # one before the kill, one after: the same trace
    for chat in chats:
        assert chat.parent == root
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "stub-model"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    (task_span,) = [s for s in spans if s.name == "invoke_agent e2e-agent"]
    assert (task_span.span_id, task_span.parent) == (root, PARENT_SPAN)  # child of the traceparent
    (tool_span,) = [s for s in spans if s.name == "execute_tool gated__echo"]
    assert tool_span.parent == root
    assert tool_span.attributes["gen_ai.tool.name"] == "gated__echo"
    (wait_span,) = [s for s in spans if s.name == "wait for approval"]
    assert wait_span.parent == tool_span.span_id
    # Nothing of this run went to another trace.
    with receiver.lock:
        others = {s.trace_id for s in receiver.spans} - {PARENT_TRACE}
    assert not others, [s.name for s in receiver.spans if s.trace_id in others]


def test_a_delegated_child_task_is_its_own_trace_linked_to_the_delegating_call(
    acp_repo: AcpRepo,
    stub: Stub,
    serve_bg: Callable[..., Background],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub.rules(
        {
            "match": "^Boss",
            "when": "first",
            "toolCalls": [call("delegate_to_agent__worker", message="Worker: go")],
        },
        {"match": "^Boss", "when": "tool", "content": "the worker said {tool}"},
        {"match": "^Worker", "content": "work done"},
    )
    acp_repo.commit(
        {
            "agents/worker.yaml": tool_agent_yaml("worker", description="Does the work."),
            "agents/boss.yaml": tool_agent_yaml("boss", sub_agents=("worker",)),
            "tasks/boss-task.yaml": _task_yaml("boss-task", "Boss: delegate.").replace("e2e-agent", "boss"),
        },
        "A boss and a worker",
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    server = serve_bg(acp_repo)
    wait_for(lambda: acp_repo.phase("boss-task") == "FinalAnswer", timeout=90, what="the boss task to finish")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    parent = acp_repo.status("tasks", "boss-task")
    assert parent is not None
    parent_trace = parent["status"]["spanContext"]["traceID"]
    (call_doc,) = toolcalls_of(acp_repo, "boss-task")
    child = acp_repo.status("tasks", f"delegate-{call_doc['metadata']['name']}")
    assert child is not None
    child_context = child["status"]["spanContext"]
    assert child_context["traceID"] != parent_trace
    (delegating,) = [
        s for s in receiver.of_trace(parent_trace) if s.name == "execute_tool delegate_to_agent__worker"
    ]
    (child_span,) = receiver.named("invoke_agent worker")
    assert (child_span.trace_id, child_span.span_id) == (child_context["traceID"], child_context["spanID"])
    assert child_span.parent == ""  # a root of its own trace ...
    assert child_span.links == ((parent_trace, delegating.span_id),)  # ... linked to the delegating call
    assert [s.name for s in receiver.of_trace(child_context["traceID"]) if s.name.startswith("chat")] == [
        "chat stub-model"
    ]


def test_an_exporter_that_cannot_be_made_is_one_error_line(
    acp_repo: AcpRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    line = one_error_line(cli("--repo", str(acp_repo.path), "serve", "--once", timeout=60))
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: only http/protobuf is supported" in line


def test_a_traceparent_header_on_post_v1_tasks_makes_the_task_part_of_the_callers_trace(
    acp_repo: AcpRepo,
    stub: Stub,
    serve_bg: Callable[..., Background],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token = "telemetry-operator-token-42"
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        json.dumps(
            [
                {
                    "name": "Olga Operator",
                    "email": "olga@example.com",
                    "roles": ["operator"],
                    "sha256": hashlib.sha256(token.encode()).hexdigest(),
                }
            ]
        )
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    server = serve_bg(acp_repo, "--http", "127.0.0.1:0", "--api-tokens", str(tokens))
    url = listening_url(server)
    trace, parent = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    request = urllib.request.Request(
        url + "/v1/tasks",
        data=json.dumps(
            {"name": "from-api", "agentRef": {"name": "e2e-agent"}, "userMessage": "Hi"}
        ).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "traceparent": f"00-{trace}-{parent}-01",
        },
    )
    wait_for(lambda: _readyz(url) == 200, timeout=60, what="serve to be ready")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    wait_for(lambda: acp_repo.phase("from-api") == "FinalAnswer", timeout=60, what="the task to finish")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    document = acp_repo.status("tasks", "from-api")
    assert document is not None
    assert document["status"]["spanContext"]["traceID"] == trace
    (task_span,) = [s for s in receiver.of_trace(trace) if s.name == "invoke_agent e2e-agent"]
    assert task_span.parent == parent
    assert task_span.span_id == document["status"]["spanContext"]["spanID"]
    (chat,) = [s for s in receiver.of_trace(trace) if s.name.startswith("chat ")]
    assert chat.parent == task_span.span_id


def _readyz(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
