"""The web view's parts in-process (docs/web.md): its files found in the installed package, the
page's rules (no inline script, nothing from another host, no HTML built from data), the text
answer for curl, and `/` over a real (empty) repository: HTML for a browser, text or a 401 in text
otherwise. The page in a real browser is tests/e2e/test_web.py."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from gitops_acp.api import web
from gitops_acp.api.app import Service
from gitops_acp.api.reading import Reads
from gitops_acp.api.tokens import Caller, Tokens

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_the_page_files_are_in_the_package() -> None:
    for name in web.FILES:
        assert web.asset(name), name
    assert sum(len(web.asset(name)) for name in web.FILES) < 30_000  # small: a few KB each


def test_the_page_runs_no_inline_script_and_loads_nothing_from_elsewhere() -> None:
    page = web.asset("index.html").decode()
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/web/app.js" defer>']
    assert not re.search(r"\son[a-z]+=", page)  # no inline handlers: the CSP would block them
    for name in web.FILES:
        text = web.asset(name).decode()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f"{name} loads from another host"
    script = web.asset("app.js").decode()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "localStorage"):
        assert unsafe not in script, unsafe
    assert "script-src 'self'" in web.HEADERS["Content-Security-Policy"]
    assert "unsafe-inline" not in web.HEADERS["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,*/*;q=0.8", True),
        ("text/html", True),
        ("*/*", False),
        ("text/plain", False),
        (None, False),
        ("application/json", False),
    ],
)
def test_html_only_for_who_asks_for_it(accept: str | None, html: bool) -> None:
    assert web.wants_html(accept) is html


def task(name: str, message: str, *, phase: str = "FinalAnswer", output: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"agentRef": {"name": "helper"}, "userMessage": message},
        "status": {
            "phase": phase,
            "output": output,
            "startTime": "2026-12-05T08:00:00Z",
            "contextWindow": [
                {"role": "user", "content": message},
                {
                    "role": "assistant",
                    "content": "",
                    "toolCalls": [{"id": "c1", "function": {"name": "t__echo", "arguments": '{"a": 1}'}}],
                },
                {"role": "tool", "toolCallId": "c1", "content": "1"},
                {"role": "assistant", "content": output},
            ],
        },
    }


def test_the_text_of_tasks_is_a_table_with_age_and_output() -> None:
    text = web.render_tasks(
        [task("hello", "Say\nhello", output="Hi there"), task("x", HOSTILE, phase="ReadyForLLM")],
        now=datetime(2026, 12, 5, 9, 30, tzinfo=UTC),
    )
    lines = text.splitlines()
    assert lines[0] == "TASKS (2)"
    assert lines[1].split() == ["NAME", "PHASE", "AGENT", "AGE", "MESSAGE", "OUTPUT"]
    assert lines[2].split()[:6] == ["hello", "FinalAnswer", "helper", "1h", "Say", "hello"]
    assert lines[2].endswith("Hi there")
    assert HOSTILE[:39] in lines[3]  # text stays text (text/plain: nothing renders it), cut at 40
    assert web.render_tasks([]) == "TASKS (0)\n(none)\n"


def test_the_text_of_one_task_has_its_window_calls_and_checkpoints() -> None:
    call = {
        "metadata": {"name": "hello-abc-tc-01"},
        "spec": {"toolRef": {"name": "t__echo"}, "arguments": '{"a": 1}'},
        "status": {"phase": "Succeeded", "result": "1", "approval": {"decidedBy": "Alice <a@example.com>"}},
    }
    history = [
        {"commit": "a" * 40, "time": "2026-12-05T08:00:01Z", "from": "-", "to": "ReadyForLLM", "detail": "x"}
    ]
    text = web.render_task(task("hello", "Say hello", output="Hi"), [call], history)
    assert "[user] Say hello" in text
    assert '  -> t__echo({"a": 1})' in text
    assert "[tool] 1" in text
    assert "hello-abc-tc-01  t__echo  Succeeded  decided by Alice <a@example.com>" in text
    assert "aaaaaaaaaa  2026-12-05T08:00:01Z  - -> ReadyForLLM  x" in text


class _NoWriter:
    async def aclose(self) -> None:
        pass


@pytest.fixture
def client(repo: Path) -> Iterator[TestClient]:
    vic = Caller("Vic", "vic@example.com", frozenset({"viewer"}))
    tokens = Tokens([(hashlib.sha256(b"vic-token").hexdigest(), vic)])
    service = Service(tokens=tokens, reads=Reads(repo, branch="main"), writer=_NoWriter())  # type: ignore[arg-type]
    with TestClient(Starlette(routes=web.routes(service))) as served:
        yield served
    asyncio.run(service.reads.aclose())


def test_slash_is_html_for_a_browser_and_text_for_curl(client: TestClient) -> None:
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == web.HEADERS["Content-Security-Policy"]
    refused = client.get("/", headers={"Accept": "*/*"})
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("text/plain")
    assert refused.text.startswith("401: authentication required")
    assert "curl -H 'Authorization: Bearer TOKEN'" in refused.text
    wrong = client.get("/", headers={"Accept": "text/plain", "Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "nope" not in wrong.text
    text = client.get("/", headers={"Authorization": "Bearer vic-token"})
    assert text.status_code == 200
    assert text.text.startswith("signed in as Vic <vic@example.com> (viewer)\n\nTASKS (0)\n(none)\n")
    assert "WAITING FOR A PERSON (0)" in text.text
    missing = client.get("/?task=nothere", headers={"Authorization": "Bearer vic-token"})
    assert missing.status_code == 404
    assert 'Task "nothere" not found' in missing.text
    bad = client.get("/?task=Not_A_Name", headers={"Authorization": "Bearer vic-token"})
    assert bad.status_code == 422
    phase = client.get("/?phase=Done", headers={"Authorization": "Bearer vic-token"})
    assert phase.status_code == 422
    assert phase.text.startswith("422: phase=Done: not a Task phase; use one of Pending, ReadyForLLM")
    done = client.get("/?phase=FinalAnswer", headers={"Authorization": "Bearer vic-token"})
    assert done.status_code == 200


def test_only_the_pages_files_are_served(client: TestClient) -> None:
    script = client.get("/web/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    for path in ("/web/index.html", "/web/../app.py", "/web/nothing.js"):
        assert client.get(path).status_code == 404, path


def _luminance(hex_color: str) -> float:
    channels = [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_the_colours_of_text_have_enough_contrast_on_white() -> None:
    """WCAG AA: 4.5:1 for text; the page's text colours are its CSS variables, on a white page."""
    css = web.asset("app.css").decode()
    colours = dict(re.findall(r"--([a-z]+):\s*(#[0-9a-f]{6})", css))
    assert {"fg", "muted", "accent", "bad", "good"} <= set(colours)
    for name in ("fg", "muted", "accent", "bad", "good"):
        ratio = (1.05) / (_luminance(colours[name]) + 0.05)
        assert ratio >= 4.5, f"--{name} {colours[name]}: {ratio:.2f}:1 on white"


def test_without_a_tokens_file_the_text_says_the_api_is_disabled(repo: Path) -> None:
    service = Service(tokens=None, reads=Reads(repo, branch="main"), writer=_NoWriter())  # type: ignore[arg-type]
    with TestClient(Starlette(routes=web.routes(service))) as client:
        refused = client.get("/", headers={"Authorization": "Bearer anything"})
        assert refused.status_code == 403
        assert refused.text == "403: the API is disabled: serve was started without --api-tokens FILE\n"
        assert client.get("/", headers={"Accept": "text/html"}).status_code == 200  # it says so on sign-in
    asyncio.run(service.reads.aclose())
