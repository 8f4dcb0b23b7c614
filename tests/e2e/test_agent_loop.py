"""The agent loop's other exits, in one `serve --once` run: LLM errors, limits, tools, missing secrets.

400 ............................... Failed at once, the provider's message, one request
500, 500, then an answer .......... ErrorBackoff twice (attempts 1, 2), then FinalAnswer
429 with Retry-After: 1 ........... ErrorBackoff for at least that long, then FinalAnswer
a tool the agent does not have .... the ToolCall fails, the model reads why, then answers
the same with limits.maxTurns 1 ... Cancelled: the limit, before a second request
an LLM whose secret is missing .... LLM Error naming the secret, the key and where it looked
"""

from __future__ import annotations

import itertools
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gitops_acp.resources.meta import Kind, status_path
from tests.conftest import git
from tests.e2e.conftest import (
    AcpRepo,
    Stub,
    agent_yaml,
    cli,
    llm_yaml,
    module_repo,
    serve_args,
    task_yaml,
)

pytestmark = pytest.mark.e2e

MESSAGES = {
    "refused": "Refuse this request, please.",
    "flaky": "Flaky upstream: answer after two 500s.",
    "throttled": "Throttled: answer after one 429.",
    "tool-loop": "Use a tool, then answer.",
    "limited": "Use a tool, but only one turn is allowed.",
    "leaky-error": "Echo my key back in an error.",
    "stranded": "Nobody will answer this.",
}
PROVIDER_400 = "Invalid 'temperature': e2e-distinctive-400 (scripted)"


@dataclass
class Run:
    repo: AcpRepo
    secret: str
    serve: subprocess.CompletedProcess[str]
    chats: list[dict[str, Any]]

    def chats_of(self, task: str) -> list[dict[str, Any]]:
        first = MESSAGES[task]
        return [c for c in self.chats if _first_user(c) == first]

    def status(self, task: str) -> dict[str, Any]:
        document = self.repo.status("tasks", task)
        assert document is not None, f"Task {task} has no status file"
        status: dict[str, Any] = document["status"]
        return status


def _first_user(chat: dict[str, Any]) -> str | None:
    return next((m.get("content") for m in chat["body"]["messages"] if m.get("role") == "user"), None)


