"""The HTTP API end to end (DESIGN §11, docs/api.md): the real `serve --http --api-tokens` process,
the stub LLM, real repositories, and every answer checked against the served OpenAPI document.

    module server (a bare repository: objects and compare-and-swap) ── create → FinalAnswer → GET,
        author = the caller, N concurrent creates in fewer commits, bad input (each a 4xx, nothing
        committed), tokens and roles, cancel, approve/reject over HTTP beside the CLI's approve,
        no secret in any answer
    a work tree with main checked out ── through it, as `gitops-acp task create` would
    a remote whose main refuses pushes (pre-receive hook) ── 409 naming why; nothing created
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.conftest import git
from tests.e2e.conftest import (
    AGENT_NAME,
    API,
    CLI,
    AcpRepo,
    Remote,
    Stub,
    call,
    cli,
    free_port,
    mcpserver_yaml,
    module_repo,
    no_servers_left,
    serving,
    tool_agent_yaml,
    wait_for,
)

ALICE = ("Alice Operator", "alice@example.com")
TOKENS = {
    "alice": ("alice-token-0123456789", ALICE, ["operator", "approver"]),
    "vic": ("vic-token-0123456789", ("Vic Viewer", "vic@example.com"), ["viewer"]),
    "bob": ("bob-token-0123456789", ("Bob Approver", "bob@example.com"), ["approver"]),
}
#: approvals/<call>.yaml commits to main only from these (the channel's approvers).
APPROVERS = ["alice@example.com", "human@example.com"]


def write_tokens(path: Path) -> Path:
    entries = [
        {
            "name": who[0],
            "email": who[1],
            "roles": roles,
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
        }
        for token, who, roles in TOKENS.values()
    ]
    path.write_text(json.dumps(entries))  # JSON is YAML
    return path


# -- a client that checks every answer against the served OpenAPI document ----------------------


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
class Answer:
    status: int
    body: Any
    raw: bytes
    headers: dict[str, str]


class Client:
    """urllib against the API; each answer is validated with openapi-core against /v1/openapi.json."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[bytes] = []  # every body received (the secret must be in none)
        self._api: OpenAPI | None = None

    def spec(self) -> OpenAPI:
        if self._api is None:
            with urllib.request.urlopen(self.url + "/v1/openapi.json", timeout=10) as response:
                self._api = OpenAPI.from_dict(json.loads(response.read()))
        return self._api

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        who: str | None = "alice",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Answer:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if who is not None:
            sent["Authorization"] = f"Bearer {TOKENS[who][0]}"
        target = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(target, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload, got = (
                    response.status,
                    response.read(),
                    {k.lower(): v for k, v in response.headers.items()},
                )
        except urllib.error.HTTPError as exc:
            with exc:
                status, payload, got = exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}
        self.answers.append(payload)
        parsed = json.loads(payload) if payload else None
        self._check(method, path, query or {}, sent, data, status, payload)
        return Answer(status, parsed, payload, got)

    def _check(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes | None,
        status: int,
        answer: bytes,
    ) -> None:
        request = _Request(
            host_url=self.url,
            path=path,
            method=method.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(list(query.items())), header=Headers(headers)
            ),
            body=body,
            content_type="application/json" if body else "",
        )
        errors = []
        if status < 400:  # a refused request is refused on purpose: only its answer is checked then
            errors += [f"request: {e}" for e in self.spec().iter_request_errors(request)]
        errors += [
            f"response {status}: {e!r}"
            for e in self.spec().iter_response_errors(request, _Response(status, answer))
        ]
        assert not errors, f"{method} {path} against /v1/openapi.json: {errors} (answer: {answer[:300]!r})"


