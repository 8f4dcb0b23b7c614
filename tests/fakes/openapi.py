"""GitHub's published OpenAPI description, to check what our client sends and what the fake answers.

The description comes from npm's `@octokit/openapi` (GitHub's own `rest-api-description`,
packaged), installed by scripts/check into `.ci/node` like the other npm test dependency. Its
`generated/api.github.com.json` is about 13 MB; it is read once per test session, cut down to the
paths the fake serves (with every schema they refer to, transitively: about 300 kB), and handed to
`openapi-core`, which validates each exchange: the request (path, query, JSON body) against the
operation, the response (status, JSON body) against the operation's declared response.

    GitHubOpenAPI.load() ── cached ──► check(method, path, query, body, status, answer) ──► errors
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

__all__ = ["OPENAPI_ENV", "PATHS", "GitHubOpenAPI", "spec_path"]

OPENAPI_ENV = "ACP_GITHUB_OPENAPI"
VERSION = "23.0.2"  # @octokit/openapi, pinned in scripts/check
ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / ".ci/node/node_modules/@octokit/openapi/generated/api.github.com.json"
HOST = "https://api.github.com"

#: The operations the fake's GitHub serves, as the description names their paths.
PATHS = (
    "/repos/{owner}/{repo}",
    "/repos/{owner}/{repo}/pulls",
    "/repos/{owner}/{repo}/pulls/{pull_number}",
    "/repos/{owner}/{repo}/pulls/{pull_number}/reviews",
    "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
    "/repos/{owner}/{repo}/issues/{issue_number}/labels",
    "/repos/{owner}/{repo}/issues/{issue_number}/comments",
)


def spec_path() -> Path | None:
    """Where the description is (`$ACP_GITHUB_OPENAPI`, else `.ci/node`), or None when not installed."""
    path = Path(os.environ.get(OPENAPI_ENV) or DEFAULT)
    return path if path.is_file() else None


def install_hint() -> str:
    return (
        f"GitHub's OpenAPI description is not installed. Install it the way scripts/check does:\n"
        f'  npm install --prefix "$PWD/.ci/node" @octokit/openapi@{VERSION} --no-audit --no-fund\n'
        f"(or set {OPENAPI_ENV} to an api.github.com.json)"
    )


@dataclass(frozen=True)
class _Request:
    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str


@dataclass(frozen=True)
class _Response:
    status_code: int
    data: bytes | None
    content_type: str = "application/json"
    headers: Headers = field(default_factory=Headers)


@dataclass
class GitHubOpenAPI:
    """The cut-down description, ready to validate exchanges."""

    api: OpenAPI
    size: int  # bytes of the whole description file
    operations: frozenset[tuple[str, str]]  # (METHOD, path template) it describes

    @classmethod
    def load(cls, path: Path) -> GitHubOpenAPI:
        """Read, cut down and build once per path (the file is large: cached for the session)."""
        return _load(str(path))

    def check(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str],
        body: bytes | None,
        status: int,
        answer: bytes | None,
    ) -> list[str]:
        """Validate one exchange (`path` below the API root); return what is wrong, in words."""
        request = _Request(
            host_url=HOST,
            path=path,
            method=method.lower(),
            parameters=RequestParameters(query=ImmutableMultiDict(list(query.items())), header=Headers()),
            body=body or None,
            content_type="application/json" if body else "",
        )
        response = _Response(status_code=status, data=answer)
        where = f"{method} {path}"
        errors = [f"{where} request: {_explain(e)}" for e in self.api.iter_request_errors(request)]
        # GitHub answers a bad token with 401 on every operation, and its description declares that
        # on none: the request is still checked, the answer is not.
        if not errors and status != 401:
            errors += [
                f"{where} response {status}: {_explain(e)}"
                for e in self.api.iter_response_errors(request, response)
            ]
        return errors


def _explain(error: Exception) -> str:
    """The validator's error with the schema errors under it (they say which field is wrong)."""
    cause = error.__cause__
    inner = getattr(error, "schema_errors", None) or getattr(cause, "schema_errors", None)
    text = type(error).__name__ if inner else str(error)[:300]
    if inner:
        text += ": " + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:300] for e in inner)
    elif cause is not None:
        text += f": {cause}"
    return text


@functools.cache
def _load(path: str) -> GitHubOpenAPI:
    raw = Path(path).read_bytes()
    spec = json.loads(raw)
    paths = {p: spec["paths"][p] for p in PATHS}
    components: dict[str, dict[str, Any]] = {}
    todo, seen = _refs(paths), set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _hash, _components, section, name = ref.split("/", 3)
        node = spec["components"][section][name]
        components.setdefault(section, {})[name] = node
        todo |= _refs(node)
    cut = {k: v for k, v in spec.items() if k not in ("paths", "components", "webhooks", "x-webhooks")}
    cut["paths"], cut["components"] = paths, components
    operations = frozenset(
        (method.upper(), p)
        for p, item in paths.items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )
    return GitHubOpenAPI(OpenAPI.from_dict(cut), size=len(raw), operations=operations)


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