@pytest.fixture(scope="module")
def run(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with module_repo(stub_process, tmp_path_factory.mktemp("agent-loop")) as (repo, secret):
        stub_process.rules(
            {"match": "^Refuse", "status": 400, "message": PROVIDER_400},
            {"match": "^Flaky", "times": 2, "status": 500, "message": "upstream e2e-500"},
            {"match": "^Throttled", "times": 1, "status": 429, "message": "slow down", "retryAfter": 1},
            {"match": "^Echo my key", "status": 400, "message": f"Incorrect API key provided: {secret}"},
            {"match": "^Use a tool", "when": "first", "toolCalls": [{"name": "ghost__run", "arguments": {}}]},
        )
        files = {f"tasks/{name}.yaml": task_yaml(name, message) for name, message in MESSAGES.items()}
        files["tasks/limited.yaml"] = task_yaml("limited", MESSAGES["limited"], agent="one-turn")
        files["tasks/stranded.yaml"] = task_yaml("stranded", MESSAGES["stranded"], agent="keyless-agent")
        files["agents/one-turn.yaml"] = agent_yaml("one-turn", limits="  limits:\n    maxTurns: 1\n")
        files["agents/keyless-agent.yaml"] = agent_yaml("keyless-agent", llm="keyless")
        files["llms/keyless.yaml"] = llm_yaml(
            "keyless", repo.stub_url, secret="absent-secret", key="E2E_ABSENT_KEY"
        )
        repo.commit(files, "Add the tasks")
        serve = cli(*serve_args(repo, once=True))
        yield Run(repo, secret, serve, stub_process.chats())


def test_serve_once_exits_zero_when_nothing_can_progress(run: Run) -> None:
    assert run.serve.returncode == 0, run.serve.stderr
    assert "Traceback" not in run.serve.stderr


def test_400_fails_at_once_with_the_providers_message(run: Run) -> None:
    status = run.status("refused")
    assert status["phase"] == "Failed"
    assert PROVIDER_400 in status["error"]
    assert "400" in status["error"]
    assert status["completionTime"]
    assert len(run.chats_of("refused")) == 1  # no retry
    phases = [new for _, new, _ in run.repo.transitions("Task", "refused")]
    assert "ErrorBackoff" not in phases
    assert phases[-2:] == ["ReadyForLLM", "Failed"]


def test_500_backs_off_records_attempts_then_succeeds(run: Run) -> None:
    status = run.status("flaky")
    assert status["phase"] == "FinalAnswer"
    assert status["output"] == f"Echo: {MESSAGES['flaky']}"
    assert not status.get("error")
    assert len(run.chats_of("flaky")) == 3
    moves = run.repo.transitions("Task", "flaky")
    tail = [(old, new) for old, new, _ in moves if old != "Pending" and old != "-"]
    assert tail == [
        ("ReadyForLLM", "ErrorBackoff"),
        ("ErrorBackoff", "ReadyForLLM"),
        ("ReadyForLLM", "ErrorBackoff"),
        ("ErrorBackoff", "ReadyForLLM"),
        ("ReadyForLLM", "FinalAnswer"),
    ]
    backoffs = [run.repo.status("tasks", "flaky", rev=c.sha) for _, new, c in moves if new == "ErrorBackoff"]
    recorded = [(b or {})["status"] for b in backoffs]
    assert [s["attempts"] for s in recorded] == [1, 2]
    assert all("upstream e2e-500" in s["error"] and s["nextAttemptTime"] for s in recorded)


def test_429_waits_for_retry_after(run: Run) -> None:
    status = run.status("throttled")
    assert status["phase"] == "FinalAnswer"
    assert len(run.chats_of("throttled")) == 2
    moves = run.repo.transitions("Task", "throttled")
    (backoff,) = [
        run.repo.status("tasks", "throttled", rev=c.sha) for _, new, c in moves if new == "ErrorBackoff"
    ]
    assert backoff is not None
    detail = backoff["status"]["statusDetail"]
    delay = re.search(r"retrying in ([0-9.]+)s", detail)
    assert delay, detail
    # --backoff-base 0.05 alone would wait at most 0.05 s: the provider's Retry-After won.
    assert float(delay[1]) >= 1.0, detail


def test_an_unknown_tool_fails_and_the_model_reads_why(run: Run) -> None:
    status = run.status("tool-loop")
    assert status["phase"] == "FinalAnswer"
    assert status["turns"] == 2
    window = status["contextWindow"]
    assert [m["role"] for m in window] == ["system", "user", "assistant", "tool", "assistant"]
    (call,) = window[2]["toolCalls"]
    assert call["function"]["name"] == "ghost__run"
    assert window[3]["toolCallId"] == call["id"]
    assert "ghost__run" in window[3]["content"]
    assert window[3]["content"].startswith("Error:")
    # The second request carried the tool result the model reads.
    second = run.chats_of("tool-loop")[-1]["body"]["messages"]
    assert second[-1]["role"] == "tool"
    assert second[-1]["tool_call_id"] == call["id"]

    # The answer asking for the tool is ONE commit: the assistant message, the phase and the ToolCall.
    toolcall = f"tool-loop-{status['toolCallRequestId']}-tc-01"
    document = run.repo.status("toolcalls", toolcall)
    assert document is not None
    assert document["status"]["phase"] == "Failed"
    assert document["spec"]["toolRef"]["name"] == "ghost__run"
    (asked,) = [c for _, new, c in run.repo.transitions("Task", "tool-loop") if new == "ToolCallsPending"]
    assert (f"ToolCall/{toolcall}", "Pending") in {
        (f"{kind}/{name}", new) for kind, name, _, new in asked.moves()
    }


def test_max_turns_cancels_before_the_next_request(run: Run) -> None:
    status = run.status("limited")
    assert status["phase"] == "Cancelled"
    assert "maxTurns" in status["error"]
    assert status["turns"] == 1
    assert len(run.chats_of("limited")) == 1
    phases = [new for _, new, _ in run.repo.transitions("Task", "limited")]
    assert "ToolCallsPending" in phases
    assert phases[-1] == "Cancelled"
    toolcall = run.repo.status("toolcalls", f"limited-{status['toolCallRequestId']}-tc-01")
    assert toolcall is not None
    assert toolcall["status"]["phase"] == "Failed"  # nothing is left running behind the cancelled task


def test_every_task_history_is_a_valid_chain(run: Run) -> None:
    for task in MESSAGES:
        moves = run.repo.transitions("Task", task)
        assert moves[0][0] == "-"
        for (_, new, _), (old, _, commit) in itertools.pairwise(moves):
            assert old == new, f"{task}: {commit.sha[:10]} breaks the chain"


def test_a_missing_secret_is_an_llm_error_naming_it(run: Run) -> None:
    document = run.repo.status("llms", "keyless")
    assert document is not None
    status = document["status"]
    assert status["status"] == "Error"
    assert status["ready"] is False
    detail = status["statusDetail"]
    assert 'LLM "keyless"' in detail
    assert '"absent-secret"' in detail
    assert "E2E_ABSENT_KEY" in detail
    assert str(run.repo.secrets) in detail  # where it looked: the secrets dir ...
    assert "environment" in detail  # ... and the environment
    agent = run.repo.status("agents", "keyless-agent")
    assert agent is not None
    assert agent["status"]["status"] == "Pending"
    assert "keyless" in agent["status"]["statusDetail"]
    assert run.status("stranded")["phase"] == "Pending"
    assert run.chats_of("stranded") == []


def test_the_key_is_nowhere_even_when_the_provider_echoes_it(run: Run) -> None:
    status = run.status("leaky-error")
    assert status["phase"] == "Failed"  # the request was made, and refused with the key in the message
    assert "Incorrect API key provided" in status["error"]
    history = git(run.repo.path, "log", "-p", "acp/status")
    assert status_path(Kind.Task, "leaky-error") in history
    assert "status/llms/keyless.yaml" in history
    assert run.secret not in history
    assert run.secret not in run.serve.stderr
    assert run.secret not in run.serve.stdout


def test_a_failed_task_says_what_failed_once(run: Run) -> None:
    detail = run.status("refused")["statusDetail"]
    assert PROVIDER_400 in detail
    assert detail.count("LLM request failed") == 1, detail
