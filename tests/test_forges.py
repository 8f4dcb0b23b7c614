"""Forge clients against the fake forge over real HTTP, one suite run against every forge.

The fake speaks the documented endpoints of GitHub, Gitea and GitLab and merges into a real git
repository, so "merged" here means a real `--no-ff` merge commit on `main` authored by the reviewer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from gitops_acp.errors import PermanentForgeError, TemporaryForgeError
from gitops_acp.humans import forges
from gitops_acp.humans.forges.base import PRState, RateBudget
from gitops_acp.resources.loader import load_file
from tests.conftest import commit_files, git
from tests.fakes.forges import FakeForge, Scripted

FORGES = ["github", "gitea", "gitlab"]
HEAD = "acp/approvals/t-abc-tc-01"
REVIEWERS = {"github": ["alice"], "gitea": ["alice"], "gitlab": ["alice", "bob"]}


@pytest.fixture
def fake(repo: Path) -> Iterator[FakeForge]:
    commit_files(repo, {"README.md": "hello\n"}, "readme")
    git(repo, "branch", HEAD)
    git(repo, "checkout", "-q", HEAD)
    commit_files(repo, {"approvals/t-abc-tc-01.yaml": "kind: Approval\n"}, "propose")
    git(repo, "checkout", "-q", "main")
    with FakeForge(repo) as server:
        yield server


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_client(fake: FakeForge, forge: str, body: Any, *, token: str | None = None, **kw: Any) -> Any:
    async with httpx2.AsyncClient() as http:
        client = forges.connect(
            forge,
            api_url=forges.api_url_for(forge, fake.api_url(forge)),
            repository=kw.pop("repository", fake.repository),
            token=token or fake.token,
            http=http,
            budget=kw.pop("budget", RateBudget()),
            **kw,
        )
        return await body(client)


def _open(client: Any, forge: str) -> Any:
    return client.open_pull_request(
        head=HEAD,
        base="main",
        title="Approve shell__run for task t",
        body="| argument | value |\n| --- | --- |\n| cmd | `ls` |\n",
        labels=["acp-approval", "agents"],
        reviewers=REVIEWERS[forge],
    )


@pytest.mark.parametrize("forge", FORGES)
def test_open_records_title_body_labels_reviewers(fake: FakeForge, forge: str) -> None:
    pull = run(_with_client(fake, forge, lambda c: _open(c, forge)))
    held = fake.pulls[forge][pull.number]
    assert (held.head, held.base, held.title) == (HEAD, "main", "Approve shell__run for task t")
    assert "| cmd | `ls` |" in held.body
    assert held.labels == ["acp-approval", "agents"]
    assert held.reviewers == REVIEWERS[forge]
    assert pull.url.startswith(fake.url)
    assert str(pull.number) in pull.url


@pytest.mark.parametrize("forge", FORGES)
def test_find_after_a_crash_returns_the_same_pull_request(fake: FakeForge, forge: str) -> None:
    assert run(_with_client(fake, forge, lambda c: c.find_pull_request(HEAD))) is None
    opened = run(_with_client(fake, forge, lambda c: _open(c, forge)))
    found = run(_with_client(fake, forge, lambda c: c.find_pull_request(HEAD)))  # a new client: a restart
    assert found is not None
    assert (found.number, found.url) == (opened.number, opened.url)
    assert run(_with_client(fake, forge, lambda c: c.find_pull_request("acp/approvals/other"))) is None


@pytest.mark.parametrize("forge", FORGES)
def test_merged_is_a_real_merge_commit_by_the_reviewer(fake: FakeForge, repo: Path, forge: str) -> None:
    opened = run(_with_client(fake, forge, lambda c: _open(c, forge)))
    assert run(_with_client(fake, forge, lambda c: c.pull_request_state(opened.number))) == PRState.OPEN
    before = git(repo, "rev-parse", "main")
    fake.merge(forge, opened.number, by=("Alice", "alice@example.com"))
    assert run(_with_client(fake, forge, lambda c: c.pull_request_state(opened.number))) == PRState.MERGED
    parents = git(repo, "log", "-1", "--format=%P", "main").split()
    assert parents == [before, git(repo, "rev-parse", HEAD)]
    assert git(repo, "log", "-1", "--format=%an <%ae>", "main") == "Alice <alice@example.com>"
    assert git(repo, "show", "main:approvals/t-abc-tc-01.yaml") == "kind: Approval"


@pytest.mark.parametrize("forge", FORGES)
def test_closed_without_merging(fake: FakeForge, repo: Path, forge: str) -> None:
    opened = run(_with_client(fake, forge, lambda c: _open(c, forge)))
    before = git(repo, "rev-parse", "main")
    fake.close(forge, opened.number)
    assert run(_with_client(fake, forge, lambda c: c.pull_request_state(opened.number))) == PRState.CLOSED
    found = run(_with_client(fake, forge, lambda c: c.find_pull_request(HEAD)))
    assert found.state == PRState.CLOSED
    assert git(repo, "rev-parse", "main") == before


@pytest.mark.parametrize("forge", FORGES)
def test_bad_token_and_unknown_repository_are_permanent_and_never_show_the_token(
    fake: FakeForge, forge: str
) -> None:
    token = "wrong-token-do-not-leak"
    with pytest.raises(PermanentForgeError, match="token was refused") as bad:
        run(_with_client(fake, forge, lambda c: c.validate(), token=token))
    assert token not in str(bad.value)
    with pytest.raises(PermanentForgeError, match="not found") as missing:
        run(_with_client(fake, forge, lambda c: c.validate(), repository="acme/nope"))
    assert "acme/nope" in str(missing.value)
    assert fake.token not in str(missing.value)
    assert run(_with_client(fake, forge, lambda c: c.validate())).endswith("reachable")


@pytest.mark.parametrize("forge", FORGES)
def test_429_retry_after_is_waited_for(fake: FakeForge, forge: str) -> None:
    fake.script = [Scripted(status=429, headers={"Retry-After": "1"})]
    started = time.monotonic()
    assert run(_with_client(fake, forge, lambda c: c.validate())).endswith("reachable")
    assert time.monotonic() - started >= 0.95
    assert len(fake.requests) == 2


def test_github_secondary_limit_403_is_a_rate_limit_not_a_refusal(fake: FakeForge) -> None:
    fake.script = [
        Scripted(status=403, headers={"Retry-After": "1"}, body={"message": "secondary rate limit"})
    ]
    started = time.monotonic()
    assert run(_with_client(fake, "github", lambda c: c.validate())).endswith("reachable")
    assert time.monotonic() - started >= 0.95


@pytest.mark.parametrize(
    ("forge", "prefix"), [("github", "X-RateLimit-"), ("gitea", "X-RateLimit-"), ("gitlab", "RateLimit-")]
)
def test_exhausted_budget_waits_for_the_reset(fake: FakeForge, forge: str, prefix: str) -> None:
    reset = int(time.time()) + 2
    fake.script = [
        Scripted(headers={f"{prefix}Limit": "60", f"{prefix}Remaining": "0", f"{prefix}Reset": str(reset)})
    ]
    budget = RateBudget()

    async def twice(client: Any) -> float:
        await client.validate()
        assert budget.remaining == 0
        await client.validate()  # held back until the window resets
        return time.time()

    second_sent_by = run(_with_client(fake, forge, twice, budget=budget))
    assert second_sent_by >= reset - 0.05
    assert len(fake.requests) == 2


def test_a_long_wait_is_handed_back_as_temporary(fake: FakeForge) -> None:
    fake.script = [Scripted(status=429, headers={"Retry-After": "120"})]
    with pytest.raises(TemporaryForgeError, match="rate limit") as raised:
        run(_with_client(fake, "github", lambda c: c.validate()))
    assert raised.value.retry_after is not None
    assert raised.value.retry_after > 100


def test_5xx_is_retried_then_temporary(fake: FakeForge) -> None:
    fake.script = [Scripted(status=502)]
    assert run(_with_client(fake, "gitea", lambda c: c.validate())).endswith("reachable")
    fake.script = [Scripted(status=503)] * 4
    with pytest.raises(TemporaryForgeError):
        run(_with_client(fake, "gitea", lambda c: c.validate()))


def test_polling_is_gated_and_invalidated(fake: FakeForge) -> None:
    async def body(client: Any) -> None:
        opened = await _open(client, "github")
        seen = len(fake.requests)
        state, wait = await client.poll_state(opened.number)
        assert state == PRState.OPEN
        assert 59 < wait <= 60
        fake.close("github", opened.number)
        assert (await client.poll_state(opened.number))[0] == PRState.OPEN  # not asked again yet
        assert len(fake.requests) == seen
        client.invalidate()  # a webhook arrived
        assert (await client.poll_state(opened.number))[0] == PRState.CLOSED
        assert len(fake.requests) == seen + 1

    run(_with_client(fake, "github", body))


def test_poll_interval_stretches_when_the_budget_runs_low() -> None:
    now = 1000.0
    assert RateBudget().poll_interval(now, base=60, pending=5) == 60
    plenty = RateBudget(limit=5000, remaining=4000, reset_at=now + 3600)
    assert plenty.poll_interval(now, base=60, pending=10) == 60
    low = RateBudget(limit=5000, remaining=100, reset_at=now + 3600)  # 50 polls/hour for 100 PRs
    assert low.poll_interval(now, base=60, pending=100) == pytest.approx(7200)
    empty = RateBudget(limit=5000, remaining=3, reset_at=now + 900)
    assert empty.poll_interval(now, base=60, pending=1) == 900


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("git@github.com:acme/agents.git", "acme/agents"),
        ("https://github.com/acme/agents", "acme/agents"),
        ("https://token@gitlab.example.com/group/sub/project.git", "group/sub/project"),
        ("ssh://git@gitea.example.com:2222/acme/agents.git", "acme/agents"),
        ("/srv/git/agents.git", None),
        ("https://example.com/lonely", None),
    ],
)
def test_repository_from_url(url: str, expected: str | None) -> None:
    assert forges.repository_from_url(url) == expected


def test_api_url_defaults() -> None:
    assert forges.api_url_for("github", None) == "https://api.github.com"
    assert forges.api_url_for("gitlab", "https://gitlab.example.com/") == "https://gitlab.example.com/api/v4"
    assert forges.api_url_for("gitea", "https://gitea.example.com") == "https://gitea.example.com/api/v1"
    with pytest.raises(PermanentForgeError, match="apiUrl is required for gitea"):
        forges.api_url_for("gitea", None)


@pytest.mark.parametrize(
    ("git", "message"),
    [
        ("{forge: github}", "spec.git: forge github needs tokenFrom"),
        (
            "{forge: gitea, tokenFrom: {secretKeyRef: {name: g, key: T}}}",
            "spec.git: forge gitea needs apiUrl",
        ),
        (
            "{forge: github, repository: acme, tokenFrom: {secretKeyRef: {name: g, key: T}}}",
            "spec.git.repository: 'acme' is not owner/name (GitLab: group/subgroup/project)",
        ),
    ],
)
def test_a_forge_channel_missing_what_it_needs_is_refused_with_the_field(git: str, message: str) -> None:
    head = "apiVersion: acp.gitops.dev/v1alpha1\nkind: ContactChannel\nmetadata: {name: r}\n"
    text = f"{head}spec:\n  git: {git}\n"
    result = load_file("cc.yaml", text.encode())
    (error,) = result.errors
    assert str(error).startswith(f'cc.yaml:5: ContactChannel "r": {message}')
