"""GitHub (and GitHub Enterprise Server) pull requests through the REST API.

    open:  POST /repos/{o}/{r}/pulls {title, head, base, body}
           POST /repos/{o}/{r}/issues/{n}/labels {labels}          (labels are issue labels)
           POST /repos/{o}/{r}/pulls/{n}/requested_reviewers {reviewers}
    find:  GET  /repos/{o}/{r}/pulls?head={o}:{branch}&state=all
    state: GET  /repos/{o}/{r}/pulls/{n}  → state open|closed, merged true|false
    who:   GET  /repos/{o}/{r}/pulls/{n}  → merged_by.login;  GET .../pulls/{n}/reviews → APPROVED
    close: POST /repos/{o}/{r}/issues/{n}/comments {body};  PATCH /repos/{o}/{r}/pulls/{n} {state: closed}

Authentication: `Authorization: Bearer <token>`. Rate limits: `X-RateLimit-*` headers, 429 and the
secondary limit's 403 with `Retry-After` (handled in `base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitops_acp.humans.forges.base import HttpForge, MergeInfo, PRState, PullRequest, approving_reviewers

__all__ = ["GitHubClient"]

API_URL = "https://api.github.com"


@dataclass
class GitHubClient(HttpForge):
    """Pull requests on `owner/name` of a GitHub instance."""

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-GitHub-Api-Version": "2022-11-28"}

    @property
    def _repo(self) -> str:
        return f"/repos/{self.repository}"

    async def validate(self) -> str:
        data = await self.request("GET", self._repo)
        return f"github repository {data.get('full_name', self.repository)} reachable"

    async def open_pull_request(
        self, *, head: str, base: str, title: str, body: str, labels: list[str], reviewers: list[str]
    ) -> PullRequest:
        data = await self.request(
            "POST", f"{self._repo}/pulls", body={"title": title, "head": head, "base": base, "body": body}
        )
        number = int(data["number"])
        if labels:
            await self.request("POST", f"{self._repo}/issues/{number}/labels", body={"labels": labels})
        if reviewers:
            await self.request(
                "POST", f"{self._repo}/pulls/{number}/requested_reviewers", body={"reviewers": reviewers}
            )
        self.remember(number, PRState.OPEN)
        return PullRequest(number=number, url=str(data["html_url"]))

    async def find_pull_request(self, head: str) -> PullRequest | None:
        owner = self.repository.split("/", 1)[0]
        found = await self.request(
            "GET", f"{self._repo}/pulls", params={"head": f"{owner}:{head}", "state": "all", "per_page": 10}
        )
        for data in found or []:
            if data.get("head", {}).get("ref") == head:
                return PullRequest(number=int(data["number"]), url=str(data["html_url"]), state=_state(data))
        return None

    async def pull_request_state(self, number: int) -> PRState:
        return _state(await self.request("GET", f"{self._repo}/pulls/{number}"))

    async def merge_info(self, number: int) -> MergeInfo:
        data = await self.request("GET", f"{self._repo}/pulls/{number}")
        reviews = await self.request("GET", f"{self._repo}/pulls/{number}/reviews", params={"per_page": 100})
        state = _state(data)
        merger = (data.get("merged_by") or {}).get("login") if state == PRState.MERGED else None
        return MergeInfo(
            "github",
            number,
            state,
            merged_by=merger or None,
            approved_by=approving_reviewers(reviews),
            merge_commit=data.get("merge_commit_sha") if state == PRState.MERGED else None,
        )

    async def comment(self, number: int, text: str) -> None:
        await self.request("POST", f"{self._repo}/issues/{number}/comments", body={"body": text})

    async def close_pull_request(self, number: int) -> None:
        await self.request("PATCH", f"{self._repo}/pulls/{number}", body={"state": "closed"})
        self.remember(number, PRState.CLOSED)


def _state(data: dict[str, Any]) -> PRState:
    if data.get("merged") or data.get("merged_at"):
        return PRState.MERGED
    return PRState.OPEN if data.get("state") == "open" else PRState.CLOSED
