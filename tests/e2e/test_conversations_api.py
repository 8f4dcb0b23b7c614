"""Follow-ups and forks over the HTTP API (DESIGN §11, §12): `POST /v1/tasks/{name}/messages` and
`forkFrom` on `POST /v1/tasks`, against a real `serve --http`; every answer is checked against
`/v1/openapi.json` (the Client of tests/e2e/test_api.py)."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import git
from tests.e2e.conftest import wait_for
from tests.e2e.test_api import Served, author_committer, served, task_body, wait_phase

pytestmark = pytest.mark.e2e

__all__ = ["served"]  # the module-scoped server of test_api.py, started again for this module


def users(document: dict) -> list[str]:
    return [m["content"] for m in document["status"]["contextWindow"] if m["role"] == "user"]


def test_a_follow_up_over_http_is_committed_as_the_caller_and_answered(served: Served) -> None:
    client, repo = served.client, served.repo
    assert client("POST", "/v1/tasks", task_body("chat", "Hello there")).status == 201
    wait_phase(client, "chat", "FinalAnswer")
    sent = client("POST", "/v1/tasks/chat/messages", {"content": "And now?"})
    assert sent.status == 201, sent.body
    assert (sent.body["name"], sent.body["followUp"], sent.body["path"]) == ("chat", 1, "tasks/chat.yaml")
    sha = repo.main_sha()
    assert sent.body["commit"] == sha
    assert author_committer(repo.path, sha)[0] == "Alice Operator <alice@example.com>"
    spec = yaml.safe_load(git(repo.path, "show", f"{sha}:tasks/chat.yaml"))["spec"]
    assert spec["followUps"] == [{"content": "And now?"}]
    second = client("POST", "/v1/tasks/chat/messages", {"content": "And then?"})  # may arrive mid-answer
    assert second.status == 201, second.body
    assert second.body["followUp"] == 2

    def answered() -> bool:
        status = client("GET", "/v1/tasks/chat", who="vic").body["status"]
        return status.get("followUpsApplied") == 2 and status["phase"] == "FinalAnswer"

    wait_for(answered, timeout=60, what="both follow-ups answered")
    document = client("GET", "/v1/tasks/chat", who="vic").body
    assert users(document) == ["Hello there", "And now?", "And then?"]
    assert document["status"]["output"] == "Echo: And then?"


def test_follow_up_refusals(served: Served) -> None:
    client = served.client
    assert client("POST", "/v1/tasks/nobody/messages", {"content": "hi"}).status == 404
    assert client("POST", "/v1/tasks", task_body("refuse", "Hi")).status == 201
    empty = client("POST", "/v1/tasks/refuse/messages", {"content": "  "})
    assert empty.status == 422
    assert "content" in empty.body["error"]["message"]
    assert client("POST", "/v1/tasks/refuse/messages", {"content": "x"}, who="vic").status == 403
    extra = client("POST", "/v1/tasks/refuse/messages", {"content": "x", "role": "system"})
    assert extra.status == 422


def test_fork_over_http_from_the_newest_checkpoint_and_a_commit(served: Served) -> None:
    client, repo = served.client, served.repo
    assert client("POST", "/v1/tasks", task_body("root", "Root question")).status == 201
    wait_phase(client, "root", "FinalAnswer")
    newest = client(
        "POST", "/v1/tasks", {"name": "twig", "forkFrom": {"task": "root"}, "userMessage": "Twig?"}
    )
    assert newest.status == 201, newest.body
    fork = newest.body["spec"]["forkFrom"]
    assert fork["task"] == "root"
    assert len(fork["commit"]) == 40  # resolved to the checkpoint's full sha
    assert newest.body["spec"]["agentRef"] == {"name": "e2e-agent"}  # root's agent
    document = wait_phase(client, "twig", "FinalAnswer")
    assert users(document) == ["Root question", "Twig?"]
    # From that same commit given by its short sha, without a message: answered at once.
    short = client(
        "POST", "/v1/tasks", {"name": "leaf", "forkFrom": {"task": "root", "commit": fork["commit"][:10]}}
    )
    assert short.status == 201, short.body
    leaf = wait_phase(client, "leaf", "FinalAnswer")
    assert leaf["status"]["output"] == "Echo: Root question"
    refused = client(
        "POST", "/v1/tasks", {"name": "nope", "forkFrom": {"task": "root", "commit": repo.main_sha()}}
    )
    assert refused.status == 422
    assert "not a checkpoint" in refused.body["error"]["message"]
