"""Pull requests for approvals on GitHub, Gitea/Forgejo and GitLab (contract §5).

    approval branch proposed ──► find_pull_request(head) ── found (a crash between opening and
                                     │                       committing): the same one, never a second
                                     └─ none ──► open_pull_request(head, base, title, body, labels, ...)
    waiting ──► poll_state(number), at most once per poll interval (a webhook invalidates it)
                ──► open | merged | closed

One client protocol (`ForgeClient`), one module per forge and a shared HTTP loop with rate limits
(`base`); tests run them against a fake forge speaking the same documented endpoints over HTTP
(tests/fakes/forges.py, not shipped).
The decision itself is still read from `main`: a merged pull request put the approval file there.
"""

from __future__ import annotations

import re

import httpx2

from gitops_acp.errors import PermanentForgeError
from gitops_acp.humans.forges import github, gitlab
from gitops_acp.humans.forges.base import ForgeClient, HttpForge, MergeInfo, PRState, PullRequest, RateBudget
from gitops_acp.humans.forges.gitea import GiteaClient
from gitops_acp.humans.forges.github import GitHubClient
from gitops_acp.humans.forges.gitlab import GitLabClient

__all__ = [
    "ForgeClient",
    "HttpForge",
    "MergeInfo",
    "PRState",
    "PullRequest",
    "RateBudget",
    "api_url_for",
    "connect",
    "repository_from_url",
]

_CLIENTS: dict[str, type[HttpForge]] = {"github": GitHubClient, "gitea": GiteaClient, "gitlab": GitLabClient}

# git@host:owner/name.git, ssh://git@host[:port]/owner/name.git, https://host/owner/name(.git)
_REMOTE = re.compile(r"^(?:[a-z+]+://(?:[^@/]+@)?[^/]+/|[^@/]+@[^:/]+:)(?P<path>.+?)(?:\.git)?/?$")


def repository_from_url(url: str) -> str | None:
    """`owner/name` (GitLab: `group/sub/project`) from a remote URL, or None when it has no such path."""
    match = _REMOTE.match(url.strip())
    if match is None:
        return None
    path = match["path"].strip("/")
    return path if "/" in path else None


def api_url_for(forge: str, api_url: str | None) -> str:
    """The API root: GitHub and GitLab default to their SaaS; Gitea needs one (`/api/v1` is appended)."""
    if forge == "github":
        return (api_url or github.API_URL).rstrip("/")
    if forge == "gitlab":
        root = (api_url or gitlab.API_URL).rstrip("/")
        return root if root.endswith("/api/v4") else root + "/api/v4"
    if not api_url:
        raise PermanentForgeError(
            "git.apiUrl is required for gitea: the instance's URL, e.g. https://gitea.example.com"
        )
    root = api_url.rstrip("/")
    return root if root.endswith("/api/v1") else root + "/api/v1"


def connect(
    forge: str,
    *,
    api_url: str,
    repository: str,
    token: str,
    http: httpx2.AsyncClient,
    budget: RateBudget,
    poll_base: float = 60.0,
) -> ForgeClient:
    """A client for `repository` on `forge` (github, gitea, gitlab) at the API root `api_url`."""
    cls = _CLIENTS.get(forge)
    if cls is None:
        raise PermanentForgeError(f"unknown forge {forge!r}: expected github, gitea or gitlab")
    return cls(
        forge=forge,
        repository=repository,
        api_url=api_url,
        token=token,
        http=http,
        budget=budget,
        poll_base=poll_base,
    )
