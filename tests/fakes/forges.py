"""A fake forge for tests: GitHub, Gitea and GitLab pull-request APIs over real HTTP.

It speaks exactly the documented endpoints the clients use, under one port:

    http://127.0.0.1:<port>/github/...        (GitHub's REST root: apiUrl .../github)
    http://127.0.0.1:<port>/gitea/api/v1/...  (apiUrl .../gitea)
    http://127.0.0.1:<port>/gitlab/api/v4/... (apiUrl .../gitlab)

and is backed by a real git repository: `merge()` makes the `--no-ff` merge commit of the pull
request's head into its base with plumbing (`merge-tree --write-tree`, `commit-tree`, a
compare-and-swap `update-ref`), authored by the reviewer, as a forge does on its server, and
records the merger's login (GitHub/Gitea `merged_by`, GitLab `merge_user`); `review()` adds a
review (GitLab: an approval); `close()` only closes. The API also takes comments (GitHub/Gitea
issue comments, GitLab notes) and closes pull requests (PATCH state closed; GitLab PUT state_event).
It checks the token (401) and the repository (404), can answer with scripted statuses and headers
(429 with `Retry-After`, rate-limit headers) and can send signed webhooks.

GitHub's answers carry every field GitHub's OpenAPI description requires (tests/fakes/
github_payloads.py). With `openapi=` (tests/fakes/openapi.py) every GitHub exchange that is not a
scripted reply is validated against that description, request and response, and what is wrong is
collected in `violations` (the `github_openapi` fixture fails the test on any).
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
from typing import TYPE_CHECKING, Any

from tests.fakes import github_payloads as gh

if TYPE_CHECKING:
    from tests.fakes.openapi import GitHubOpenAPI

__all__ = ["FakeForge", "FakePull", "Scripted", "sign_webhook"]

FORGES = ("github", "gitea", "gitlab")
_GITEA_STATES = {"CHANGES_REQUESTED": "REQUEST_CHANGES", "COMMENTED": "COMMENT"}  # Gitea's review states


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
    merged_by: str | None = None  # the login of who merged it
    head_sha: str = ""  # the head's commit when opened (the branch may be deleted later)
    reviews: list[tuple[str, str]] = field(default_factory=list)  # (login, APPROVED | CHANGES_REQUESTED ...)
    comments: list[str] = field(default_factory=list)  # comments (GitLab: notes) added through the API


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
    scripted: bool = False  # answered from `script`: not the forge's own reply


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
        openapi: GitHubOpenAPI | None = None,
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
        self.bot = "acp-bot"  # the token's user: the author of the pull requests and comments
        self.openapi = openapi  # validates every GitHub exchange when set
        self.violations: list[str] = []  # what the OpenAPI description says is wrong
        self.checked: list[tuple[str, str]] = []  # (METHOD, path) of the GitHub exchanges validated
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

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

    def merge(self, forge: str, number: int, *, by: tuple[str, str], login: str | None = None) -> str:
        """Merge the pull request: a real `--no-ff` merge commit on its base, authored by `by`.

        The forge records `login` as who merged (default: the part of `by`'s email before the @).
        """
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
            pull.merged_by = login or email.split("@", 1)[0]
        self._notify(forge, pull)
        return commit

    def review(self, forge: str, number: int, login: str, state: str = "APPROVED") -> None:
        """`login` reviews the pull request (GitHub/Gitea state; on GitLab an APPROVED is an approval)."""
        with self._lock:
            self.pulls[forge][number].reviews.append((login, state))

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
                fake._validate(request, raw, status, data)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        return Handler

    def _validate(self, request: _Request, raw: bytes, status: int, answer: bytes) -> None:
        """Check a GitHub exchange against the OpenAPI description (scripted failures are not GitHub's)."""
        forge, _, rest = request.path.lstrip("/").partition("/")
        if self.openapi is None or forge != "github" or getattr(request, "scripted", False):
            return
        errors = self.openapi.check(
            request.method, "/" + rest, query=request.query, body=raw or None, status=status, answer=answer
        )
        with self._lock:
            self.checked.append((request.method, "/" + rest))
            self.violations += errors

    def _dispatch(self, request: _Request, *, raw_path: str) -> tuple[int, dict[str, str], Any]:
        forge, _, rest = request.path.lstrip("/").partition("/")
        with self._lock:
            self.requests.append((forge, request.method, raw_path))
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None and scripted.status is not None:
            request.scripted = True
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
        if forge == "github" and headers.get("authorization") == f"token {self.token}":
            return True  # GitHub takes both schemes (githubkit sends this one)
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
        sha = self._git("rev-parse", f"refs/heads/{head}")
        pull = FakePull(forge, number, head=head, base=base, title=title, body=body, head_sha=sha)
        self.pulls[forge][number] = pull
        return pull

    # GitHub: answers shaped as its OpenAPI description says (tests/fakes/github_payloads.py).

    def _gh_user(self, login: str) -> dict[str, Any]:
        user_id = self.users.get(login) or int(hashlib.sha256(login.encode()).hexdigest()[:6], 16)
        return gh.simple_user(self.api_url("github"), self.url, login, user_id)

    def _github(self, path: str, request: _Request) -> tuple[int, Any]:
        prefix = f"/repos/{self.repository}"
        api = self.api_url("github")
        if path == prefix and request.method == "GET":
            owner = self._gh_user(self.repository.split("/")[0])
            return 200, gh.full_repository(api, self.url, self.repository, owner)
        if not path.startswith(prefix + "/"):
            return 404, _gh_error("Not Found")
        rest = path.removeprefix(prefix)
        body = request.body or {}
        if rest == "/pulls" and request.method == "POST":
            pull = self._new(
                "github", head=body["head"], base=body["base"], title=body["title"], body=body["body"]
            )
            if isinstance(pull, str):
                return 422, {**_gh_error("Validation Failed"), "errors": [{"message": pull}]}
            return 201, self._github_pull(pull)
        if rest == "/pulls" and request.method == "GET":
            owner = self.repository.split("/")[0]
            head = request.query.get("head", "")
            state = request.query.get("state", "open")
            found = [
                self._github_pull(p, full=False)
                for p in sorted(self.pulls["github"].values(), key=lambda p: -p.number)
                if (not head or f"{owner}:{p.head}" == head)
                and (state == "all" or (state == "open") == (p.state == "open"))
            ]
            return 200, found[: int(request.query.get("per_page", 30))]
        match = re.fullmatch(r"/(pulls|issues)/(\d+)(/labels|/requested_reviewers|/reviews|/comments)?", rest)
        if match is None or int(match[2]) not in self.pulls["github"]:
            return 404, _gh_error("Not Found")
        kind, number, sub, method = match[1], int(match[2]), match[3], request.method
        pull = self.pulls["github"][number]
        if kind == "issues" and sub == "/labels" and method == "POST":
            pull.labels += [name for name in body["labels"] if name not in pull.labels]
            return 200, [self._gh_label(name) for name in pull.labels]
        if kind == "issues" and sub == "/comments" and method == "POST":
            pull.comments.append(str(body["body"]))
            return 201, gh.comment(
                api,
                self.url,
                self.repository,
                number=number,
                comment_id=len(pull.comments) + 100 * number,
                user=self._gh_user(self.bot),
                body=str(body["body"]),
            )
        if kind == "pulls" and sub == "/requested_reviewers" and method == "POST":
            pull.reviewers += body["reviewers"]
            return 201, self._github_pull(pull, full=False)
        if kind == "pulls" and sub == "/reviews" and method == "GET":
            return 200, [
                gh.review(
                    api,
                    self.url,
                    self.repository,
                    number=number,
                    review_id=100 * number + i,
                    user=self._gh_user(login),
                    state=state,
                    sha=pull.head_sha,
                )
                for i, (login, state) in enumerate(pull.reviews, start=1)
            ]
        if kind == "pulls" and sub is None and method == "GET":
            return 200, self._github_pull(pull)
        if kind == "pulls" and sub is None and method == "PATCH":
            if body.get("state") == "closed" and pull.state == "open":
                pull.state = "closed"
            return 200, self._github_pull(pull)
        return 404, _gh_error("Not Found")

    def _gh_label(self, name: str) -> dict[str, Any]:
        return gh.label(self.api_url("github"), self.repository, name, self.labels.get(name, 99))

    def _github_pull(self, pull: FakePull, *, full: bool = True) -> dict[str, Any]:
        base_sha = self._git("rev-parse", "-q", "--verify", f"refs/heads/{pull.base}", check=False)
        return gh.pull_request(
            self.api_url("github"),
            self.url,
            self.repository,
            number=pull.number,
            title=pull.title,
            body=pull.body,
            state=pull.state,
            head=(pull.head, pull.head_sha),
            base=(pull.base, base_sha),
            author=self._gh_user(self.bot),
            merged_by=self._gh_user(pull.merged_by) if pull.merged_by else None,
            merge_commit=pull.merge_commit,
            labels=[self._gh_label(name) for name in pull.labels],
            reviewers=[self._gh_user(name) for name in pull.reviewers],
            full=full,
        )

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
        match = re.fullmatch(r"/(pulls|issues)/(\d+)(/requested_reviewers|/reviews|/comments)?", rest)
        if match is None or int(match[2]) not in self.pulls["gitea"]:
            return 404, {"message": "not found"}
        kind, number, sub, method = match[1], int(match[2]), match[3], request.method
        pull = self.pulls["gitea"][number]
        if kind == "pulls" and sub == "/requested_reviewers" and method == "POST":
            pull.reviewers += body["reviewers"]
            return 201, [{"reviewer": {"login": name}} for name in body["reviewers"]]
        if kind == "pulls" and sub == "/reviews" and method == "GET":
            return 200, [
                {
                    "id": 100 * number + i,
                    "user": {"id": self.users.get(login, 0), "login": login},
                    "state": _GITEA_STATES.get(state, state),
                    "commit_id": pull.head_sha,
                    "dismissed": False,
                    "stale": False,
                    "official": True,
                }
                for i, (login, state) in enumerate(pull.reviews, start=1)
            ]
        if kind == "issues" and sub == "/comments" and method == "POST":
            pull.comments.append(str(body["body"]))
            return 201, {"id": len(pull.comments), "body": body["body"], "user": {"login": self.bot}}
        if kind == "pulls" and sub is None and method == "GET":
            return 200, self._gitea_pull(pull)
        if kind == "pulls" and sub is None and method == "PATCH":
            if body.get("state") == "closed" and pull.state == "open":
                pull.state = "closed"
            return 201, self._gitea_pull(pull)
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
            "merged_by": {"id": self.users.get(pull.merged_by, 0), "login": pull.merged_by}
            if pull.merged_by
            else None,
            "merge_commit_sha": pull.merge_commit,
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
        match = re.fullmatch(r"/merge_requests/(\d+)(/approvals|/notes)?", rest)
        if match is None or int(match[1]) not in self.pulls["gitlab"]:
            return 404, {"message": "404 Not found"}
        number, sub, method = int(match[1]), match[2], request.method
        pull = self.pulls["gitlab"][number]
        if sub == "/approvals" and method == "GET":
            approved = [login for login, state in pull.reviews if state == "APPROVED"]
            return 200, {
                "id": 2000 + number,
                "iid": number,
                "approved": bool(approved),
                "approvals_required": 0,
                "approvals_left": 0,
                "approved_by": [{"user": self._gl_user(login)} for login in approved],
            }
        if sub == "/notes" and method == "POST":
            pull.comments.append(str(body["body"]))
            return 201, {"id": len(pull.comments), "body": body["body"], "author": self._gl_user(self.bot)}
        if sub is None and method == "GET":
            return 200, self._gitlab_pull(pull)
        if sub is None and method == "PUT":
            if body.get("state_event") == "close" and pull.state == "open":
                pull.state = "closed"
            return 200, self._gitlab_pull(pull)
        return 404, {"message": "404 Not found"}

    def _gl_user(self, username: str) -> dict[str, Any]:
        return {
            "id": self.users.get(username, 0),
            "username": username,
            "name": username.title(),
            "state": "active",
            "avatar_url": None,
            "web_url": f"{self.url}/{username}",
        }

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
            "merge_user": self._gl_user(pull.merged_by) if pull.merged_by else None,
            "merged_by": self._gl_user(pull.merged_by) if pull.merged_by else None,  # deprecated name
            "merge_commit_sha": pull.merge_commit,
            "sha": pull.head_sha,
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


def _gh_error(message: str) -> dict[str, Any]:
    """`basic-error`."""
    return {"message": message, "documentation_url": "https://docs.github.com/rest"}


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
