"""End-to-end fixtures: the real CLI as subprocesses, real git repositories, the stub LLM in its own process.

Nothing here imports the package under test: every command goes through
`[sys.executable, "-m", "gitops_acp", ...]`, and the only ways to observe it are the ones a user
has (the status branch, `main`, the work tree, exit codes, stdout/stderr) plus the stub's record
of the HTTP requests it received.

Every process started here stops by itself (`--max-seconds`, subprocess timeouts) and is killed at
teardown. Waits poll with deadlines; no test relies on a sleep for correctness.

Startup of the CLI costs about a second (it imports pydantic, openai, gitpython), so the stub is one
process per session: the function-scoped `stub` fixture replaces its script and forgets its records.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_acp.resources.meta import Kind, resolve_kind, status_path
from tests.conftest import commit_files, git

API = "acp.gitops.dev/v1alpha1"
LLM_NAME = "stub-llm"
AGENT_NAME = "e2e-agent"
SECRET_NAME = "stub-llm-key"
SECRET_KEY = "E2E_STUB_API_KEY"
STATUS_BRANCH = "acp/status"
IDENTITY = "gitops-acp <gitops-acp@localhost>"
CLI = [sys.executable, "-m", "gitops_acp"]
#: Fast settings for every serve run (the contract's defaults are meant for people, not tests).
SERVE_FAST = ["--backoff-base", "0.05", "--poll-interval", "0.2"]
#: The phases the contract names (DESIGN §4), plus "-" (no status yet) as commit messages write it.
TASK_PHASES = {
    "-",
    "Pending",
    "ReadyForLLM",
    "ToolCallsPending",
    "ErrorBackoff",
    "FinalAnswer",
    "Failed",
    "Cancelled",
}

_TRANSITION = re.compile(r"^(?P<kind>[A-Za-z]+)/(?P<name>[a-z0-9-]+): (?P<old>\S+) -> (?P<new>\S+)$")


# -- processes ------------------------------------------------------------------------------------


def cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `gitops-acp ARGS` to completion (killed after `timeout`)."""
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def cli_many(
    argvs: list[list[str]], *, cwd: Path | None = None, timeout: float = 60
) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent commands at once (the CLI's startup dominates short commands)."""
    procs = [
        subprocess.Popen(
            [*CLI, *argv],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for argv in argvs
    ]
    results = []
    try:
        for argv, proc in zip(argvs, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess([*CLI, *argv], proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the contract's error shape (exit 1, one `error: ...` line, no traceback); return the line."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- the stub LLM ---------------------------------------------------------------------------------


class Stub:
    """A handle on the stub LLM process: its URL, its script, the requests it recorded."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url  # .../v1, what an LLM's baseUrl gets
        self.root = url.removesuffix("/v1")
        self.api_key: str | None = None  # demanded of every request (a 401 otherwise)

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def set_script(self, script: dict[str, Any]) -> None:
        """Replace the script (POST /_stub/script); restarts the `times` counters."""
        self._call("POST", "/_stub/script", script)

    def rules(self, *rules: dict[str, Any]) -> None:
        """Script these rules (first match wins; no match: echo), still demanding the API key."""
        self.set_script(
            {"apiKey": self.api_key, "rules": list(rules)} if self.api_key else {"rules": list(rules)}
        )

    def prepare(self, api_key: str) -> None:
        """Demand `api_key`, echo everything, forget every record."""
        self.api_key = api_key
        self.rules()
        self.reset()

    def reset(self) -> None:
        """Forget recorded requests and `times` counters."""
        self._call("POST", "/_stub/reset", {})

    def requests(self) -> list[dict[str, Any]]:
        """Every recorded request, oldest first."""
        result: list[dict[str, Any]] = self._call("GET", "/_stub/requests")
        return result

    def chats(self, first_user: str | None = None) -> list[dict[str, Any]]:
        """Recorded chat completions, optionally only one conversation's (by its first user message)."""
        found = []
        for entry in self.requests():
            if entry["path"] != "/v1/chat/completions" or not isinstance(entry.get("body"), dict):
                continue
            users = [m.get("content") for m in entry["body"].get("messages", []) if m.get("role") == "user"]
            if first_user is None or (users and users[0] == first_user):
                found.append(entry)
        return found


def _start_stub(base: Path, script: dict[str, Any]) -> Stub:
    base.mkdir(parents=True, exist_ok=True)
    script_file = base / "script.json"
    script_file.write_text(json.dumps(script))
    stderr = (base / "stub.stderr").open("w")
    proc = subprocess.Popen(
        # One stub serves the whole session: its limit must outlast the slowest e2e run (on a busy
        # 2-core machine, 15 minutes); it also stops when pytest dies (llm-stub watches its parent).
        [*CLI, "llm-stub", "--port", "0", "--script", str(script_file), "--max-seconds", "3600"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=os.environ.copy(),
    )
    stderr.close()
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        url = lines.get(timeout=60).strip()
    except queue.Empty:
        proc.kill()
        proc.wait()
        pytest.fail("the stub LLM did not print its URL within 60s")
    if not url.startswith("http://"):
        proc.kill()
        proc.wait()
        pytest.fail(f"the stub LLM printed {url!r} instead of its URL: {(base / 'stub.stderr').read_text()}")
    return Stub(proc, url)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="session")
def stub_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stub]:
    """One stub LLM process for the session (`gitops-acp llm-stub --port 0`), killed at the end."""
    stub = _start_stub(tmp_path_factory.mktemp("stub"), {"rules": []})
    try:
        yield stub
    finally:
        _stop(stub.proc)


@pytest.fixture
def stub(stub_process: Stub, secret_value: str) -> Stub:
    """The stub LLM with an empty script (echo) that demands the test's API key, and no records."""
    assert stub_process.proc.poll() is None, "the stub LLM process died"
    stub_process.prepare(secret_value)
    return stub_process


# -- the repository -------------------------------------------------------------------------------


def llm_yaml(name: str, url: str, *, secret: str = SECRET_NAME, key: str = SECRET_KEY) -> str:
    return f"""\
apiVersion: {API}
kind: LLM
metadata:
  name: {name}
spec:
  provider: openai
  apiKeyFrom:
    secretKeyRef:
      name: {secret}
      key: {key}
  parameters:
    model: stub-model
    baseUrl: {url}
    maxTokens: 64
"""


def agent_yaml(name: str, *, llm: str = LLM_NAME, limits: str = "") -> str:
    return f"""\
apiVersion: {API}
kind: Agent
metadata:
  name: {name}
spec:
  llmRef:
    name: {llm}
  system: You are a terse test assistant.
{limits}"""


def task_yaml(name: str, message: str, *, agent: str = AGENT_NAME) -> str:
    return f"""\
apiVersion: {API}
kind: Task
metadata:
  name: {name}
spec:
  agentRef:
    name: {agent}
  userMessage: {json.dumps(message)}
"""


@dataclass
class AcpRepo:
    """A work tree with `main` checked out, an LLM pointing at the stub and an Agent; secrets beside it."""

    path: Path
    secrets: Path
    stub_url: str
    logs: Path

    def commit(self, files: dict[str, str], message: str = "update") -> str:
        return commit_files(self.path, files, message)

    def add_task(self, name: str, message: str, *, agent: str = AGENT_NAME) -> str:
        """Commit tasks/<name>.yaml to main; return the new main sha."""
        return self.commit({f"tasks/{name}.yaml": task_yaml(name, message, agent=agent)}, f"Add task {name}")

    def add_tasks(self, tasks: dict[str, str], *, agent: str = AGENT_NAME) -> str:
        """Commit several tasks (name → message) in one commit."""
        files = {f"tasks/{n}.yaml": task_yaml(n, m, agent=agent) for n, m in tasks.items()}
        return self.commit(files, f"Add {len(tasks)} tasks")

    def remove(self, rel: str) -> str:
        git(self.path, "rm", "-q", rel)
        git(self.path, "commit", "-q", "-m", f"Remove {rel}")
        return self.main_sha()

    def main_sha(self) -> str:
        return git(self.path, "rev-parse", "refs/heads/main")

    # -- the status branch, read with plain git ----------------------------------------------

    def status(self, plural: str, name: str, rev: str = STATUS_BRANCH) -> dict[str, Any] | None:
        """The status file of one resource at `rev` (parsed), or None when it has none there."""
        out = subprocess.run(
            ["git", "show", f"{rev}:{status_file(plural, name)}"],
            cwd=self.path,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            return None
        document: dict[str, Any] = yaml.safe_load(out.stdout)
        return document

    def phase(self, name: str) -> str | None:
        """The task's phase at the tip of the status branch (None: no status yet)."""
        document = self.status("tasks", name)
        return ((document or {}).get("status") or {}).get("phase")

    def has_status_branch(self) -> bool:
        return (
            subprocess.run(
                ["git", "rev-parse", "-q", "--verify", f"refs/heads/{STATUS_BRANCH}"],
                cwd=self.path,
                capture_output=True,
            ).returncode
            == 0
        )

    def status_commit_count(self) -> int:
        return int(git(self.path, "rev-list", "--count", STATUS_BRANCH))

    def status_subjects(self) -> list[str]:
        return git(self.path, "log", "--format=%s", STATUS_BRANCH).splitlines()

    def commits(self, path: str | None = None) -> list[Commit]:
        """Commits of the status branch (touching `path`, when given), oldest first."""
        args = ["log", "--reverse", "--format=%H%x1f%P%x1f%an <%ae>%x1f%cn <%ce>%x1f%B%x1e", STATUS_BRANCH]
        if path is not None:
            args += ["--", path]
        out = git(self.path, *args)
        commits = []
        for record in out.split("\x1e"):
            if not record.strip():
                continue
            sha, parents, author, committer, message = record.strip("\n").split("\x1f")
            commits.append(Commit(sha, parents.split(), author, committer, message.strip("\n")))
        return commits

    def transitions(self, kind: str, name: str) -> list[tuple[str, str, Commit]]:
        """(old, new, commit) for each checkpoint commit of one resource, oldest first."""
        found = []
        for commit in self.commits(status_path(Kind(kind), name)):
            moves = [(old, new) for k, n, old, new in commit.moves() if (k, n) == (kind, name)]
            assert len(moves) == 1, f"{commit.sha[:10]} records {len(moves)} moves of {kind}/{name}"
            found.append((*moves[0], commit))
        return found

    def finished_tasks(self) -> set[str]:
        """Names of tasks with a `-> FinalAnswer` line anywhere on the status branch (one git call)."""
        if not self.has_status_branch():
            return set()
        out = git(self.path, "log", "--format=%B", STATUS_BRANCH)
        return {
            m.group("name")
            for line in out.splitlines()
            if (m := _TRANSITION.match(line.strip()))
            and m.group("kind") == "Task"
            and m.group("new") == "FinalAnswer"
        }


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: list[str]
    author: str
    committer: str
    message: str

    @property
    def subject(self) -> str:
        return self.message.splitlines()[0]

    def moves(self) -> list[tuple[str, str, str, str]]:
        """(kind, name, old, new) of every `<Kind>/<name>: <Old> -> <New>` line in the message."""
        found = []
        for line in self.message.splitlines():
            match = _TRANSITION.match(line.strip())
            if match:
                found.append((match["kind"], match["name"], match["old"], match["new"]))
        return found

    def trailers(self, key: str) -> list[str]:
        prefix = f"{key}: "
        return [line[len(prefix) :] for line in self.message.splitlines() if line.startswith(prefix)]


def new_secret() -> str:
    """A distinctive API key: any trace of it outside the secrets directory is a leak."""
    return f"sk-e2e-{uuid.uuid4().hex}-do-not-leak"


@pytest.fixture
def secret_value() -> str:
    return new_secret()


@contextlib.contextmanager
def isolated_env(home: Path) -> Iterator[None]:
    """What the root conftest's autouse fixture does per test, for fixtures wider than one test."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test Human\n\temail = human@example.com\n[init]\n\tdefaultBranch = main\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for role in ("AUTHOR", "COMMITTER"):
            mp.setenv(f"GIT_{role}_NAME", "Test Human")
            mp.setenv(f"GIT_{role}_EMAIL", "human@example.com")
        mp.delenv(SECRET_KEY, raising=False)  # the resolver's fallback must not find the key elsewhere
        mp.delenv("GITOPS_ACP_REPO", raising=False)
        yield


def make_repo(base: Path, stub: Stub, secret: str) -> AcpRepo:
    """Create repo/ (main: the LLM and the Agent), secrets/ (the key) and logs/ under `base`."""
    path = base / "repo"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    secrets = base / "secrets"
    (secrets / SECRET_NAME).mkdir(parents=True)
    (secrets / SECRET_NAME / SECRET_KEY).write_text(secret + "\n")
    logs = base / "logs"
    logs.mkdir()
    commit_files(
        path,
        {
            f"llms/{LLM_NAME}.yaml": llm_yaml(LLM_NAME, stub.url),
            f"agents/{AGENT_NAME}.yaml": agent_yaml(AGENT_NAME),
        },
        "Add the LLM and the agent",
    )
    return AcpRepo(path=path, secrets=secrets, stub_url=stub.url, logs=logs)


@contextlib.contextmanager
def module_repo(stub: Stub, base: Path) -> Iterator[tuple[AcpRepo, str]]:
    """`acp_repo` for a module-scoped fixture: an isolated git identity, a fresh key, a prepared stub."""
    with isolated_env(base / "home"):
        secret = new_secret()
        stub.prepare(secret)
        yield make_repo(base, stub, secret), secret


@pytest.fixture
def acp_repo(tmp_path: Path, stub: Stub, secret_value: str, monkeypatch: pytest.MonkeyPatch) -> AcpRepo:
    """A repository whose main holds an LLM (baseUrl: the stub) and an Agent; the key in a secrets dir."""
    monkeypatch.delenv(SECRET_KEY, raising=False)
    monkeypatch.delenv("GITOPS_ACP_REPO", raising=False)
    return make_repo(tmp_path, stub, secret_value)


# -- serve ----------------------------------------------------------------------------------------


def serve_args(repo: AcpRepo, *extra: str, once: bool) -> list[str]:
    return [
        "--repo",
        str(repo.path),
        "serve",
        *(["--once"] if once else []),
        "--secrets-dir",
        str(repo.secrets),
        *SERVE_FAST,
        *extra,
    ]


@pytest.fixture
def serve_once() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `serve --once` to completion (killed after `timeout`)."""

    def run(repo: AcpRepo, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return cli(*serve_args(repo, *extra, once=True), timeout=timeout)

    return run


@dataclass
class Background:
    """A `serve` process running in the background; its stderr goes to a file."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def serve_bg() -> Iterator[Callable[..., Background]]:
    """Start `serve` (not --once) in the background; every process started is killed at teardown."""
    with serving() as start:
        yield start


# -- tools: MCP servers, tool-using agents, the status branch read in bulk (tests of DESIGN §4) ----

#: Marks every MCP test server a test starts (in its environment), so a test can find them all,
#: orphans included, and nobody else's.
MARKER_ENV = "ACP_E2E_MARKER"
TESTSERVER = [sys.executable, "-m", "gitops_acp.testing.mcp_server"]
INTERRUPTED = "interrupted: outcome unknown, not re-run"


def mcpserver_yaml(
    name: str,
    *,
    marker: str,
    counter: Path | None = None,
    url: str | None = None,
    timeout: str | None = None,
) -> str:
    """An MCPServer: the project's test server over stdio (or `url` over Streamable HTTP)."""
    if url is not None:
        body = f"  transport: http\n  url: {url}\n"
    else:
        env = [(MARKER_ENV, marker)] + ([("ACP_TEST_COUNTER_FILE", str(counter))] if counter else [])
        body = (
            f"  transport: stdio\n  command: {json.dumps(sys.executable)}\n"
            '  args: ["-m", "gitops_acp.testing.mcp_server"]\n  env:\n'
            + "".join(f"    - name: {k}\n      value: {json.dumps(v)}\n" for k, v in env)
        )
    if timeout is not None:
        body += f"  timeout: {timeout}\n"
    return f"apiVersion: {API}\nkind: MCPServer\nmetadata:\n  name: {name}\nspec:\n{body}"


def tool_agent_yaml(
    name: str,
    *,
    servers: tuple[str, ...] = (),
    sub_agents: tuple[str, ...] = (),
    max_turns: int | None = None,
    description: str | None = None,
) -> str:
    """An Agent on the stub LLM with MCP servers, sub-agents and a maxTurns limit."""
    text = agent_yaml(name)
    if description is not None:
        text += f"  description: {json.dumps(description)}\n"
    if servers:
        text += "  mcpServers:\n" + "".join(f"    - name: {s}\n" for s in servers)
    if sub_agents:
        text += "  subAgents:\n" + "".join(f"    - name: {a}\n" for a in sub_agents)
    if max_turns is not None:
        text += f"  limits:\n    maxTurns: {max_turns}\n"
    return text


def call(name: str, **arguments: Any) -> dict[str, Any]:
    """A tool call for a stub rule's `toolCalls`."""
    return {"name": name, "arguments": arguments}


def status_files(repo: AcpRepo, rev: str = STATUS_BRANCH) -> dict[tuple[str, str], dict[str, Any]]:
    """Every status file at `rev`, parsed, by (plural, name): two git processes, however many files."""
    if rev == STATUS_BRANCH and not repo.has_status_branch():
        return {}
    listing = git(repo.path, "ls-tree", "-r", rev, "--", "status/")
    paths = [line.split("\t", 1)[1] for line in listing.splitlines()]
    if not paths:
        return {}
    out = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo.path,
        input="".join(f"{rev}:{p}\n" for p in paths).encode(),
        capture_output=True,
        check=True,
    ).stdout
    found: dict[tuple[str, str], dict[str, Any]] = {}
    offset = 0
    for path in paths:
        header_end = out.index(b"\n", offset)
        size = int(out[offset:header_end].split()[2])
        body = out[header_end + 1 : header_end + 1 + size]
        offset = header_end + 1 + size + 1
        plural, name = path.split("/")[1], path.rsplit("/", 1)[1].removesuffix(".yaml")
        found[(plural, name)] = yaml.safe_load(body)
    return found


def toolcalls_of(repo: AcpRepo, task: str, rev: str = STATUS_BRANCH) -> list[dict[str, Any]]:
    """The task's ToolCalls at `rev` (by its label), in name order (= request, then the LLM's order)."""
    return [
        doc
        for (plural, name), doc in sorted(status_files(repo, rev).items())
        if plural == "toolcalls" and doc["metadata"].get("labels", {}).get("acp.gitops.dev/task") == task
    ]


def status_file(plural: str, name: str) -> str:
    """Where resource `name` of `plural` lives on the status branch (tasks fanned out: DESIGN §9)."""
    return status_path(resolve_kind(plural), name)


def moves_of(repo: AcpRepo, kind: str, plural: str, name: str) -> list[tuple[str, str, Commit]]:
    """(old, new, commit) of every checkpoint of any kind of resource, oldest first."""
    found = []
    for commit in repo.commits(status_file(plural, name)):
        found += [(old, new, commit) for k, n, old, new in commit.moves() if (k, n) == (kind, name)]
    return found


def assert_status_consistent(repo: AcpRepo) -> None:
    """Every status file at the tip parses as a full object; `git fsck` is clean; no lock is left."""
    files = status_files(repo)
    assert files
    for (plural, name), document in files.items():
        assert isinstance(document, dict), (plural, name)
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(document), (plural, name)
        assert document["metadata"]["name"] == name
        if plural == "tasks":
            assert (document.get("status") or {}).get("phase", "-") in TASK_PHASES, name
    fsck = subprocess.run(
        ["git", "fsck", "--no-dangling", "--no-progress"], cwd=repo.path, capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert not list((repo.path / ".git").rglob("*.lock")), "a lock file was left behind"


def marked_servers(marker: str) -> list[Any]:
    """Live MCP test server processes whose environment carries `marker` (psutil.Process objects)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if "gitops_acp.testing.mcp_server" not in " ".join(proc.info["cmdline"] or ()):
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER_ENV) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@contextlib.contextmanager
def no_servers_left() -> Iterator[str]:
    """Yield a new marker for MCP test servers' environment; on exit none of them may be alive."""
    value = f"e2e-{uuid.uuid4().hex[:12]}"
    try:
        yield value
    finally:
        # A server whose serve was SIGKILLed notices within ~0.2 s (its watchdog, its closed stdin).
        deadline = time.monotonic() + 15
        while (alive := marked_servers(value)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in alive:
            with contextlib.suppress(Exception):
                proc.kill()
    assert not alive, f"MCP test servers outlived the test: {[p.pid for p in alive]}"


@pytest.fixture
def marker() -> Iterator[str]:
    """A marker for the test's MCP servers (`no_servers_left`), checked at teardown."""
    with no_servers_left() as value:
        yield value


@dataclass
class HttpServer:
    """The MCP test server over Streamable HTTP, started by the test itself."""

    proc: subprocess.Popen[str]
    url: str


@contextlib.contextmanager
def http_testserver(marker: str, *, max_seconds: float = 300) -> Iterator[HttpServer]:
    """Start `python -m gitops_acp.testing.mcp_server --http --port 0`; yield its URL; kill it after."""
    env = {**os.environ, MARKER_ENV: marker}
    proc = subprocess.Popen(
        [*TESTSERVER, "--http", "--port", "0", "--max-seconds", str(max_seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            url = lines.get(timeout=60).strip()
        except queue.Empty:
            pytest.fail("the MCP test server did not print its URL within 60s")
        assert url.startswith("http://"), url
        yield HttpServer(proc, url)
    finally:
        _stop(proc)


@contextlib.contextmanager
def serving() -> Iterator[Callable[..., Background]]:
    """`serve_bg` for module-scoped fixtures: start `serve` in the background; all killed on exit."""
    started: list[Background] = []

    def start(repo: AcpRepo, *extra: str) -> Background:
        stderr_path = repo.logs / f"serve-{len(started)}.stderr"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [*CLI, *serve_args(repo, *extra, once=False)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=os.environ.copy(),
            )
        background = Background(proc, stderr_path)
        started.append(background)
        return background

    try:
        yield start
    finally:
        for background in started:
            _stop(background.proc)


# -- a remote repository: git daemon on 127.0.0.1, its bare repository, the human's clone -------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GitServer:
    """`git daemon` serving the bare repositories under `base` on 127.0.0.1 (push enabled)."""

    def __init__(self, base: Path, *, max_seconds: int = 300) -> None:
        self.base = base
        self.port = free_port()
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        # `timeout` stops it by itself if the test dies; it forwards our SIGTERM to git daemon.
        self.proc = subprocess.Popen(
            [
                "timeout",
                str(self.max_seconds),
                "git",
                "daemon",
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
                "--informative-errors",
                f"--base-path={self.base}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, timeout=20, what="git daemon to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

        def closed() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) != 0

        wait_for(closed, timeout=20, what="git daemon to stop listening")


@dataclass
class Remote:
    """The git server, the remote's bare repository (read with plain git) and the human's clone."""

    server: GitServer
    url: str
    bare: AcpRepo  # the remote's own repository: what is asserted is read here
    human: AcpRepo  # the human's clone (origin = the URL), the fixtures' work tree
    cache: Path  # serve's --cache-dir

    def push(self, *refs: str) -> None:
        git(self.human.path, "push", "-q", "origin", *(refs or ("main",)))

    def add_task(self, name: str, message: str, *, agent: str = "e2e-agent") -> None:
        self.human.add_task(name, message, agent=agent)
        self.push()

    def mirror_status(self) -> str:
        return git(self.cache / "mirror.git", "rev-parse", f"refs/heads/{STATUS_BRANCH}")

    def remote_status(self) -> str | None:
        out = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", f"refs/heads/{STATUS_BRANCH}"],
            cwd=self.bare.path,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() or None

    def serve_args(self, *extra: str, once: bool, repo: str | None = None) -> list[str]:
        return [
            "--repo",
            repo or self.url,
            "serve",
            *(["--once"] if once else []),
            "--secrets-dir",
            str(self.human.secrets),
            *SERVE_FAST,
            "--fetch-interval",
            "0.3",
            "--cache-dir",
            str(self.cache),
            *extra,
        ]

    def serve_once(
        self, *extra: str, repo: str | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return cli(*self.serve_args(*extra, once=True, repo=repo), timeout=timeout)


@pytest.fixture
def remote(acp_repo: AcpRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    """The fixtures' repository pushed to a bare repository served by `git daemon`; the clone tracks it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the read commands' cache
    base = tmp_path / "srv"
    base.mkdir()
    git(base, "clone", "-q", "--bare", str(acp_repo.path), "acp.git")
    server = GitServer(base)
    server.start()
    url = server.url("acp.git")
    git(acp_repo.path, "remote", "add", "origin", url)
    git(acp_repo.path, "fetch", "-q", "origin")
    git(acp_repo.path, "branch", "-q", "--set-upstream-to=origin/main", "main")
    bare = AcpRepo(
        path=base / "acp.git", secrets=acp_repo.secrets, stub_url=acp_repo.stub_url, logs=acp_repo.logs
    )
    try:
        yield Remote(server, url, bare, acp_repo, tmp_path / "cache")
    finally:
        server.stop()


@contextlib.contextmanager
def serving_remote(remote: Remote, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`serve` against the remote in the background; killed at the end."""
    stderr_path = remote.human.logs / f"serve-{time.monotonic_ns()}.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [*CLI, *remote.serve_args(*extra, once=False)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=os.environ.copy(),
        )
    proc.stderr_path = stderr_path  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    path: Path = proc.stderr_path  # type: ignore[attr-defined]
    return path.read_text(errors="replace")


def remote_phase(remote: Remote, task: str) -> str | None:
    if remote.remote_status() is None:
        return None
    return remote.bare.phase(task)
