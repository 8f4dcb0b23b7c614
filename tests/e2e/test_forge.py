"""Approvals and questions to humans as forge pull requests (DESIGN §5), end to end: the real CLI, a
real git repository, the fake forge speaking GitHub's, Gitea's and GitLab's documented APIs over HTTP,
and `serve --http` receiving signed webhooks.

The fake forge works on the same local repository the reconciler reads (no remote yet): merging a
pull request there is a real `--no-ff` merge commit on `main` authored by the reviewer.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import git
from tests.e2e.conftest import (
    API,
    STATUS_BRANCH,
    AcpRepo,
    Background,
    Stub,
    call,
    cli,
    status_files,
    task_yaml,
    tool_agent_yaml,
    wait_for,
)
from tests.e2e.test_approvals import ALICE, counted, gated_server_yaml, git_as
from tests.fakes.forges import FakeForge, sign_webhook
from tests.fakes.openapi import GitHubOpenAPI

pytestmark = pytest.mark.e2e

MALLORY = ("Mallory", "mallory@example.com")
TOKEN = "forge-token-e2e-do-not-leak-7f3a"
WEBHOOK_SECRET = "webhook-secret-e2e-do-not-leak-91c2"


def channel_yaml(forge: str, api_url: str, *, repository: str = "acme/agents", extra: str = "") -> str:
    return f"""\
apiVersion: {API}
kind: ContactChannel
metadata:
  name: reviewers
spec:
  type: git
  git:
    forge: {forge}
    apiUrl: {api_url}
    repository: {repository}
    tokenFrom:
      secretKeyRef: {{name: forge-token, key: FORGE_TOKEN}}
    labels: [acp-approval]
    reviewers: [alice]
{extra}"""


@pytest.fixture
def fake(acp_repo: AcpRepo, github_openapi: GitHubOpenAPI) -> Iterator[FakeForge]:
    """The fake forges on the repository; every GitHub exchange checked against GitHub's OpenAPI."""
    (acp_repo.secrets / "forge-token").mkdir()
    (acp_repo.secrets / "forge-token" / "FORGE_TOKEN").write_text(TOKEN + "\n")
    with FakeForge(acp_repo.path, token=TOKEN, openapi=github_openapi) as server:
        yield server
    assert server.violations == []


def setup_tasks(
    repo: AcpRepo, stub: Stub, marker: str, fake: FakeForge, forge: str, tasks: list[str], extra: str = ""
) -> Path:
    """A channel on `forge`, the gated MCP server, and one task per name each calling `gated__count`."""
    counter = repo.logs / "counter"
    stub.rules(
        {"when": "first", "toolCalls": [call("gated__count", label="{user}")]},
        {"when": "tool", "content": "{tool}"},
    )
    repo.commit(
        {
            "contactchannels/reviewers.yaml": channel_yaml(forge, fake.api_url(forge), extra=extra),
            "mcpservers/gated.yaml": gated_server_yaml(
                "gated", marker=marker, counter=counter, channel="reviewers"
            ),
            "agents/gated.yaml": tool_agent_yaml("gated", servers=("gated",)),
            **{f"tasks/{t}.yaml": task_yaml(t, t, agent="gated") for t in tasks},
        },
        "Tasks whose calls need approval through pull requests",
    )
    return counter


def calls(repo: AcpRepo) -> dict[str, dict[str, Any]]:
    """Each task's tool call by task name."""
    return {
        d["spec"]["taskRef"]["name"]: d
        for (plural, _), d in status_files(repo).items()
        if plural == "toolcalls"
    }


def leaks(repo: AcpRepo, *secrets: str) -> list[str]:
    """Secrets found anywhere in the repository's history (every ref) or its logs."""
    history = subprocess.run(
        ["git", "log", "-p", "--all"], cwd=repo.path, capture_output=True, text=True, check=True
    ).stdout
    logs = "".join(p.read_text(errors="replace") for p in repo.logs.rglob("*") if p.is_file())
    return [s for s in secrets if s in history or s in logs]


# -- the approval flow through each forge -----------------------------------------------------------


