"""The fake GitHub and our client, checked against GitHub's own OpenAPI description (npm @octokit/openapi).

The whole approval flow our client drives (open with labels and reviewers, find, state, who merged
and the reviews, comment, close) goes through the fake with validation on: every request we send
and every answer the fake gives must match the description. The validator is shown to fail on a
wrong field, so a green run means something.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2

from gitops_acp.humans import forges
from gitops_acp.humans.forges import PRState
from tests.conftest import git
from tests.fakes import github_payloads as gh
from tests.fakes.forges import FakeForge
from tests.fakes.openapi import GitHubOpenAPI, spec_path

HEAD = "acp/approvals/t1-abc-tc-01"


def test_the_description_comes_from_the_npm_package_and_is_read_once(github_openapi: GitHubOpenAPI) -> None:
    path = spec_path()
    assert path is not None
    assert path.name == "api.github.com.json"
    assert github_openapi.size > 5_000_000  # the whole description (13 MB in 23.0.2) ...
    assert GitHubOpenAPI.load(path) is github_openapi  # ... parsed once per session
    assert ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews") in github_openapi.operations


def test_the_validator_catches_a_wrong_answer_and_a_wrong_request(github_openapi: GitHubOpenAPI) -> None:
    user = gh.simple_user("https://api.github.com", "https://github.com", "alice", 1)
    pull = gh.pull_request(
        "https://api.github.com",
        "https://github.com",
        "acme/agents",
        number=1,
        title="t",
        body="b",
        state="merged",
        head=("x", "a" * 40),
        base=("main", "b" * 40),
        author=user,
        merged_by=user,
        merge_commit="c" * 40,
        labels=[],
        reviewers=[],
    )
    path = "/repos/acme/agents/pulls/1"

    def answer(data: dict[str, object]) -> list[str]:
        return github_openapi.check(
            "GET", path, query={}, body=None, status=200, answer=json.dumps(data).encode()
        )

    assert answer(pull) == []
    assert any("merged_by" in e for e in answer({**pull, "merged_by": "alice"}))  # a login, not a user
    assert any("merged" in e for e in answer({k: v for k, v in pull.items() if k != "merged"}))
    no_head = json.dumps({"title": "t", "base": "main"}).encode()
    refused = github_openapi.check(
        "POST", "/repos/acme/agents/pulls", query={}, body=no_head, status=201, answer=b"{}"
    )
    assert refused
    assert "request" in refused[0]


def test_the_whole_approval_flow_of_our_client_matches_the_description(
    repo: Path, github_openapi: GitHubOpenAPI
) -> None:
    git(repo, "branch", HEAD)

    async def flow(fake: FakeForge) -> None:
        async with httpx2.AsyncClient() as http:
            client = forges.connect(
                "github",
                api_url=fake.api_url("github"),
                repository=fake.repository,
                token=fake.token,
                http=http,
                budget=forges.RateBudget(),
            )
            assert "reachable" in await client.validate()
            opened = await client.open_pull_request(
                head=HEAD, base="main", title="t", body="b", labels=["acp-approval"], reviewers=["alice"]
            )
            assert await client.find_pull_request(HEAD) == opened
            assert await client.pull_request_state(opened.number) == PRState.OPEN
            fake.review("github", opened.number, "alice")
            info = await client.merge_info(opened.number)
            assert (info.state, info.merged_by, info.approved_by) == (PRState.OPEN, None, ("alice",))
            await client.comment(opened.number, "decided elsewhere")
            await client.close_pull_request(opened.number)
            assert await client.pull_request_state(opened.number) == PRState.CLOSED
            await client.close_pull_request(opened.number)  # closing a closed one is fine

    with FakeForge(repo, openapi=github_openapi) as fake:
        asyncio.run(flow(fake))
    assert fake.violations == []
    methods = {method for method, _ in fake.checked}
    assert methods == {"GET", "POST", "PATCH"}
    assert len(fake.checked) == 12  # validate 1, open 3, find 1, state 2, who 2, comment 1, close 2
    assert fake.pulls["github"][1].comments == ["decided elsewhere"]
