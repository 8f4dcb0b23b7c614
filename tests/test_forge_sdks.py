"""The fake forges read by the vendors' own SDKs: `githubkit` for GitHub, `python-gitlab` for GitLab.

Who approved is read from field names (`merged_by`, reviews' `user.login` and `state`, GitLab's
`merge_user` and `approved_by[].user.username`). If the fake used a wrong name, our client could
agree with it and a wrong approver would pass unnoticed; an SDK built from the vendor's own
description reads the same answers here and must see the same people. The GitHub side also runs
with the OpenAPI validation on (tests/fakes/openapi.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import gitlab
import httpx2
import pytest
from githubkit import GitHub

from gitops_acp.humans import forges
from tests.conftest import git
from tests.fakes.forges import FakeForge
from tests.fakes.openapi import GitHubOpenAPI

HEAD = "acp/approvals/t1-abc-tc-01"


@pytest.fixture
def fake(repo: Path, github_openapi: GitHubOpenAPI) -> Iterator[FakeForge]:
    git(repo, "branch", HEAD)
    with FakeForge(repo, openapi=github_openapi) as server:
        yield server
    assert server.violations == []


def open_review_merge(fake: FakeForge, forge: str) -> tuple[int, forges.MergeInfo]:
    """Open a pull request with our client, have bob approve and mallory request changes, alice merge."""

    async def go() -> tuple[int, forges.MergeInfo]:
        async with httpx2.AsyncClient() as http:
            client = forges.connect(
                forge,
                api_url=forges.api_url_for(forge, fake.api_url(forge)),
                repository=fake.repository,
                token=fake.token,
                http=http,
                budget=forges.RateBudget(),
            )
            pull = await client.open_pull_request(
                head=HEAD,
                base="main",
                title="Approve x",
                body="b",
                labels=["acp-approval"],
                reviewers=["bob"],
            )
            fake.review(forge, pull.number, "bob", "APPROVED")
            if forge != "gitlab":
                fake.review(forge, pull.number, "mallory", "CHANGES_REQUESTED")
            fake.merge(forge, pull.number, by=("Someone Else", "else@example.com"), login="alice")
            return pull.number, await client.merge_info(pull.number)

    return asyncio.run(go())


def test_githubkit_reads_the_same_merger_and_reviews_as_our_client(fake: FakeForge) -> None:
    number, ours = open_review_merge(fake, "github")
    owner, name = fake.repository.split("/")
    with GitHub(fake.token, base_url=fake.api_url("github") + "/") as sdk:
        pull = sdk.rest.pulls.get(owner, name, number).parsed_data
        reviews = sdk.rest.pulls.list_reviews(owner, name, number).parsed_data
        found = sdk.rest.pulls.list(owner, name, state="all", head=f"{owner}:{HEAD}").parsed_data
    assert (pull.merged, pull.state, pull.head.ref, pull.base.ref) == (True, "closed", HEAD, "main")
    assert pull.merged_by is not None
    assert pull.merged_by.login == ours.merged_by == "alice"
    assert [label.name for label in pull.labels] == ["acp-approval"]
    assert [(r.user.login, r.state) for r in reviews if r.user] == [
        ("bob", "APPROVED"),
        ("mallory", "CHANGES_REQUESTED"),
    ]
    assert ours.approved_by == ("bob",)
    assert [p.number for p in found] == [number]
    assert {"GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews", "POST /repos/{owner}/{repo}/pulls"} <= {
        f"{m} {p}"
        for m, p in fake.openapi.operations  # type: ignore[union-attr]
    }
    assert len(fake.checked) >= 7  # every exchange of both clients was validated


def test_python_gitlab_reads_the_same_merger_and_approvals_as_our_client(fake: FakeForge) -> None:
    number, ours = open_review_merge(fake, "gitlab")
    with gitlab.Gitlab(fake.api_url("gitlab"), private_token=fake.token) as sdk:
        project = sdk.projects.get(fake.repository, lazy=True)
        merge_request = project.mergerequests.get(number)
        approvals = merge_request.approvals.get()
    assert (merge_request.state, merge_request.source_branch) == ("merged", HEAD)
    assert merge_request.merge_user["username"] == ours.merged_by == "alice"
    assert [entry["user"]["username"] for entry in approvals.approved_by] == list(ours.approved_by) == ["bob"]
