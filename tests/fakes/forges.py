"""A fake forge for tests: GitHub, Gitea and GitLab pull-request APIs over real HTTP.

It speaks exactly the documented endpoints the clients use, under one port:

    http://127.0.0.1:<port>/github/...        (GitHub's REST root: apiUrl .../github)
    http://127.0.0.1:<port>/gitea/api/v1/...  (apiUrl .../gitea)
    http://127.0.0.1:<port>/gitlab/api/v4/... (apiUrl .../gitlab)

and is backed by a real git repository: `merge()` makes the `--no-ff` merge commit of the pull
request's head into its base with plumbing (`merge-tree --write-tree`, `commit-tree`, a
compare-and-swap `update-ref`), authored by the reviewer, as a forge does on its server; `close()`
only closes. It checks the token (401) and the repository (404), can answer with scripted
statuses and headers (429 with `Retry-After`, rate-limit headers) and can send signed webhooks.
It runs in a daemon thread of the test process and stops with `stop()` (or the process).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FakeForge", "FakePull", "Scripted", "sign_webhook"]

FORGES = ("github", "gitea", "gitlab")


@dataclass
class FakePull:
    """One pull request (GitLab: merge request) held by the fake."""

    forge: str
    number: int
    head: str
    base: str
    title: str
    body: str
    labels: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    state: str = "open"  # open | closed | merged
    merge_commit: str | None = None


@dataclass
class Scripted:
    """A reply the fake gives instead of (status set) or on top of (headers only) the real one."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def sign_webhook(forge: str, secret: str, body: bytes) -> dict[str, str]:
    """The authentication header a forge puts on a webhook delivery."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if forge == "github":
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    if forge == "gitea":
        return {"X-Gitea-Signature": digest}
    if forge == "forgejo":
        return {"X-Forgejo-Signature": digest}
    return {"X-Gitlab-Token": secret}


class FakeForge:
    """Pull requests of one repository (`owner/name`) on all three forges, merged into a real git repo."""

    def __init__(
        self,
        repo: Path,
        *,
        repository: str = "acme/agents",
        token: str = "fake-forge-token",
        users: dict[str, int] | None = None,
        labels: dict[str, int] | None = None,
    ) -> None:
        self.repo = repo
        self.repository = repository
        self.token = token
        self.users = users if users is not None else {"alice": 11, "bob": 12}  # GitLab username → id
        self.labels = labels if labels is not None else {"acp-approval": 1, "agents": 2}  # Gitea name → id
        self.pulls: dict[str, dict[int, FakePull]] = {forge: {} for forge in FORGES}
        self.requests: list[tuple[str, str, str]] = []  # (forge, method, path?query)
        self.script: list[Scripted] = []  # replies for the next requests, in order
        self.webhook_url: str | None = None  # `serve --http` root: merge/close deliver events there
        self.webhook_secret: str | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def api_url(self, forge: str) -> str:
        """What a ContactChannel's `git.apiUrl` is for `forge`."""
        return f"{self.url}/{forge}"

    def start(self) -> FakeForge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeForge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a person does on the forge -------------------------------------------------------

    def merge(self, forge: str, number: int, *, by: tuple[str, str]) -> str:
        """Merge the pull request: a real `--no-ff` merge commit on its base, authored by `by`."""
        with self._lock:
            pull = self.pulls[forge][number]
            if pull.state != "open":
                raise ValueError(f"{forge} #{number} is {pull.state}")
            base = self._git("rev-parse", f"refs/heads/{pull.base}")
            head = self._git("rev-parse", f"refs/heads/{pull.head}")
            tree = self._git("merge-tree", "--write-tree", base, head).splitlines()[0]
            name, email = by
            env = {
                "GIT_AUTHOR_NAME": name,
                "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name,
                "GIT_COMMITTER_EMAIL": email,
            }
            message = f"Merge pull request #{number} from {pull.head}\n\n{pull.title}"
            commit = self._git("commit-tree", tree, "-p", base, "-p", head, "-m", message, env=env)
            self._git("update-ref", f"refs/heads/{pull.base}", commit, base)
            pull.state, pull.merge_commit = "merged", commit
        self._notify(forge, pull)
        return commit

    def close(self, forge: str, number: int) -> None:
        """Close the pull request without merging (its branch stays)."""
        with self._lock:
            pull = self.pulls[forge][number]
            pull.state = "closed"
        self._notify(forge, pull)

    def pull_for(self, forge: str, head: str) -> FakePull | None:
        """The pull request whose head is `head`."""
        return next((p for p in self.pulls[forge].values() if p.head == head), None)

    def _notify(self, forge: str, pull: FakePull) -> None:
        if self.webhook_url is not None and self.webhook_secret is not None:
            self.send_webhook(forge, pull, secret=self.webhook_secret)

    def send_webhook(
        self, forge: str, pull: FakePull, *, secret: str, url: str | None = None, signer: str | None = None
    ) -> int:
        """Deliver the pull request's event to `serve --http` as the forge would; return the HTTP status."""
        payload, event = _event(forge, pull)
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **event, **sign_webhook(signer or forge, secret, body)}
        target = (url or self.webhook_url or "").rstrip("/") + f"/webhooks/{forge}"
        request = urllib.request.Request(target, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    # -- the HTTP side --------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests`
                return

            def _serve(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = _Request(
                    method=self.command,
                    path=parsed.path,
                    query=dict(urllib.parse.parse_qsl(parsed.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                status, headers, body = fake._dispatch(request, raw_path=self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

        return Handler

    def _dispatch(self, request: _Request, *, raw_path: str) -> tuple[int, dict[str, str], Any]:
        forge, _, rest = request.path.lstrip("/").partition("/")
        with self._lock:
            self.requests.append((forge, request.method, raw_path))
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None and scripted.status is not None:
            return scripted.status, scripted.headers, scripted.body or {"message": "scripted"}
        extra = scripted.headers if scripted is not None else {}
        if forge not in FORGES:
            return 404, extra, {"message": "no such forge"}
        if not self._authorized(forge, request.headers):
            return 401, extra, {"message": "Bad credentials"}
        with self._lock:
            status, body = getattr(self, f"_{forge}")("/" + rest, request)
        return status, extra, body

    def _authorized(self, forge: str, headers: dict[str, str]) -> bool:
        expected = {
            "github": ("authorization", f"Bearer {self.token}"),
            "gitea": ("authorization", f"token {self.token}"),
            "gitlab": ("private-token", self.token),
        }[forge]
        return headers.get(expected[0]) == expected[1]

    def _new(self, forge: str, *, head: str, base: str, title: str, body: str) -> FakePull | str:
        if any(p.head == head and p.state == "open" for p in self.pulls[forge].values()):
            return "a pull request for this branch already exists"
        if not self._git("rev-parse", "--verify", "-q", f"refs/heads/{head}", check=False):
            return f"head branch {head} does not exist"
        number = max(self.pulls[forge], default=0) + 1
        pull = FakePull(forge, number, head=head, base=base, title=title, body=body)
        self.pulls[forge][number] = pull
        return pull

    def _github(self, path: str, request: _Request) -> tuple[int, Any]:
        prefix = f"/repos/{self.repository}"
        if path == prefix and request.method == "GET":
            return 200, {"full_name": self.repository}
        if not path.startswith(prefix + "/"):
            return 404, {"message": "Not Found"}
        rest = path.removeprefix(prefix)
        body = request.body or {}
        if rest == "/pulls" and request.method == "POST":
            pull = self._new(
                "github", head=body["head"], base=body["base"], title=body["title"], body=body["body"]
            )
            return (422, {"message": pull}) if isinstance(pull, str) else (201, self._github_pull(pull))
        if rest == "/pulls" and request.method == "GET":
            owner = self.repository.split("/")[0]
            head = request.query.get("head", "")
            found = [
                self._github_pull(p)
                for p in sorted(self.pulls["github"].values(), key=lambda p: -p.number)
                if not head or f"{owner}:{p.head}" == head
            ]
            return 200, found
        match = re.fullmatch(r"/(pulls|issues)/(\d+)(/labels|/requested_reviewers)?", rest)
        if match is None or int(match[2]) not in self.pulls["github"]:
            return 404, {"message": "Not Found"}
        pull = self.pulls["github"][int(match[2])]
        if match[3] == "/labels" and request.method == "POST":
            pull.labels += body["labels"]
            return 200, [{"name": name} for name in pull.labels]
        if match[3] == "/requested_reviewers" and match[1] == "pulls" and request.method == "POST":
            pull.reviewers += body["reviewers"]
            return 201, self._github_pull(pull)
        if match[3] is None and match[1] == "pulls" and request.method == "GET":
            return 200, self._github_pull(pull)
        return 404, {"message": "Not Found"}

    def _github_pull(self, pull: FakePull) -> dict[str, Any]:
        return {
            "number": pull.number,
            "html_url": f"{self.url}/{self.repository}/pull/{pull.number}",
            "state": "open" if pull.state == "open" else "closed",
            "merged": pull.state == "merged",
            "title": pull.title,
            "body": pull.body,
            "head": {"ref": pull.head},
            "base": {"ref": pull.base},
            "labels": [{"name": name} for name in pull.labels],
            "requested_reviewers": [{"login": name} for name in pull.reviewers],
        }

    def _gitea(self, path: str, request: _Request) -> tuple[int, Any]:
        prefix = f"/api/v1/repos/{self.repository}"
        if path == prefix and request.method == "GET":
            return 200, {"full_name": self.repository}
        if not path.startswith(prefix + "/"):
            return 404, {"message": "not found"}
        rest = path.removeprefix(prefix)
        body = request.body or {}
        if rest == "/labels" and request.method == "GET":
            return 200, [{"id": i, "name": name} for name, i in self.labels.items()]
        if rest == "/pulls" and request.method == "POST":
            pull = self._new(
                "gitea", head=body["head"], base=body["base"], title=body["title"], body=body["body"]
            )
            if isinstance(pull, str):
                return 409, {"message": pull}
            by_id = {i: name for name, i in self.labels.items()}
            if any(i not in by_id for i in body.get("labels", [])):
                return 422, {"message": "label does not exist"}
            pull.labels = [by_id[i] for i in body.get("labels", [])]
            return 201, self._gitea_pull(pull)
        if rest == "/pulls" and request.method == "GET":
            page, limit = int(request.query.get("page", 1)), int(request.query.get("limit", 30))
            ordered = sorted(self.pulls["gitea"].values(), key=lambda p: -p.number)
            return 200, [self._gitea_pull(p) for p in ordered[(page - 1) * limit : page * limit]]
        match = re.fullmatch(r"/pulls/(\d+)(/requested_reviewers)?", rest)
        if match is None or int(match[1]) not in self.pulls["gitea"]:
            return 404, {"message": "not found"}
        pull = self.pulls["gitea"][int(match[1])]
        if match[2] and request.method == "POST":
            pull.reviewers += body["reviewers"]
            return 201, [{"reviewer": {"login": name}} for name in body["reviewers"]]
        if not match[2] and request.method == "GET":
            return 200, self._gitea_pull(pull)
        return 404, {"message": "not found"}

    def _gitea_pull(self, pull: FakePull) -> dict[str, Any]:
        return {
            "number": pull.number,
            "html_url": f"{self.url}/{self.repository}/pulls/{pull.number}",
            "state": "open" if pull.state == "open" else "closed",
            "merged": pull.state == "merged",
            "title": pull.title,
            "body": pull.body,
            "head": {"ref": pull.head},
            "base": {"ref": pull.base},
            "labels": [{"id": self.labels[name], "name": name} for name in pull.labels],
            "requested_reviewers": [{"login": name} for name in pull.reviewers],
        }

    def _gitlab(self, path: str, request: _Request) -> tuple[int, Any]:
        if path == "/api/v4/users" and request.method == "GET":
            username = request.query.get("username", "")
            return 200, (
                [{"id": self.users[username], "username": username}] if username in self.users else []
            )
        prefix = "/api/v4/projects/" + urllib.parse.quote(self.repository, safe="")
        if path == prefix and request.method == "GET":
            return 200, {"path_with_namespace": self.repository}
        if not path.startswith(prefix + "/"):
            return 404, {"message": "404 Project Not Found"}
        rest = path.removeprefix(prefix)
        body = request.body or {}
        if rest == "/merge_requests" and request.method == "POST":
            pull = self._new(
                "gitlab",
                head=body["source_branch"],
                base=body["target_branch"],
                title=body["title"],
                body=body.get("description", ""),
            )
            if isinstance(pull, str):
                return 409, {"message": [pull]}
            pull.labels = [name for name in str(body.get("labels", "")).split(",") if name]
            by_id = {i: name for name, i in self.users.items()}
            pull.reviewers = [by_id[i] for i in body.get("reviewer_ids", [])]
            return 201, self._gitlab_pull(pull)
        if rest == "/merge_requests" and request.method == "GET":
            source = request.query.get("source_branch")
            found = [
                self._gitlab_pull(p)
                for p in sorted(self.pulls["gitlab"].values(), key=lambda p: -p.number)
                if source is None or p.head == source
            ]
            return 200, found
        match = re.fullmatch(r"/merge_requests/(\d+)", rest)
        if match is None or int(match[1]) not in self.pulls["gitlab"] or request.method != "GET":
            return 404, {"message": "404 Not found"}
        return 200, self._gitlab_pull(self.pulls["gitlab"][int(match[1])])

    def _gitlab_pull(self, pull: FakePull) -> dict[str, Any]:
        by_name = self.users
        return {
            "iid": pull.number,
            "web_url": f"{self.url}/{self.repository}/-/merge_requests/{pull.number}",
            "state": {"open": "opened"}.get(pull.state, pull.state),
            "title": pull.title,
            "description": pull.body,
            "source_branch": pull.head,
            "target_branch": pull.base,
            "labels": pull.labels,
            "reviewers": [{"id": by_name[name], "username": name} for name in pull.reviewers],
        }

    # -- git ------------------------------------------------------------------------------------

    def _git(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["git", *args],
            cwd=self.repo,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()


def _event(forge: str, pull: FakePull) -> tuple[dict[str, Any], dict[str, str]]:
    """The webhook payload (the fields receivers read) and event header of a pull request change."""
    if forge == "gitlab":
        attributes = {
            "iid": pull.number,
            "source_branch": pull.head,
            "target_branch": pull.base,
            "state": {"open": "opened"}.get(pull.state, pull.state),
            "action": {"open": "open", "merged": "merge", "closed": "close"}[pull.state],
        }
        return {"object_kind": "merge_request", "object_attributes": attributes}, {
            "X-Gitlab-Event": "Merge Request Hook"
        }
    payload = {
        "action": "opened" if pull.state == "open" else "closed",
        "number": pull.number,
        "pull_request": {
            "number": pull.number,
            "state": "open" if pull.state == "open" else "closed",
            "merged": pull.state == "merged",
            "head": {"ref": pull.head},
            "base": {"ref": pull.base},
        },
    }
    header = "X-GitHub-Event" if forge == "github" else "X-Gitea-Event"
    return payload, {
        header: "pull_request",
        "X-GitHub-Delivery" if forge == "github" else "X-Gitea-Delivery": str(uuid.uuid4()),
    }