@pytest.mark.parametrize("forge", ["github", "gitea", "gitlab"])
def test_a_merged_pull_request_runs_the_tool_and_a_closed_one_rejects_it(
    acp_repo: AcpRepo,
    stub: Stub,
    marker: str,
    fake: FakeForge,
    serve_once: Callable[..., subprocess.CompletedProcess[str]],
    forge: str,
) -> None:
    repo = acp_repo
    tasks = ["merged", "closed", "offline"]
    counter = setup_tasks(repo, stub, marker, fake, forge, tasks, extra="    approvers: [alice]\n")

    first = serve_once(repo)
    assert first.returncode == 0, first.stderr
    waiting = calls(repo)
    assert {t: d["status"]["phase"] for t, d in waiting.items()} == dict.fromkeys(
        tasks, "AwaitingHumanApproval"
    )
    channel = repo.status("contactchannels", "reviewers")
    assert channel is not None
    assert channel["status"]["status"] == "Ready", channel
    numbers = {}
    for task, document in waiting.items():
        approval = document["status"]["approval"]
        pull = fake.pulls[forge][approval["pullRequest"]]
        numbers[task] = pull.number
        assert pull.head == approval["branch"] == f"acp/approvals/{document['metadata']['name']}"
        assert approval["pullRequestUrl"].startswith(fake.url)
        assert str(pull.number) in approval["pullRequestUrl"]
        assert pull.title == f"Approve gated__count for task {task}"
        assert f'| `label` | `"{task}"` |' in pull.body  # the arguments as a Markdown table
        assert "**Task request:** " + task in pull.body
        assert "Approve:** merge" in pull.body
        assert (pull.base, pull.labels, pull.reviewers) == ("main", ["acp-approval"], ["alice"])
        assert f"#{pull.number}" in document["status"]["statusDetail"]
    assert counted(counter) == []

    # `gitops-acp approve` merges to main as the local git user: the forge never saw a merge.
    offline = waiting["offline"]["metadata"]["name"]
    approved = cli("--repo", str(repo.path), "approve", offline)
    assert approved.returncode == 0, approved.stderr
    fake.merge(forge, numbers["merged"], by=MALLORY, login="alice")  # the commit says Mallory
    fake.close(forge, numbers["closed"])
    second = serve_once(repo)
    assert second.returncode == 0, second.stderr

    ended = calls(repo)
    assert ended["merged"]["status"]["phase"] == "Succeeded"
    assert ended["merged"]["status"]["approval"]["decidedBy"] == "alice"
    assert ended["merged"]["status"]["approval"]["decidedVia"] == f"{forge} merged_by"
    assert ended["closed"]["status"]["phase"] == "ToolCallRejected"
    assert ended["closed"]["status"]["result"] == "Rejected: closed without merging"
    assert ended["offline"]["status"]["phase"] == "ToolCallRejected"
    assert ended["offline"]["status"]["result"].startswith(f"Rejected: {forge} cannot say who merged it")
    assert counted(counter) == ["merged"]
    assert repo.finished_tasks() == set(tasks)
    assert len(fake.pulls[forge]) == 3  # the restart found its pull requests, opened none
    # Decided elsewhere: its pull request is told how and closed; the others are left as they were.
    pulls = {t: fake.pulls[forge][n] for t, n in numbers.items()}
    assert (pulls["merged"].state, pulls["merged"].comments) == ("merged", [])
    assert (pulls["closed"].state, pulls["closed"].comments) == ("closed", [])
    assert pulls["offline"].state == "closed"
    (comment,) = pulls["offline"].comments
    assert comment.startswith(
        f"gitops-acp: tool call `{offline}` was rejected: {forge} cannot say who merged"
    )
    # Every call ended: every approval branch is gone.
    assert git(repo.path, "for-each-ref", "--format=%(refname)", "refs/heads/acp/approvals/") == ""
    assert "Traceback" not in first.stderr + second.stderr
    assert leaks(repo, TOKEN) == []