def start_serve(repo: AcpRepo, tokens: Path, *extra: str, start: Any) -> tuple[Any, Client]:
    port = free_port()
    background = start(repo, "--http", f"127.0.0.1:{port}", "--api-tokens", str(tokens), *extra)
    client = Client(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        assert background.proc.poll() is None, background.stderr()
        try:
            with urllib.request.urlopen(client.url + "/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    wait_for(ready, timeout=60, what="serve --http to be ready")
    return background, client


def phase_of(client: Client, name: str) -> str | None:
    answer = client("GET", f"/v1/tasks/{name}", who="vic")
    return ((answer.body or {}).get("status") or {}).get("phase") if answer.status == 200 else None


def wait_phase(client: Client, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    wait_for(lambda: phase_of(client, name) == phase, timeout=timeout, what=f"task {name} to reach {phase}")
    document: dict[str, Any] = client("GET", f"/v1/tasks/{name}", who="vic").body
    return document


def author_committer(repo: Path, rev: str) -> tuple[str, str]:
    out = git(repo, "log", "-1", "--format=%an <%ae>%n%cn <%ce>", rev).splitlines()
    return out[0], out[1]


def task_body(name: str | None, message: str, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"agentRef": {"name": AGENT_NAME}, "userMessage": message, **more}
    if name is not None:
        body["name"] = name
    return body


# -- the module's server: a bare repository ------------------------------------------------------


@dataclass
class Served:
    repo: AcpRepo  # the bare repository serve writes (objects + compare-and-swap on main)
    client: Client
    secret: str
    background: Any


def channel_yaml() -> str:
    approvers = ", ".join(APPROVERS)
    return (
        f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: humans\nspec:\n  type: git\n"
        f"  git:\n    approvers: [{approvers}]\n"
    )


@pytest.fixture(scope="module")
def served(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("api")
    with no_servers_left() as marker, module_repo(stub_process, base) as (work, secret), serving() as start:
        stub_process.rules(
            {"match": "^Use the gate", "when": "first", "toolCalls": [call("gated__echo", text="hi")]},
            {
                "match": "^Ask",
                "when": "first",
                "toolCalls": [call("humans__human_contact", message="Where?")],
            },
            {"match": "^Echo my key", "status": 400, "message": f"Incorrect API key provided: {secret}"},
            {"when": "tool", "content": "tool said: {tool}"},
        )
        server = mcpserver_yaml("gated", marker=marker) + "  approvalContactChannel:\n    name: humans\n"
        work.commit(
            {
                "contactchannels/humans.yaml": channel_yaml(),
                "mcpservers/gated.yaml": server,
                "agents/tooly.yaml": tool_agent_yaml("tooly", servers=("gated",)),
                "agents/asker.yaml": tool_agent_yaml("asker")
                + "  humanContactChannels:\n    - name: humans\n",
            },
            "Add a gated MCP server and its agent",
        )
        bare = base / "served.git"
        git(base, "clone", "-q", "--bare", str(work.path), str(bare))
        repo = AcpRepo(path=bare, secrets=work.secrets, stub_url=work.stub_url, logs=work.logs)
        background, client = start_serve(repo, write_tokens(base / "tokens.yaml"), start=start)
        yield Served(repo, client, secret, background)


def test_a_created_task_runs_to_final_answer_and_get_shows_it(served: Served) -> None:
    client, repo = served.client, served.repo
    before = repo.main_sha()
    created = client("POST", "/v1/tasks", task_body("hello", "Say hello", labels={"team": "a"}))
    assert created.status == 201, created.body
    assert created.body["metadata"] == {"name": "hello", "labels": {"team": "a"}}
    assert created.body["spec"] == {"agentRef": {"name": AGENT_NAME}, "userMessage": "Say hello"}
    assert created.headers["location"] == "/v1/tasks/hello"
    # On main as the caller, committed by serve's identity; one parent: a fast-forward of main.
    sha = repo.main_sha()
    assert created.headers["x-commit"] == sha
    assert author_committer(repo.path, sha) == (
        "Alice Operator <alice@example.com>",
        "gitops-acp <gitops-acp@localhost>",
    )
    assert git(repo.path, "rev-parse", f"{sha}^") == before
    assert git(repo.path, "log", "-1", "--format=%s", sha) == "Add task hello"
    assert "userMessage: Say hello" in git(repo.path, "show", f"{sha}:tasks/hello.yaml")
    document = wait_phase(client, "hello", "FinalAnswer")
    assert document["status"]["output"] == "Echo: Say hello"  # the stub echoes
    window = document["status"]["contextWindow"]
    assert [m["role"] for m in window][-2:] == ["user", "assistant"]
    listed = client("GET", "/v1/tasks", who="vic", query={"selector": "team=a", "phase": "FinalAnswer"})
    assert [d["metadata"]["name"] for d in listed.body["items"]] == ["hello"]
    assert listed.body["continue"] is None


def test_concurrent_creates_share_commits(served: Served) -> None:
    client, repo = served.client, served.repo
    before = repo.main_sha()
    names = [f"burst-{i:02d}" for i in range(24)]
    answers: dict[str, Answer] = {}

    def create(name: str) -> None:
        answers[name] = client("POST", "/v1/tasks", task_body(name, f"Burst {name}"))

    threads = [threading.Thread(target=create, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {name: answers[name].status for name in names} == dict.fromkeys(names, 201)
    commits = git(repo.path, "rev-list", f"{before}..main").splitlines()
    assert 1 <= len(commits) < len(names), f"{len(commits)} commits for {len(names)} tasks"
    assert git(repo.path, "rev-list", "--merges", f"{before}..main") == ""  # fast-forwards only
    for sha in commits:
        assert author_committer(repo.path, sha)[0] == "Alice Operator <alice@example.com>"
    added = git(repo.path, "diff", "--name-only", before, "main").splitlines()
    assert sorted(added) == [f"tasks/{name}.yaml" for name in names]
    for name in names:
        wait_phase(client, name, "FinalAnswer")
    # Pages: by name, `continue` to the next one.
    seen: list[str] = []
    token: str | None = None
    while True:
        query = {"agent": AGENT_NAME, "limit": "10", **({"continue": token} if token else {})}
        page = client("GET", "/v1/tasks", who="vic", query=query)
        assert page.status == 200
        assert len(page.body["items"]) <= 10
        seen += [d["metadata"]["name"] for d in page.body["items"]]
        token = page.body["continue"]
        if token is None:
            break
    assert [n for n in seen if n.startswith("burst-")] == names


def test_a_name_is_generated_when_none_is_given(served: Served) -> None:
    created = served.client("POST", "/v1/tasks", task_body(None, "No name"))
    assert created.status == 201, created.body
    name = created.body["metadata"]["name"]
    assert name.startswith("task-")
    assert len(name) == len("task-") + 5
    prefixed = served.client("POST", "/v1/tasks", task_body(None, "Prefixed", generateName="nightly-"))
    assert prefixed.body["metadata"]["name"].startswith("nightly-")
    wait_phase(served.client, name, "FinalAnswer")


def test_a_traceparent_header_is_kept_on_the_task(served: Served) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    created = served.client(
        "POST", "/v1/tasks", task_body("traced", "Traced"), headers={"traceparent": parent}
    )
    assert created.body["metadata"]["annotations"] == {"acp.gitops.dev/traceparent": parent}
    junk = served.client("POST", "/v1/tasks", task_body("untraced", "x"), headers={"traceparent": "00-zz"})
    assert "annotations" not in junk.body["metadata"]


BIG = "x" * (1024 * 1024 + 10)


@pytest.mark.parametrize(
    ("label", "request_", "code", "says"),
    [
        ("malformed JSON", {"raw": b'{"name": "x",'}, 400, "the body is not JSON"),
        ("not an object", {"raw": b"[1, 2]"}, 422, "the body must be a JSON object"),
        ("empty body", {"raw": b""}, 400, "the body is empty"),
        ("unknown field", {"body": {**task_body("u1", "x"), "colour": "red"}}, 422, "colour: unknown field"),
        (
            "unknown field in the spec",
            {"body": task_body("u2", "x", contextWindow=[{"role": "user", "content": "x", "mood": 1}])},
            422,
            "mood",
        ),
        ("a bad name", {"body": task_body("Bad_Name", "x")}, 422, 'task name "Bad_Name"'),
        ("a long name", {"body": task_body("a" * 64, "x")}, 422, "at most 63"),
        (
            "an unknown agent",
            {"body": {**task_body("u3", "x"), "agentRef": {"name": "ghost"}}},
            422,
            'Agent "ghost" is not declared',
        ),
        ("no agentRef", {"body": {"name": "u4", "userMessage": "x"}}, 422, "agentRef"),
        (
            "both messages",
            {"body": task_body("u5", "x", contextWindow=[{"role": "user", "content": "y"}])},
            422,
            "userMessage",
        ),
        (
            "an existing name",
            {"body": task_body("taken", "again")},
            409,
            'Task "taken" already exists on main',
        ),
        (
            "forkFrom at no commit",
            {"body": {**task_body("u6", "x"), "forkFrom": {"task": "hello", "commit": "nope"}}},
            422,
            "no such commit",
        ),
        ("an oversized body", {"raw": json.dumps(task_body("u7", BIG)).encode()}, 413, "1 MiB"),
        ("no token", {"body": task_body("u8", "x"), "who": None}, 401, "Authorization: Bearer"),
        (
            "a wrong token",
            {"body": task_body("u9", "x"), "headers": {"Authorization": "Bearer nope"}},
            401,
            "not a valid token",
        ),
        ("a missing role", {"body": task_body("u10", "x"), "who": "vic"}, 403, 'has no role "operator"'),
    ],
)
def test_bad_input_is_refused_and_nothing_is_committed(
    served: Served, label: str, request_: dict[str, Any], code: int, says: str
) -> None:
    if label == "an existing name":  # made here: another test's task may run on another worker
        assert served.client("POST", "/v1/tasks", task_body("taken", "first")).status == 201
    before = served.repo.main_sha()
    headers = request_.get("headers")
    who = None if headers else request_.get("who", "alice")
    answer = served.client(
        "POST", "/v1/tasks", request_.get("body"), raw=request_.get("raw"), who=who, headers=headers
    )
    assert answer.status == code, (label, answer.body)
    assert set(answer.body) == {"error"}
    assert answer.body["error"]["code"] == code
    assert says in answer.body["error"]["message"], (label, answer.body)
    assert "\n" not in answer.body["error"]["message"]
    assert served.repo.main_sha() == before, f"{label}: something was committed"


@pytest.mark.parametrize(
    ("path", "query", "says"),
    [
        ("/v1/tasks", {"phase": "Sleeping"}, "phase=Sleeping: not a Task phase; use one of"),
        ("/v1/tasks", {"limit": "0"}, "limit=0: expected a number from 1 to 1000"),
        ("/v1/tasks", {"selector": "a==b=c"}, "selector=a==b=c:"),
        ("/v1/tasks", {"continue": "Not_A_Token"}, "continue=Not_A_Token: not a token this API gave"),
        ("/v1/tasks", {"q": "x" * 201}, "q: 201 characters; expected at most 200"),
        ("/v1/toolcalls", {"phase": "FinalAnswer"}, "phase=FinalAnswer: not a ToolCall phase"),
        ("/v1/tasks/Bad_Name", {}, 'task name "Bad_Name"'),
    ],
)
def test_bad_queries_are_422(served: Served, path: str, query: dict[str, str], says: str) -> None:
    answer = served.client("GET", path, who="vic", query=query)
    assert answer.status == 422, answer.body
    assert says in answer.body["error"]["message"]


def test_a_search_by_name_finds_tasks_beyond_the_first_page_with_the_other_filters(served: Served) -> None:
    client = served.client
    fillers = [f"find-a{i:02}" for i in range(8)]
    needles = ["find-x-needle-1", "find-x-needle-2", "find-x-needle-3"]
    for name in [*fillers, *needles]:
        assert client("POST", "/v1/tasks", task_body(name, f"Search for {name}")).status == 201
    gated = {"name": "find-y-needle-gate", "agentRef": {"name": "tooly"}, "userMessage": "Use the gate"}
    assert client("POST", "/v1/tasks", gated).status == 201
    for name in needles:
        wait_phase(client, name, "FinalAnswer")
    _waiting_call(client, "find-y-needle-gate")

    def listed(**query: str) -> tuple[list[str], str | None]:
        answer = client("GET", "/v1/tasks", who="vic", query=query)
        assert answer.status == 200, answer.body
        return [d["metadata"]["name"] for d in answer.body["items"]], answer.body["continue"]

    # Unfiltered, the first page of five holds no needle: eight fillers sort before them.
    first, more = listed(limit="5")
    assert more is not None
    assert not [name for name in first if "needle" in name]
    # The search, in any case, pages through the matches only, with their own continue.
    found, after = listed(q="NEEDLE", limit="2")
    assert (found, after) == (needles[:2], needles[1])
    assert listed(q="NEEDLE", limit="2", **{"continue": after}) == ([needles[2], gated["name"]], None)
    assert listed(q="needle")[0] == [*needles, gated["name"]]
    # With the other filters: phase, agent; a search that matches nothing is an empty page.
    assert listed(q="needle", phase="FinalAnswer") == (needles, None)
    assert listed(q="Needle", phase="ToolCallsPending") == ([gated["name"]], None)
    assert listed(q="needle", agent="tooly") == ([gated["name"]], None)
    assert listed(q="x-needle-2") == (["find-x-needle-2"], None)
    assert listed(q="no-such-name") == ([], None)
    assert listed(q="  ") == listed()  # blank: no search


def test_validation_messages_are_validates_own(served: Served, tmp_path: Path) -> None:
    body = task_body("v1", "x", contextWindow=[{"role": "user", "content": "x", "mood": 1}])
    answer = served.client("POST", "/v1/tasks", body)
    # The same document as a file: `gitops-acp validate` says the same thing, word for word.
    (tmp_path / "tasks").mkdir()
    document = {
        "apiVersion": API,
        "kind": "Task",
        "metadata": {"name": "v1"},
        "spec": {k: v for k, v in body.items() if k != "name"},
    }
    import yaml

    (tmp_path / "tasks" / "v1.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    validated = cli("--repo", str(tmp_path), "validate")
    assert validated.returncode == 1
    problem = validated.stdout.splitlines()[0].split(": ", 1)[1]
    assert problem in answer.body["error"]["message"], (validated.stdout, answer.body)


def test_roles_and_the_document_without_a_token(served: Served) -> None:
    client = served.client
    assert client("GET", "/v1/tasks", who="vic").status == 200
    assert client("GET", "/v1/tasks", who="bob").status == 200  # approver includes viewer
    assert client("GET", "/v1/tasks", who=None).status == 401
    denied = client("DELETE", "/v1/tasks/hello", who="bob")
    assert denied.status == 403
    assert 'has no role "operator"' in denied.body["error"]["message"]
    assert client("POST", "/v1/toolcalls/x/approve", {"comment": ""}, who="vic").status == 403
    with urllib.request.urlopen(client.url + "/v1/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    assert document["openapi"].startswith("3.1")
    assert {"/v1/tasks", "/v1/tasks/{name}", "/v1/toolcalls", "/v1/toolcalls/{name}/approve"} <= set(
        document["paths"]
    )
    missing = client("GET", "/v1/tasks/nobody-here", who="vic")
    assert missing.status == 404
    assert 'Task "nobody-here" not found' in missing.body["error"]["message"]


def test_cancel_removes_the_task_from_main_as_the_caller(served: Served) -> None:
    client, repo = served.client, served.repo
    assert client("POST", "/v1/tasks", task_body("doomed", "Goodbye")).status == 201
    wait_phase(client, "doomed", "FinalAnswer")
    cancelled = client("DELETE", "/v1/tasks/doomed")
    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["removed"] == "tasks/doomed.yaml"
    assert git(repo.path, "ls-tree", "main", "--", "tasks/doomed.yaml") == ""
    assert author_committer(repo.path, "main")[0] == "Alice Operator <alice@example.com>"
    assert git(repo.path, "log", "-1", "--format=%s", "main") == "Cancel task doomed"
    again = client("DELETE", "/v1/tasks/doomed")
    assert again.status == 404
    assert "nothing to cancel" in again.body["error"]["message"]
    # Its status stays readable, and the name is never given out again.
    assert client("GET", "/v1/tasks/doomed", who="vic").status == 200
    reused = client("POST", "/v1/tasks", task_body("doomed", "Again"))
    assert reused.status == 409
    assert "never reused" in reused.body["error"]["message"]


def _waiting_call(client: Client, task: str) -> str:
    def found() -> str | None:
        listed = client(
            "GET", "/v1/toolcalls", who="vic", query={"task": task, "phase": "AwaitingHumanApproval"}
        )
        items = listed.body["items"]
        return items[0]["metadata"]["name"] if items else None

    try:
        name: str = wait_for(found, timeout=60, what=f"the tool call of {task} to await approval")
    except BaseException:  # say where it stopped: the task, its calls, serve's log
        state = client("GET", f"/v1/tasks/{task}", who="vic").body
        calls = client("GET", "/v1/toolcalls", who="vic", query={"task": task}).body
        raise AssertionError(
            f"{task}: {json.dumps(state)[-1500:]}\ncalls: {json.dumps(calls)[-1500:]}"
        ) from None
    return name


def test_decisions_over_http_are_the_clis_record(served: Served) -> None:
    client, repo = served.client, served.repo
    for task in ("gate-api", "gate-cli", "gate-no"):
        body = {"name": task, "agentRef": {"name": "tooly"}, "userMessage": f"Use the gate {task}"}
        assert client("POST", "/v1/tasks", body).status == 201
    by_api, by_cli, refused = (_waiting_call(client, t) for t in ("gate-api", "gate-cli", "gate-no"))
    # bob is an approver by token, but not one of the channel's approvers.
    denied = client("POST", f"/v1/toolcalls/{by_api}/approve", {"comment": "bob says yes"}, who="bob")
    assert denied.status == 403
    assert (
        "Bob Approver <bob@example.com> is not one of the approvers of ContactChannel humans"
        in denied.body["error"]["message"]
    )
    approved = client("POST", f"/v1/toolcalls/{by_api}/approve", {"comment": "fine by me"})
    assert approved.status == 200, approved.body
    assert approved.body["path"] == f"approvals/{by_api}.yaml"
    api_commit = repo.main_sha()
    assert author_committer(repo.path, api_commit)[0] == "Alice Operator <alice@example.com>"
    again = client("POST", f"/v1/toolcalls/{by_api}/approve", {"comment": "twice"})
    assert again.status == 409
    assert "already decided" in again.body["error"]["message"]
    result = cli("--repo", str(repo.path), "approve", by_cli, "--comment", "fine by me")
    assert result.returncode == 0, result.stderr
    rejected = client("POST", f"/v1/toolcalls/{refused}/reject", {"reason": "not today"})
    assert rejected.status == 200
    assert rejected.body["decision"] == "rejected"
    assert client("POST", f"/v1/toolcalls/{refused}/reject", {"reason": " "}).status == 422
    # The same record as the CLI's, but for the call's own fields.
    import yaml

    api_record = yaml.safe_load(git(repo.path, "show", f"main:approvals/{by_api}.yaml"))
    cli_record = yaml.safe_load(git(repo.path, "show", f"main:approvals/{by_cli}.yaml"))
    own = {"task", "toolCall", "arguments", "argumentsDigest", "request"}
    assert api_record["kind"] == cli_record["kind"] == "Approval"
    assert {k: v for k, v in api_record["spec"].items() if k not in own} == {
        k: v for k, v in cli_record["spec"].items() if k not in own
    }
    assert api_record["spec"]["decision"] == "approved"
    assert api_record["spec"]["comment"] == "fine by me"
    message_api = git(repo.path, "log", "-1", "--format=%B", api_commit).strip()
    assert message_api == "Approve gated__echo for task gate-api\n\nfine by me"
    # The reconciler takes both decisions, and records who made each.
    wait_phase(client, "gate-api", "FinalAnswer")
    wait_phase(client, "gate-cli", "FinalAnswer")
    calls = {c["metadata"]["name"]: c for c in client("GET", "/v1/toolcalls", who="vic").body["items"]}
    assert calls[by_api]["status"]["approval"]["decidedBy"] == "Alice Operator <alice@example.com>"
    assert calls[by_cli]["status"]["approval"]["decidedBy"] == "Test Human <human@example.com>"
    assert calls[refused]["status"]["phase"] == "ToolCallRejected"


def test_a_question_answered_over_http(served: Served) -> None:
    client, repo = served.client, served.repo
    body = {"name": "asking", "agentRef": {"name": "asker"}, "userMessage": "Ask where to go"}
    assert client("POST", "/v1/tasks", body).status == 201

    def waiting() -> str | None:
        listed = client(
            "GET", "/v1/toolcalls", who="vic", query={"task": "asking", "phase": "AwaitingHumanInput"}
        )
        return listed.body["items"][0]["metadata"]["name"] if listed.body["items"] else None

    name: str = wait_for(waiting, timeout=60, what="the question to wait for an answer")
    assert client("POST", f"/v1/toolcalls/{name}/respond", {"response": ""}).status == 422
    answered = client("POST", f"/v1/toolcalls/{name}/respond", {"response": "Porto"})
    assert answered.status == 200, answered.body
    assert answered.body == {
        "name": name,
        "decision": "answered",
        "path": f"responses/{name}.yaml",
        "commit": repo.main_sha(),
    }
    assert author_committer(repo.path, "main")[0] == "Alice Operator <alice@example.com>"
    document = wait_phase(client, "asking", "FinalAnswer")
    assert "Porto" in json.dumps(document["status"]["contextWindow"])
    one = client("GET", f"/v1/toolcalls/{name}", who="vic")
    assert one.body["status"]["humanContact"]["respondedBy"] == "Alice Operator <alice@example.com>"


def test_events_stream_behind_the_viewer_role(served: Served) -> None:
    client = served.client
    assert client("GET", "/v1/events", who=None).status == 401
    request = urllib.request.Request(
        client.url + "/v1/events?kind=task&name=streamed",
        headers={"Authorization": f"Bearer {TOKENS['vic'][0]}"},
    )
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert client("POST", "/v1/tasks", task_body("streamed", "Stream me")).status == 201
        while not events or events[-1]["to"] != "FinalAnswer":
            line = stream.readline().decode()
            assert line, "the stream ended"
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
    assert {(e["kind"], e["name"]) for e in events} == {("Task", "streamed")}
    assert events[0]["from"] in ("", "-", None) or events[0]["from"] != "FinalAnswer"


def _unauthenticated(url: str, method: str) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, json.loads(exc.read())


def test_unknown_endpoints_answer_json(served: Served) -> None:
    code, _, body = _unauthenticated(served.client.url + "/v1/nothing", "GET")
    assert code == 404
    assert body["error"]["message"] == "no such endpoint: GET /v1/nothing (see /v1/openapi.json)"
    code, headers, body = _unauthenticated(served.client.url + "/v1/tasks/hello", "PUT")
    assert code == 405
    assert headers["Allow"] == "DELETE, GET"
    assert body["error"]["message"] == "PUT /v1/tasks/hello: not allowed; use DELETE, GET"


def test_a_provider_echoing_the_key_is_redacted_in_what_the_api_returns(served: Served) -> None:
    assert served.client("POST", "/v1/tasks", task_body("leaky", "Echo my key")).status == 201
    document = wait_phase(served.client, "leaky", "Failed")
    assert "Incorrect API key provided: ***" in document["status"]["error"]  # redacted
    assert served.secret not in json.dumps(document)
    listed = served.client("GET", "/v1/tasks", who="vic", query={"phase": "Failed"})
    assert "leaky" in [d["metadata"]["name"] for d in listed.body["items"]]
    assert served.secret.encode() not in listed.raw


def test_no_answer_carries_a_secret(served: Served) -> None:
    # Everything this module received, every endpoint (the LLM's key is in --secrets-dir).
    served.client("GET", "/v1/toolcalls", who="vic")
    assert served.client.answers
    for body in served.client.answers:
        assert served.secret.encode() not in body
    assert served.secret not in served.background.stderr()


# -- a work tree with main checked out --------------------------------------------------------------


def test_with_main_checked_out_the_api_commits_through_the_work_tree(
    acp_repo: AcpRepo, tmp_path: Path, serve_bg: Any
) -> None:
    _, client = start_serve(acp_repo, write_tokens(tmp_path / "tokens.yaml"), start=serve_bg)
    created = client("POST", "/v1/tasks", task_body("wt", "Through the work tree"))
    assert created.status == 201, created.body
    assert author_committer(acp_repo.path, "HEAD")[0] == "Alice Operator <alice@example.com>"
    assert (acp_repo.path / "tasks" / "wt.yaml").is_file()
    assert git(acp_repo.path, "status", "--porcelain") == ""  # the person's tree and index agree
    wait_phase(client, "wt", "FinalAnswer")
    # Someone's uncommitted file at that path is never overwritten.
    (acp_repo.path / "tasks" / "mine.yaml").write_text("draft\n")
    before = acp_repo.main_sha()
    refused = client("POST", "/v1/tasks", task_body("mine", "x"))
    assert refused.status == 409
    assert "uncommitted changes to tasks/mine.yaml" in refused.body["error"]["message"]
    assert (acp_repo.path / "tasks" / "mine.yaml").read_text() == "draft\n"
    assert acp_repo.main_sha() == before


# -- a remote whose main refuses pushes -------------------------------------------------------------

REFUSE_MAIN = """#!/bin/sh
while read old new ref; do
  if [ "$ref" = "refs/heads/main" ]; then echo "main is protected here" >&2; exit 1; fi
done
exit 0
"""


def test_a_remote_refusing_the_push_is_a_clear_409_and_nothing_is_created(
    remote: Remote, tmp_path: Path
) -> None:
    hook = remote.bare.path / "hooks" / "pre-receive"
    hook.write_text(REFUSE_MAIN)
    hook.chmod(0o755)
    port = free_port()
    args = remote.serve_args(
        "--http", f"127.0.0.1:{port}", "--api-tokens", str(write_tokens(tmp_path / "t.yaml")), once=False
    )
    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        client = Client(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            assert proc.poll() is None, stderr_path.read_text()
            try:
                with urllib.request.urlopen(client.url + "/readyz", timeout=5) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, timeout=60, what="serve to be ready")
        remote_main = git(remote.bare.path, "rev-parse", "main")
        refused = client("POST", "/v1/tasks", task_body("blocked", "Blocked"))
        assert refused.status == 409, refused.body
        message = refused.body["error"]["message"]
        assert "refused the push of main" in message, message
        assert "pre-receive hook declined" in message, message
        assert "nothing was created" in message
        assert git(remote.bare.path, "rev-parse", "main") == remote_main
        assert git(remote.cache / "mirror.git", "rev-parse", "refs/heads/main") == remote_main
        assert client("GET", "/v1/tasks/blocked", who="vic").status == 404
        # The branch opens again: the same request goes through, pushed, and runs.
        hook.unlink()
        created = client("POST", "/v1/tasks", task_body("blocked", "Blocked"))
        assert created.status == 201, created.body
        assert git(remote.bare.path, "rev-parse", "main") == created.headers["x-commit"]
        # The mirror follows at once (the remote has it): the caller reads its own write.
        assert git(remote.cache / "mirror.git", "rev-parse", "refs/heads/main") == created.headers["x-commit"]
        assert client("GET", "/v1/tasks/blocked", who="vic").status == 200
        assert author_committer(remote.bare.path, "main")[0] == "Alice Operator <alice@example.com>"
        wait_phase(client, "blocked", "FinalAnswer")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "Traceback" not in stderr_of_path(stderr_path)


def stderr_of_path(path: Path) -> str:
    return path.read_text(errors="replace")


def test_serve_refuses_a_bad_tokens_file(acp_repo: AcpRepo, tmp_path: Path) -> None:
    bad = tmp_path / "tokens.yaml"
    bad.write_text("- name: Eve\n  email: eve@example.com\n  roles: [admin]\n  sha256: " + "0" * 64 + "\n")
    result = cli(
        "--repo", str(acp_repo.path), "serve", "--http", f"127.0.0.1:{free_port()}", "--api-tokens", str(bad)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --api-tokens {bad}: entry 1 (Eve): roles: 'admin' is not a role; "
        "use viewer, operator, approver"
    )


def test_without_a_tokens_file_v1_is_refused(acp_repo: AcpRepo, serve_bg: Any) -> None:
    port = free_port()
    background = serve_bg(acp_repo, "--http", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"

    def answered() -> tuple[int, Any] | None:
        assert background.proc.poll() is None, background.stderr()
        request = urllib.request.Request(url + "/v1/tasks", headers={"Authorization": "Bearer x"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())
        except (urllib.error.URLError, OSError):
            return None

    status, body = wait_for(answered, timeout=60, what="serve --http")
    assert status == 403
    assert body == {
        "error": {"code": 403, "message": "the API is disabled: serve was started without --api-tokens FILE"}
    }
    assert "no --api-tokens" in background.stderr()


def test_archived_tasks_are_still_read_by_name_and_listed_with_all(
    acp_repo: AcpRepo, tmp_path: Path, serve_bg: Any
) -> None:
    bare = tmp_path / "served.git"
    git(tmp_path, "clone", "-q", "--bare", str(acp_repo.path), str(bare))
    repo = AcpRepo(path=bare, secrets=acp_repo.secrets, stub_url=acp_repo.stub_url, logs=acp_repo.logs)
    _, client = start_serve(
        repo, write_tokens(tmp_path / "tokens.yaml"), "--retain-finished", "1s", start=serve_bg
    )
    assert client("POST", "/v1/tasks", task_body("old", "Archive me")).status == 201
    wait_phase(client, "old", "FinalAnswer")

    def names(**query: str) -> list[str]:
        listed = client("GET", "/v1/tasks", who="vic", query=query)
        return [d["metadata"]["name"] for d in listed.body["items"]]

    wait_for(lambda: "old" not in names(), timeout=30, what="the finished task to be archived")
    subjects = git(bare, "log", "--format=%s", "acp/status").splitlines()
    assert any(subject.startswith("archive:") for subject in subjects)
    assert names(all="true") == ["old"]
    document = client("GET", "/v1/tasks/old", who="vic").body
    assert document["status"]["phase"] == "FinalAnswer"
    assert document["status"]["contextWindow"][-1]["content"] == "Echo: Archive me"


def test_under_signed_main_serve_signs_the_callers_commits(
    acp_repo: AcpRepo, tmp_path: Path, serve_bg: Any
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("alice", "serve"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(keys / name)], check=True
        )
    allowed = keys / "allowed_signers"
    allowed.write_text(
        "".join(
            f"{name}@example.com {(keys / f'{name}.pub').read_text().strip()}\n"
            for name in ("alice", "serve")
        )
    )
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys / 'alice'}", "-c", "commit.gpgsign=true"]
    tip = acp_repo.main_sha()
    git(
        acp_repo.path,
        *signing,
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "Adopt",
        "--trailer",
        f"Acp-Seal: {tip}",
    )
    bare = tmp_path / "served.git"
    git(tmp_path, "clone", "-q", "--bare", str(acp_repo.path), str(bare))
    repo = AcpRepo(path=bare, secrets=acp_repo.secrets, stub_url=acp_repo.stub_url, logs=acp_repo.logs)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        json.dumps(
            {
                "signers": {
                    "allowedSignersFile": str(allowed),
                    "requireSignedMain": True,
                    "signingKey": str(keys / "serve"),
                }
            }
        )
    )
    _, client = start_serve(
        repo, write_tokens(tmp_path / "tokens.yaml"), "--policy", str(policy), start=serve_bg
    )
    created = client("POST", "/v1/tasks", task_body("signed", "Signed by serve"))
    assert created.status == 201, created.body
    verified = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", "main"],
        cwd=bare,
        capture_output=True,
        text=True,
    )
    assert 'Good "git" signature for serve@example.com' in verified.stderr, verified.stderr
    assert author_committer(bare, "main")[0] == "Alice Operator <alice@example.com>"
    wait_phase(client, "signed", "FinalAnswer")  # applied: main stayed verified
    decided = client("POST", "/v1/toolcalls/anything/approve", {"comment": ""})
    assert decided.status == 409
    assert "decide with your own signing key" in decided.body["error"]["message"]
