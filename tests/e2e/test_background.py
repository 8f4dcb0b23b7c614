"""`serve` as a long-running process: it reacts to new commits on main, and stops cleanly on SIGTERM.

The safety poll is set to 30 s and every wait here is shorter, so what these tests see is the
event-driven path (the ref watcher, and dependents woken by checkpoints), never the poll.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import (
    AGENT_NAME,
    LLM_NAME,
    SECRET_KEY,
    SECRET_NAME,
    AcpRepo,
    Background,
    Stub,
    agent_yaml,
    llm_yaml,
    task_yaml,
    wait_for,
)

pytestmark = pytest.mark.e2e

SLOW_POLL = ("--poll-interval", "30")
REACTION = 15.0  # seconds: generous for a loaded machine, and still half the poll interval


def _ready(repo: AcpRepo, plural: str, name: str) -> bool:
    document = repo.status(plural, name)
    return bool(document and (document.get("status") or {}).get("status") == "Ready")


def _stop(background: Background) -> None:
    background.signal(signal.SIGTERM)
    assert background.wait(timeout=20) == 0, background.stderr()
    assert "Traceback" not in background.stderr()


def test_serve_picks_up_a_new_commit_then_exits_zero_on_sigterm(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    background = serve_bg(acp_repo, *SLOW_POLL)
    wait_for(lambda: _ready(acp_repo, "agents", "e2e-agent"), timeout=60, what="the agent to be Ready")
    commits_before = acp_repo.status_commit_count()

    acp_repo.add_task("late-comer", "Did you see me arrive?")
    wait_for(lambda: acp_repo.phase("late-comer") == "FinalAnswer", timeout=REACTION, what="FinalAnswer")
    status = acp_repo.status("tasks", "late-comer")
    assert status is not None
    assert status["status"]["output"] == "Echo: Did you see me arrive?"
    assert background.proc.poll() is None  # still serving
    assert acp_repo.status_commit_count() > commits_before

    # SIGTERM while a request is in flight: exit 0 without waiting for the answer; nothing half-written.
    stub.rules({"match": "^Interrupted", "delayMs": 20_000})
    acp_repo.add_task("interrupted", "Interrupted by SIGTERM")
    wait_for(lambda: stub.chats("Interrupted by SIGTERM"), timeout=REACTION, what="the LLM request")
    asked_at = time.monotonic()
    _stop(background)
    assert time.monotonic() - asked_at < 15  # the stub would answer after 20 s
    assert acp_repo.phase("interrupted") == "ReadyForLLM"  # start-up will ask again
    assert acp_repo.transitions("Task", "interrupted")[-1][1] == "ReadyForLLM"


def test_removing_a_task_from_main_cancels_it(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    stub.rules({"match": "^Take your time", "delayMs": 1500, "content": "Too late to matter."})
    acp_repo.add_task("doomed", "Take your time with this one.")
    background = serve_bg(acp_repo, *SLOW_POLL)
    wait_for(lambda: stub.chats("Take your time with this one."), timeout=60, what="the LLM request")
    assert acp_repo.phase("doomed") == "ReadyForLLM"

    acp_repo.remove("tasks/doomed.yaml")
    removed_at = time.monotonic()
    wait_for(lambda: acp_repo.phase("doomed") == "Cancelled", timeout=REACTION, what="Cancelled")
    cancelled_after = time.monotonic() - removed_at

    document = acp_repo.status("tasks", "doomed")
    assert document is not None
    status = document["status"]
    assert "removed" in status["error"].lower()
    assert "removed" in status["statusDetail"].lower()
    assert status.get("output") in (None, "")
    assert status["completionTime"]
    phases = [new for _, new, _ in acp_repo.transitions("Task", "doomed")]
    assert "FinalAnswer" not in phases
    assert phases[-1] == "Cancelled"
    assert len(stub.chats("Take your time with this one.")) == 1
    _stop(background)
    assert cancelled_after < REACTION


def test_an_agent_committed_before_its_llm_waits_then_runs_its_task(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    acp_repo.commit(
        {
            "agents/early-agent.yaml": agent_yaml("early-agent", llm="late-llm"),
            "tasks/patient.yaml": task_yaml("patient", "Worth the wait?", agent="early-agent"),
        },
        "An agent whose LLM does not exist yet",
    )
    background = serve_bg(acp_repo, *SLOW_POLL)
    wait_for(lambda: acp_repo.phase("patient") == "Pending", timeout=60, what="the task to be Pending")
    agent = acp_repo.status("agents", "early-agent")
    assert agent is not None
    assert agent["status"]["status"] == "Pending"
    assert agent["status"]["ready"] is False
    assert "late-llm" in agent["status"]["statusDetail"]
    assert not stub.chats("Worth the wait?")

    acp_repo.commit({"llms/late-llm.yaml": llm_yaml("late-llm", acp_repo.stub_url)}, "Add the LLM")
    wait_for(lambda: acp_repo.phase("patient") == "FinalAnswer", timeout=REACTION, what="FinalAnswer")
    assert _ready(acp_repo, "llms", "late-llm")
    assert _ready(acp_repo, "agents", "early-agent")
    moves = [(old, new) for old, new, _ in acp_repo.transitions("Task", "patient")]
    assert moves[-2:] == [("Pending", "ReadyForLLM"), ("ReadyForLLM", "FinalAnswer")]
    _stop(background)


def test_a_rotated_secret_revalidates_the_llm_without_a_commit(
    acp_repo: AcpRepo, stub: Stub, secret_value: str, serve_bg: Callable[..., Background]
) -> None:
    key_file = acp_repo.secrets / SECRET_NAME / SECRET_KEY
    assert key_file.exists(), "the fixture's secret layout changed"
    key_file.write_text("a-wrong-key\n")  # the stub demands `secret_value`: 401 until rotated
    background = serve_bg(acp_repo, *SLOW_POLL)
    wait_for(
        lambda: ((acp_repo.status("llms", LLM_NAME) or {}).get("status") or {}).get("status") == "Error",
        timeout=60,
        what="the LLM in Error (wrong key)",
    )
    commits = acp_repo.status_commit_count()
    key_file.write_text(secret_value + "\n")  # rotate: no commit on main
    wait_for(lambda: _ready(acp_repo, "llms", LLM_NAME), timeout=REACTION, what="the LLM Ready again")
    wait_for(lambda: _ready(acp_repo, "agents", AGENT_NAME), timeout=REACTION, what="its agent Ready")
    assert acp_repo.status_commit_count() > commits
    log = "\n".join(c.subject for c in acp_repo.commits())
    assert secret_value not in log
    assert "a-wrong-key" not in background.stderr()
    _stop(background)