def test_a_refused_token_is_an_error_on_the_channel_and_on_the_call(
    acp_repo: AcpRepo,
    stub: Stub,
    marker: str,
    fake: FakeForge,
    serve_once: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    repo = acp_repo
    wrong = "wrong-token-e2e-do-not-leak-55d1"
    (repo.secrets / "forge-token" / "FORGE_TOKEN").write_text(wrong)
    setup_tasks(repo, stub, marker, fake, "github", ["denied"])

    result = serve_once(repo)
    assert result.returncode == 0, result.stderr
    channel = repo.status("contactchannels", "reviewers")
    assert channel is not None
    assert channel["status"]["status"] == "Error"
    assert "token was refused" in channel["status"]["statusDetail"]
    status = calls(repo)["denied"]["status"]
    assert status["phase"] == "ErrorRequestingHumanApproval"
    assert "could not open the approval pull request" in status["error"]
    assert "tokenFrom" in status["error"]
    task = repo.status("tasks", "denied")
    assert task is not None
    assert task["status"]["phase"] == "FinalAnswer"
    assert fake.pulls["github"] == {}
    assert leaks(repo, wrong) == []
    assert wrong not in result.stderr


# -- questions through each forge ------------------------------------------------------------------


def question_channel_yaml(forge: str, api_url: str) -> str:
    """The `team` channel on `forge`, with labels and reviewers every fake forge knows."""
    return (
        channel_yaml(forge, api_url)
        .replace("name: reviewers", "name: team")
        .replace("labels: [acp-approval]", "labels: [agents]")
        .replace("reviewers: [alice]", "reviewers: [bob]")
    )


def setup_questions(repo: AcpRepo, stub: Stub, fake: FakeForge, forge: str, tasks: list[str]) -> str:
    """The `team` channel on `forge` and one task per name whose agent asks it a question; main's sha."""
    stub.rules(
        {
            "when": "first",
            "toolCalls": [call("team__human_contact", message="Which city for {user}?\nWe have three.")],
        },
        {"when": "tool", "content": "Human said: {tool}"},
    )
    return repo.commit(
        {
            "contactchannels/team.yaml": question_channel_yaml(forge, fake.api_url(forge)),
            "agents/asker.yaml": tool_agent_yaml("asker") + "  humanContactChannels:\n    - name: team\n",
            **{f"tasks/{t}.yaml": task_yaml(t, t, agent="asker") for t in tasks},
        },
        "Tasks whose agent asks a person through pull requests",
    )


@pytest.mark.parametrize("forge", ["github", "gitea", "gitlab"])
def test_a_question_pull_request_answered_by_merge_or_closed_unanswered(
    acp_repo: AcpRepo,
    stub: Stub,
    fake: FakeForge,
    serve_once: Callable[..., subprocess.CompletedProcess[str]],
    forge: str,
) -> None:
    repo = acp_repo
    tasks = ["answered", "closed"]
    main = setup_questions(repo, stub, fake, forge, tasks)

    first = serve_once(repo)
    assert first.returncode == 0, first.stderr
    waiting = calls(repo)
    assert {t: d["status"]["phase"] for t, d in waiting.items()} == dict.fromkeys(tasks, "AwaitingHumanInput")
    numbers = {}
    for task, document in waiting.items():
        name = document["metadata"]["name"]
        contact = document["status"]["humanContact"]
        pull = fake.pulls[forge][contact["pullRequest"]]
        numbers[task] = pull.number
        assert pull.head == contact["branch"] == f"acp/questions/{name}"
        assert contact["pullRequestUrl"].startswith(fake.url)
        assert str(pull.number) in contact["pullRequestUrl"]
        assert pull.title == f"Question from task {task}: Which city for {task}?"
        assert f"> Which city for {task}?\n> We have three." in pull.body
        assert f"**Task request:** {task}" in pull.body
        assert f"`responses/{name}.yaml`" in pull.body
        assert (pull.base, pull.labels, pull.reviewers) == ("main", ["agents"], ["bob"])
        assert f"#{pull.number}" in document["status"]["statusDetail"]

    again = serve_once(repo)  # a restart while nobody has answered: the same pull requests, no new one
    assert again.returncode == 0, again.stderr
    assert len(fake.pulls[forge]) == 2
    assert {t: d["status"]["humanContact"]["pullRequest"] for t, d in calls(repo).items()} == numbers

    # answered: Alice writes the answer on the pull request's branch, then merges it on the forge
    name = waiting["answered"]["metadata"]["name"]
    path = f"responses/{name}.yaml"
    git_as(repo, ALICE, "checkout", "-q", f"acp/questions/{name}")
    document = yaml.safe_load((repo.path / path).read_text())
    document["spec"]["response"] = "Lisbon"
    (repo.path / path).write_text(yaml.safe_dump(document, sort_keys=False))
    git_as(repo, ALICE, "commit", "-q", "-am", "Answer: Lisbon")
    git_as(repo, ALICE, "checkout", "-q", "main")
    fake.merge(forge, numbers["answered"], by=ALICE)
    fake.close(forge, numbers["closed"])  # closed: nobody wants to answer
    last = serve_once(repo)
    assert last.returncode == 0, last.stderr

    ended = calls(repo)
    assert (ended["answered"]["status"]["phase"], ended["answered"]["status"]["result"]) == (
        "Succeeded",
        "Lisbon",
    )
    assert ended["answered"]["status"]["humanContact"]["respondedBy"] == "alice"
    assert ended["answered"]["status"]["humanContact"]["respondedVia"] == f"{forge} merged_by"
    assert ended["closed"]["status"]["phase"] == "Failed"
    assert ended["closed"]["status"]["error"] == "the question was closed without an answer"
    outputs = {t: (repo.status("tasks", t) or {})["status"]["output"] for t in tasks}
    assert outputs == {
        "answered": "Human said: Lisbon",
        "closed": "Human said: Error: the question was closed without an answer",
    }
    assert len(fake.pulls[forge]) == 2
    assert git(repo.path, "rev-parse", f"{repo.main_sha()}^1") == main  # only the person's merge
    assert "Traceback" not in first.stderr + again.stderr + last.stderr
    assert leaks(repo, TOKEN) == []


# -- serve --http ---------------------------------------------------------------------------------


def http_url(server: Background) -> str:
    """The address `serve --http 127.0.0.1:0` printed."""

    def printed() -> str | None:
        match = re.search(r"listening on (http://[0-9.]+:\d+)", server.stderr())
        return match[1] if match else None

    url: str = wait_for(printed, timeout=60, interval=0.1, what="serve --http to listen")
    return url


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_webhook_signatures_are_checked_for_every_forge(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    secret_file = acp_repo.logs / "webhook-secret"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    server = serve_bg(acp_repo, "--http", "127.0.0.1:0", "--webhook-secret-file", str(secret_file))
    url = http_url(server)
    with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
        assert response.status == 200
    body = b'{"ref": "refs/heads/main"}'
    events = {
        "github": {"X-GitHub-Event": "push"},
        "gitea": {"X-Gitea-Event": "push"},
        "gitlab": {"X-Gitlab-Event": "Push Hook"},
    }
    for forge, event in events.items():
        target = f"{url}/webhooks/{forge}"
        signed = {**event, **sign_webhook(forge, WEBHOOK_SECRET, body)}
        assert post(target, body, signed) == 202, forge
        forged = {**event, **sign_webhook(forge, "not-the-secret", body)}
        assert post(target, body, forged) == 401, forge
        assert post(target, body, event) == 401, forge  # no signature at all
        tampered = {**event, **sign_webhook(forge, WEBHOOK_SECRET, body)}
        if forge != "gitlab":  # GitLab signs nothing: its token is the whole check
            assert post(target, body + b" ", tampered) == 401, forge
    forgejo = {"X-Forgejo-Event": "push", **sign_webhook("forgejo", WEBHOOK_SECRET, body)}
    assert post(f"{url}/webhooks/gitea", body, forgejo) == 202
    # A redelivery (same delivery id) is acknowledged and dropped; a forged one is still refused.
    delivery = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    signed = {**delivery, **sign_webhook("github", WEBHOOK_SECRET, body)}
    assert post(f"{url}/webhooks/github", body, signed) == 202
    assert post(f"{url}/webhooks/github", body, signed) == 200
    assert post(f"{url}/webhooks/github", body, {**delivery, **sign_webhook("github", "x", body)}) == 401
    stderr = server.stderr()
    assert stderr.count("refused: missing or bad signature") == 9
    assert WEBHOOK_SECRET not in stderr
    assert "Traceback" not in stderr
    assert server.proc.poll() is None


def test_without_a_secret_webhooks_are_refused_and_the_log_says_so(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    server = serve_bg(acp_repo, "--http", "127.0.0.1:0")
    url = http_url(server)
    body = b"{}"
    assert post(f"{url}/webhooks/github", body, {"X-GitHub-Event": "push"}) == 403
    assert post(f"{url}/webhooks/gitlab", body, {"X-Gitlab-Token": ""}) == 403
    assert "no --webhook-secret-file" in server.stderr()


def test_a_webhook_makes_a_closed_pull_request_seen_without_waiting_for_the_poll(
    acp_repo: AcpRepo, stub: Stub, marker: str, fake: FakeForge, serve_bg: Callable[..., Background]
) -> None:
    repo = acp_repo
    secret_file = repo.logs / "webhook-secret"
    secret_file.write_text(WEBHOOK_SECRET)
    counter = setup_tasks(repo, stub, marker, fake, "github", ["hooked"])
    # Polling every 10 minutes: only the webhook can make the close seen within the test's deadline.
    server = serve_bg(
        repo,
        "--http",
        "127.0.0.1:0",
        "--webhook-secret-file",
        str(secret_file),
        "--forge-poll-interval",
        "600",
    )
    fake.webhook_url, fake.webhook_secret = http_url(server), WEBHOOK_SECRET

    def pull_request() -> int | None:
        document = calls(repo).get("hooked")
        approval = (document or {}).get("status", {}).get("approval") or {}
        return approval.get("pullRequest")

    number = wait_for(pull_request, timeout=60, interval=0.2, what="the approval pull request")
    time.sleep(1.0)  # the reconciler has settled into waiting (its poll is 600 s away)
    closed_at = time.monotonic()
    fake.close("github", number)  # sends the signed pull_request event to serve --http

    def rejected() -> bool:
        return calls(repo)["hooked"]["status"]["phase"] == "ToolCallRejected"

    wait_for(rejected, timeout=15, interval=0.1, what="the close to be seen through the webhook")
    assert time.monotonic() - closed_at < 15
    assert calls(repo)["hooked"]["status"]["result"] == "Rejected: closed without merging"
    assert counted(counter) == []
    assert git(repo.path, "rev-parse", "--verify", "-q", f"refs/heads/{STATUS_BRANCH}")
    assert server.proc.poll() is None
    assert "Traceback" not in server.stderr()


def test_a_webhook_makes_a_closed_question_pull_request_seen_without_waiting_for_the_poll(
    acp_repo: AcpRepo, stub: Stub, fake: FakeForge, serve_bg: Callable[..., Background]
) -> None:
    repo = acp_repo
    secret_file = repo.logs / "webhook-secret"
    secret_file.write_text(WEBHOOK_SECRET)
    setup_questions(repo, stub, fake, "github", ["hooked"])
    server = serve_bg(
        repo,
        "--http",
        "127.0.0.1:0",
        "--webhook-secret-file",
        str(secret_file),
        "--forge-poll-interval",
        "600",
    )
    fake.webhook_url, fake.webhook_secret = http_url(server), WEBHOOK_SECRET

    def pull_request() -> int | None:
        document = calls(repo).get("hooked")
        contact = (document or {}).get("status", {}).get("humanContact") or {}
        return contact.get("pullRequest")

    number = wait_for(pull_request, timeout=60, interval=0.2, what="the question's pull request")
    time.sleep(1.0)  # the reconciler has settled into waiting (its poll is 600 s away)
    fake.close("github", number)  # sends the signed pull_request event to serve --http

    def failed() -> bool:
        return calls(repo)["hooked"]["status"]["phase"] == "Failed"

    wait_for(failed, timeout=15, interval=0.1, what="the close to be seen through the webhook")
    assert calls(repo)["hooked"]["status"]["error"] == "the question was closed without an answer"
    assert len(fake.pulls["github"]) == 1
    assert server.proc.poll() is None
    assert "Traceback" not in server.stderr()
