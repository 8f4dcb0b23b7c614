"""The HTTP API under load: tasks created over HTTP by concurrent clients, run to their answers.

    python benchmarks/bench_api.py                     # 1,000 tasks, 32 clients
    python benchmarks/bench_api.py --n 200 --clients 8
    python benchmarks/bench_api.py --remote            # serve a git:// remote, as deployed

`gitops-acp serve --http --api-tokens` (the real CLI, a child process) serves a temporary local
repository whose LLM is the scripted stub at 0 ms (`gitops-acp llm-stub`, one LLM turn per task).
Once its agent is Ready, `--clients` threads, each on one keep-alive connection, POST
`/v1/tasks` (`{name, agentRef, userMessage}`, role operator) until `--n` tasks are created, while
one more connection follows `GET /v1/events` (Server-Sent Events) and a thread watches the tip of
`acp/status` every millisecond. Printed:

- creates/s (first request sent to last 201 received) and create latency p50/p99 (request sent to
  201 received: the Task is on `main`);
- create -> final answer p50/p99: the POST sent to the task's `-> FinalAnswer` event on the stream
  (without `/v1/events`, to the task's first appearance in `GET /v1/tasks?phase=FinalAnswer`,
  polled every 100 ms). From the request, not from its 201: with the stub at 0 ms the answer's
  event can arrive before the 201 does (the reconciler and the API share one event loop), and the
  number of those is printed;
- checkpoint -> SSE event p50/p99: the status branch's tip moving to a commit (seen by the watcher,
  which reads the ref file, or packed-refs once serve's maintenance packed it) to that commit's
  first event arriving on the stream. Commits the watcher did not see (two within a millisecond) are
  left out, and their number printed;
- the commits on `main` that the creates made (the API batches many creates into one commit: far
  fewer than tasks) and the checkpoint commits on `acp/status`.

With `--remote`, the repository is a bare one behind `git daemon` on 127.0.0.1 and `serve` serves
its URL through a mirror (`--repo git://... --cache-dir`), as the Kubernetes deployment does
(docs/deploy.md): each create's commit is pushed to the remote's `main` before its 201, and each
checkpoint to the remote before its task moves on. The watcher then watches the mirror's
`acp/status`, and the commits on `main` are counted on the remote.

Times are taken in this process with `time.perf_counter()`; the stream reader and the watcher are
threads of their own, so a figure includes up to a few milliseconds of this process's scheduling.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tasks import ROOT, git, make_repo, percentile, start_stub

STATUS = "acp/status"


class Failed(Exception):
    """The benchmark cannot go on: the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(
    conn: http.client.HTTPConnection, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    """One request on a keep-alive connection: (status, JSON body or text)."""
    headers = {"Authorization": f"Bearer {token}"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def status_tip(git_dir: Path) -> str | None:
    """The tip of acp/status, read from the ref file, or from packed-refs once it was packed."""
    try:
        return (git_dir / "refs" / "heads" / STATUS).read_text().strip() or None
    except (FileNotFoundError, IsADirectoryError):
        pass
    try:
        packed = (git_dir / "packed-refs").read_text()
    except FileNotFoundError:
        return None
    for line in packed.splitlines():
        if line.endswith(f" refs/heads/{STATUS}"):
            return line.split(" ", 1)[0]
    return None


class TipWatcher(threading.Thread):
    """Record when each new tip of acp/status is first seen (polled every millisecond)."""

    def __init__(self, git_dir: Path) -> None:
        super().__init__(daemon=True)
        self.git_dir = git_dir
        self.seen: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        last = None
        while not self.stopping.is_set():
            tip = status_tip(self.git_dir)
            if tip is not None and tip != last:
                self.seen.setdefault(tip, time.perf_counter())
                last = tip
            time.sleep(0.001)


class EventStream(threading.Thread):
    """Follow GET /v1/events; record each event and when it arrived."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.status: int | None = None
        self.opened = threading.Event()
        self.finished: dict[str, float] = {}  # task → arrival of its `-> FinalAnswer` event
        self.first_of_commit: dict[str, float] = {}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        try:
            conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            self.status = response.status
            self.opened.set()
            if response.status != 200:
                return
            while True:
                line = response.readline()
                if not line:
                    return
                if not line.startswith(b"data:"):
                    continue
                arrived = time.perf_counter()
                event = json.loads(line[5:])
                self.events.append((arrived, event))
                self.first_of_commit.setdefault(event["commit"], arrived)
                if event.get("kind") == "Task" and event.get("to") == "FinalAnswer":
                    self.finished.setdefault(event["name"], arrived)
        except (OSError, http.client.HTTPException):
            return
        finally:
            self.opened.set()
            conn.close()


def poll_finished(
    port: int, token: str, names: set[str], finished: dict[str, float], deadline: float
) -> None:
    """Without /v1/events: list FinalAnswer tasks every 100 ms until every one of `names` is there."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while set(finished) < names and time.perf_counter() < deadline:
        cursor = None
        while True:
            path = "/v1/tasks?phase=FinalAnswer&limit=500" + (f"&continue={cursor}" if cursor else "")
            code, body = request(conn, "GET", path, token)
            if code != 200:
                raise Failed(f"GET {path}: {code} {body}")
            now = time.perf_counter()
            for item in body["items"]:
                finished.setdefault(item["metadata"]["name"], now)
            cursor = body.get("continue")
            if not cursor:
                break
        time.sleep(0.1)
    conn.close()


def create_all(port: int, token: str, n: int, clients: int) -> dict[str, tuple[float, float]]:
    """POST n tasks from `clients` threads; return name → (request sent, 201 received)."""
    names = iter([f"bench-{i:05d}" for i in range(n)])
    lock = threading.Lock()
    created: dict[str, tuple[float, float]] = {}
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while not errors:
                with lock:
                    name = next(names, None)
                if name is None:
                    return
                body = {"name": name, "agentRef": {"name": "bench"}, "userMessage": f"Benchmark {name}"}
                sent = time.perf_counter()
                code, answer = request(conn, "POST", "/v1/tasks", token, body)
                received = time.perf_counter()
                if code != 201:
                    errors.append(f"POST /v1/tasks {name}: {code} {answer}")
                    return
                created[name] = (sent, received)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"POST /v1/tasks: {exc!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise Failed(errors[0])
    return created


def agent_ready(git_dir: Path) -> bool:
    if not git_dir.is_dir():  # a mirror not made yet
        return False
    shown = subprocess.run(
        ["git", "show", f"{STATUS}:status/agents/bench.yaml"], cwd=git_dir, capture_output=True, text=True
    )
    return shown.returncode == 0 and "ready: true" in shown.stdout


def wait_for(
    predicate: Any, what: str, serve: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if serve.poll() is not None:
            raise Failed(f"serve exited with {serve.returncode} while waiting for {what}: {tail(log)}")
        if time.time() > deadline:
            raise Failed(f"timed out waiting for {what}: {tail(log)}")
        time.sleep(0.05)


def tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or "(nothing on stderr)"


def readyz(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/readyz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def run(n: int, clients: int, timeout: float, *, remote: bool) -> dict[str, Any]:
    stub, url = start_stub()
    server: Any = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
            base = Path(tmp)
            repo, secrets_dir = make_repo(base, url, 0)
            served, origin, target = repo / ".git", repo / ".git", [str(repo)]
            if remote:
                from bench_remote import GitServer

                git(base, "clone", "-q", "--bare", str(repo), "remote.git")
                server = GitServer(base)
                origin, served = base / "remote.git", base / "cache" / "mirror.git"
                target = [server.url("remote.git"), "--cache-dir", str(base / "cache")]
            token = secrets.token_hex(32)
            tokens = base / "tokens.yaml"
            tokens.write_text(
                "- name: Bench Operator\n  email: bench@example.com\n  roles: [operator]\n"
                f"  sha256: {hashlib.sha256(token.encode()).hexdigest()}\n"
            )
            port = free_port()
            log = base / "serve.log"
            command = [
                *(sys.executable, "-m", "gitops_acp", "--repo", target[0], "serve", *target[1:]),
                *("--secrets-dir", str(secrets_dir), "--http", f"127.0.0.1:{port}"),
                *("--api-tokens", str(tokens)),
            ]
            with log.open("wb") as stderr:
                serve = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                wait_for(lambda: readyz(port), "/readyz", serve, log)
                wait_for(lambda: agent_ready(served), "the agent Ready", serve, log)
                return measure(served, origin, port, token, n, clients, timeout)
            finally:
                serve.terminate()
                try:
                    serve.wait(30)
                except subprocess.TimeoutExpired:
                    serve.kill()
                    serve.wait()
    finally:
        if server is not None:
            server.stop()
        stub.terminate()
        stub.wait(10)


def measure(
    served: Path, origin: Path, port: int, token: str, n: int, clients: int, timeout: float
) -> dict[str, Any]:
    """Create and follow the tasks; `served`: the git dir serve writes; `origin`: where main is counted."""
    main_before = int(git(origin, "rev-list", "--count", "main"))
    status_before = int(git(served, "rev-list", "--count", STATUS))
    watcher = TipWatcher(served)
    watcher.start()
    stream = EventStream(port, token)
    stream.start()
    stream.opened.wait(30)
    with_events = stream.status == 200
    started = time.perf_counter()
    created = create_all(port, token, n, clients)
    creates_done = time.perf_counter()
    deadline = creates_done + timeout
    names = set(created)
    if with_events:
        while set(stream.finished) < names and time.perf_counter() < deadline and stream.is_alive():
            time.sleep(0.05)
        finished = dict(stream.finished)
    else:
        finished = {}
        poll_finished(port, token, names, finished, deadline)
    all_done = time.perf_counter()
    time.sleep(0.5)  # the last commits' events
    watcher.stopping.set()
    watcher.join()
    missing = names - set(finished)
    if missing:
        raise Failed(
            f"{len(missing)} of {n} tasks had no final answer within {timeout:.0f} s (e.g. {min(missing)})"
        )
    create_ms = [(received - sent) * 1000 for sent, received in created.values()]
    to_final_ms = [(finished[name] - created[name][0]) * 1000 for name in names]
    answered_first = sum(1 for name in names if finished[name] < created[name][1])
    to_event_ms = [
        (arrived - watcher.seen[commit]) * 1000
        for commit, arrived in stream.first_of_commit.items()
        if commit in watcher.seen
    ]
    return {
        "events": with_events,
        "creates_per_s": n / (creates_done - started),
        "create_p50": percentile(create_ms, 50),
        "create_p99": percentile(create_ms, 99),
        "final_p50": percentile(to_final_ms, 50),
        "final_p99": percentile(to_final_ms, 99),
        "answered_before_201": answered_first,
        "tasks_per_s": n / (all_done - started),
        "event_p50": percentile(to_event_ms, 50),
        "event_p99": percentile(to_event_ms, 99),
        "event_commits": len(to_event_ms),
        "event_commits_unseen": len(set(stream.first_of_commit) - set(watcher.seen)),
        "main_commits": int(git(origin, "rev-list", "--count", "main")) - main_before,
        "status_commits": int(git(served, "rev-list", "--count", STATUS)) - status_before,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="tasks to create (default: 1000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients (default: 32)")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds for every task to finish after the creates"
    )
    parser.add_argument(
        "--remote", action="store_true", help="serve a git:// remote through a mirror, as deployed"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(ROOT, '--version')}")
    try:
        r = run(args.n, args.clients, args.timeout, remote=args.remote)
    except Failed as exc:
        print(f"bench_api: cannot run: {exc}")
        return 1
    n = args.n
    print(
        f"{n} tasks created over HTTP by {args.clients} clients (POST /v1/tasks), "
        "one LLM turn each (stub, 0 ms), "
        + ("a git:// remote through a mirror" if args.remote else "a local repository")
    )
    print(
        f"creates: {r['creates_per_s']:.0f}/s, "
        f"latency p50 {r['create_p50']:.1f} ms, p99 {r['create_p99']:.1f} ms"
    )
    how = (
        "the FinalAnswer event on /v1/events"
        if r["events"]
        else "GET /v1/tasks?phase=FinalAnswer, every 100 ms"
    )
    print(
        f"create -> final answer ({how}): p50 {r['final_p50']:.0f} ms, p99 {r['final_p99']:.0f} ms; "
        f"first create to last answer: {r['tasks_per_s']:.0f} tasks/s"
    )
    if r["answered_before_201"]:
        print(f"  ({r['answered_before_201']} answers arrived before their create's 201)")
    if r["events"]:
        print(
            f"checkpoint -> SSE event: p50 {r['event_p50']:.1f} ms, p99 {r['event_p99']:.1f} ms "
            f"({r['event_commits']} commits; {r['event_commits_unseen']} not seen by the watcher, left out)"
        )
    else:
        print("checkpoint -> SSE event: not measured (GET /v1/events is not served)")
    print(
        f"commits on main: {r['main_commits']} for {n} tasks "
        f"({n / max(1, r['main_commits']):.0f} tasks per commit); "
        f"checkpoint commits on acp/status: {r['status_commits']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
