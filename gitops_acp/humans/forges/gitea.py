"""Gitea and Forgejo pull requests through their REST API (`/api/v1`).

    open:  GET  /repos/{o}/{r}/labels                   (labels are given by id: look names up)
           POST /repos/{o}/{r}/pulls {title, head, base, body, labels: [ids]}
           POST /repos/{o}/{r}/pulls/{n}/requested_reviewers {reviewers}
    find:  GET  /repos/{o}/{r}/pulls?state=all&page=N&limit=50, matched on head.ref
    state: GET  /repos/{o}/{r}/pulls/{n}  → state open|closed, merged true|false
    who:   GET  /repos/{o}/{r}/pulls/{n}  → merged_by.login;  GET .../pulls/{n}/reviews → APPROVED
    close: POST /repos/{o}/{r}/issues/{n}/comments {body};  PATCH /repos/{o}/{r}/pulls/{n} {state: closed}

Authentication: `Authorization: token <token>`. Rate limits: `X-RateLimit-*` when the instance
sets them, 429 with `Retry-After` (handled in `base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitops_acp.errors import PermanentForgeError
from gitops_acp.humans.forges.base import HttpForge, MergeInfo, PRState, PullRequest, approving_reviewers

__all__ = ["GiteaClient"]

#: Pages of closed pull requests searched for a lost one (50 each): a crash is found again at once,
#: since the newest come first.
FIND_PAGES = 4


@dataclass
class GiteaClient(HttpForge):
    """Pull requests on `owner/name` of a Gitea or Forgejo instance."""

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def _repo(self) -> str:
        return f"/repos/{self.repository}"

    async def validate(self) -> str:
        data = await self.request("GET", self._repo)
        return f"{self.forge} repository {data.get('full_name', self.repository)} reachable"

    async def open_pull_request(
        self, *, head: str, base: str, title: str, body: str, labels: list[str], reviewers: list[str]
    ) -> PullRequest:
        payload: dict[str, Any] = {"title": title, "head": head, "base": base, "body": body}
        if labels:
            payload["labels"] = await self._label_ids(labels)
        data = await self.request("POST", f"{self._repo}/pulls", body=payload)
        number = int(data["number"])
        if reviewers:
            await self.request(
                "POST", f"{self._repo}/pulls/{number}/requested_reviewers", body={"reviewers": reviewers}
            )
        self.remember(number, PRState.OPEN)
        return PullRequest(number=number, url=str(data["html_url"]))

    async def _label_ids(self, names: list[str]) -> list[int]:
        found = await self.request("GET", f"{self._repo}/labels", params={"limit": 50})
        ids = {str(label["name"]): int(label["id"]) for label in found or []}
        missing = [name for name in names if name not in ids]
        if missing:
            raise PermanentForgeError(
                f"{self.forge} {self.repository}: no label {', '.join(missing)}: create it in the "
                "repository or remove it from git.labels"
            )
        return [ids[name] for name in names]

    async def find_pull_request(self, head: str) -> PullRequest | None:
        for page in range(1, FIND_PAGES + 1):
            found = await self.request(
                "GET", f"{self._repo}/pulls", params={"state": "all", "page": page, "limit": 50}
            )
            for data in found or []:
                if data.get("head", {}).get("ref") == head:
                    return PullRequest(
                        number=int(data["number"]), url=str(data["html_url"]), state=_state(data)
                    )
            if not found or len(found) < 50:
                break
        return None

    async def pull_request_state(self, number: int) -> PRState:
        return _state(await self.request("GET", f"{self._repo}/pulls/{number}"))

    async def merge_info(self, number: int) -> MergeInfo:
        data = await self.request("GET", f"{self._repo}/pulls/{number}")
        reviews = await self.request("GET", f"{self._repo}/pulls/{number}/reviews", params={"limit": 50})
        state = _state(data)
        merger = (data.get("merged_by") or {}).get("login") if state == PRState.MERGED else None
        return MergeInfo(
            self.forge,
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
    if data.get("merged"):
        return PRState.MERGED
    return PRState.OPEN if data.get("state") == "open" else PRState.CLOSED
