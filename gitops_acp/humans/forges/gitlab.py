"""GitLab merge requests through the REST API (`/api/v4`).

    open:  GET  /users?username=<reviewer>               (reviewers are given by id)
           POST /projects/{path}/merge_requests {source_branch, target_branch, title, description,
                                                 labels: "a,b", reviewer_ids}
    find:  GET  /projects/{path}/merge_requests?source_branch=<branch>&state=all
    state: GET  /projects/{path}/merge_requests/{iid}  → state opened|merged|closed|locked
    who:   GET  /projects/{path}/merge_requests/{iid}  → merge_user.username (older: merged_by)
           GET  /projects/{path}/merge_requests/{iid}/approvals → approved_by[].user.username
    close: POST /projects/{path}/merge_requests/{iid}/notes {body}
           PUT  /projects/{path}/merge_requests/{iid} {state_event: close}

`{path}` is the URL-encoded project path (`group%2Fsub%2Fproject`). Authentication: `PRIVATE-TOKEN`.
Rate limits: `RateLimit-*` headers and 429 with `Retry-After` (handled in `base`).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from gitops_acp.errors import PermanentForgeError, TemporaryForgeError
from gitops_acp.humans.forges.base import HttpForge, MergeInfo, PRState, PullRequest

__all__ = ["GitLabClient"]

API_URL = "https://gitlab.com/api/v4"


@dataclass
class GitLabClient(HttpForge):
    """Merge requests on a GitLab project (`group/subgroup/project`)."""

    def auth_headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self.token}

    @property
    def _project(self) -> str:
        return "/projects/" + urllib.parse.quote(self.repository, safe="")

    async def validate(self) -> str:
        data = await self.request("GET", self._project)
        return f"gitlab project {data.get('path_with_namespace', self.repository)} reachable"

    async def open_pull_request(
        self, *, head: str, base: str, title: str, body: str, labels: list[str], reviewers: list[str]
    ) -> PullRequest:
        payload: dict[str, Any] = {
            "source_branch": head,
            "target_branch": base,
            "title": title,
            "description": body,
        }
        if labels:
            payload["labels"] = ",".join(labels)
        if reviewers:
            payload["reviewer_ids"] = [await self._user_id(name) for name in reviewers]
        data = await self.request("POST", f"{self._project}/merge_requests", body=payload)
        number = int(data["iid"])
        self.remember(number, PRState.OPEN)
        return PullRequest(number=number, url=str(data["web_url"]))

    async def _user_id(self, username: str) -> int:
        found = await self.request("GET", "/users", params={"username": username})
        if not found:
            raise PermanentForgeError(
                f"gitlab: no user {username}: fix git.reviewers (GitLab usernames, without @)"
            )
        return int(found[0]["id"])

    async def find_pull_request(self, head: str) -> PullRequest | None:
        found = await self.request(
            "GET", f"{self._project}/merge_requests", params={"source_branch": head, "state": "all"}
        )
        for data in found or []:
            if data.get("source_branch") == head:
                return PullRequest(number=int(data["iid"]), url=str(data["web_url"]), state=_state(data))
        return None

    async def pull_request_state(self, number: int) -> PRState:
        return _state(await self.request("GET", f"{self._project}/merge_requests/{number}"))

    async def merge_info(self, number: int) -> MergeInfo:
        data = await self.request("GET", f"{self._project}/merge_requests/{number}")
        if data.get("state") == "locked":  # a merge under way: who merged is known in a moment
            raise TemporaryForgeError(f"gitlab merge request !{number} is being merged", retry_after=2.0)
        approvals = await self.request("GET", f"{self._project}/merge_requests/{number}/approvals")
        state = _state(data)
        merger = None
        if state == PRState.MERGED:
            user = data.get("merge_user") or data.get("merged_by") or {}
            merger = user.get("username") or None
        approved = tuple(
            str(entry["user"]["username"])
            for entry in (approvals or {}).get("approved_by") or []
            if (entry.get("user") or {}).get("username")
        )
        merged = state == PRState.MERGED
        # A squash merge's commit on the target is the squash commit (a merge commit may follow it).
        commit = (data.get("merge_commit_sha") or data.get("squash_commit_sha")) if merged else None
        return MergeInfo("gitlab", number, state, merged_by=merger, approved_by=approved, merge_commit=commit)

    async def comment(self, number: int, text: str) -> None:
        await self.request("POST", f"{self._project}/merge_requests/{number}/notes", body={"body": text})

    async def close_pull_request(self, number: int) -> None:
        await self.request("PUT", f"{self._project}/merge_requests/{number}", body={"state_event": "close"})
        self.remember(number, PRState.CLOSED)


def _state(data: dict[str, Any]) -> PRState:
    state = data.get("state")
    if state == "merged":
        return PRState.MERGED
    if state == "closed":
        return PRState.CLOSED
    return PRState.OPEN  # opened, or locked (a merge in progress)
