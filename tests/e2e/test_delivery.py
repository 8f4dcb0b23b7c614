"""responseUrl: a finished task's answer is POSTed from a durable outbox, retried, recorded in status."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.conftest import AcpRepo, task_yaml

pytestmark = pytest.mark.e2e


class Receiver:
    """A real HTTP server on 127.0.0.1 answering POSTs with scripted statuses, recording each one."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.received.append((body, dict(self.headers)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_the_answer_is_posted_after_transient_failures_and_recorded(
    acp_repo: AcpRepo, serve_once: Callable[..., Any], receiver: Callable[[list[int]], Receiver]
) -> None:
    hook = receiver([503, 500])  # two failures, then 200
    acp_repo.commit(
        {"tasks/report.yaml": task_yaml("report", "Report back, please.") + f"  responseUrl: {hook.url}\n"}
    )
    result = serve_once(acp_repo)
    assert result.returncode == 0, result.stderr
    status = acp_repo.status("tasks", "report")
    assert status is not None
    assert status["status"]["phase"] == "FinalAnswer"
    delivery = status["status"]["delivery"]
    assert (delivery["state"], delivery["attempts"], delivery["statusCode"]) == ("Delivered", 3, 200)
    assert len(hook.received) == 3
    body, headers = hook.received[-1]
    assert body["task"] == "report"
    assert body["output"] == "Echo: Report back, please."
    assert headers["Idempotency-Key"] == f"report-{status['status']['completionTime']}"
    assert {h["Idempotency-Key"] for _, h in hook.received} == {headers["Idempotency-Key"]}


def test_a_refused_delivery_is_failed_not_retried(
    acp_repo: AcpRepo, serve_once: Callable[..., Any], receiver: Callable[[list[int]], Receiver]
) -> None:
    hook = receiver([404])
    acp_repo.commit(
        {"tasks/lost.yaml": task_yaml("lost", "Nobody listens.") + f"  responseUrl: {hook.url}\n"}
    )
    assert serve_once(acp_repo).returncode == 0
    delivery = acp_repo.status("tasks", "lost")["status"]["delivery"]
    assert (delivery["state"], delivery["lastError"]) == ("Failed", "HTTP 404")
    assert len(hook.received) == 1
