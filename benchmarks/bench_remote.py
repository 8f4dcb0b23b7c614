"""Serving a remote: approval latency through the remote, and checkpoint throughput, against `git daemon`.

    python benchmarks/bench_remote.py                      # 20 approvals per mode, N = 200 tasks
    python benchmarks/bench_remote.py --approvals 10 --n 100 --interval 2

The remote is a bare repository behind `git daemon` on 127.0.0.1 (the network path of a forge,
minus its latency). For approvals, the reconciler is `gitops-acp serve` on the URL (a child
process, serving through its mirror); for throughput, the real Manager in this process.

Approval latency: N tasks each ask for the non-idempotent `count` tool (the project's MCP test
server behind a git approval channel), so N approval branches wait on the remote. One at a time,
the benchmark (the reviewer) merges a branch with `git merge --no-ff` in its clone and pushes; the
time runs from the moment `git push` returned (the remote has the merge) to the moment the tool
ran (the MCP server appends to its counter file; watched every millisecond). Two modes:
fetch only by interval (`--interval`, the expected mean is about half of it), and webhook, where
`serve --http` receives a signed GitHub `push` event right after the push, as GitHub sends it
(fetch interval one hour: only the webhook can make it fast).

Throughput: N single-turn tasks (LLM stub at 0 ms) run by `serve --once` semantics on a local
repository and then through the remote (every checkpoint pushed before its task moves on); tasks/s
from start-up to idle, commits and push rounds. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_approval import SCRIPT, tool_ran_at, wait_for, waiting_calls
from bench_approval import make_repo as make_approval_repo
from bench_tasks import ROOT, git, percentile, start_stub
from bench_tasks import make_repo as make_tasks_repo

from gitops_acp.llm.openai_client import OpenAIClient
from gitops_acp.reactor.manager import Manager, ServeOptions
from gitops_acp.reactor.remote import RemoteOptions
from gitops_acp.secrets import SecretResolver

WEBHOOK_SECRET = "bench-webhook-secret"


class GitServer:
    """`git daemon` for the bare repositories under `base`, on 127.0.0.1; stops by itself after an hour."""

    def __init__(self, base: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                *("timeout", "3600", "git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr"),
                *(f"--base-path={base}", "--listen=127.0.0.1", f"--port={self.port}"),
            ],
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._listening, "git daemon")

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def publish(repo: Path, base: Path, server: GitServer) -> str:
    """Put `repo` on the server as a bare repository; make `repo` a clone of it; return the URL."""
    git(base, "clone", "-q", "--bare", str(repo), "remote.git")
    url = server.url("remote.git")
    git(repo, "remote", "add", "origin", url)
    git(repo, "fetch", "-q", "origin")
    return url


def remote_branches(clone: Path) -> list[str]:
    """The approval branches the clone sees on origin (after a fetch)."""
    out = git(clone, "for-each-ref", "--format=%(refname)", "refs/remotes/origin/acp/approvals/")
    return [line.removeprefix("refs/remotes/origin/") for line in out.splitlines() if line]


def remote_waiting(remote: Path) -> int:
    return waiting_calls(remote) if git(remote, "for-each-ref", "refs/heads/acp/status") else 0


def start_serve(
    url: str, base: Path, secrets: Path, *, interval: float, webhook: bool
) -> tuple[subprocess.Popen[bytes], str | None]:
    """`gitops-acp serve` on the URL (a child process); with `webhook`, also `--http`: return its root URL."""
    log = base / "serve.log"
    command = ["--repo", url, "serve", "--secrets-dir", str(secrets), "--cache-dir", str(base / "cache")]
    command += ["--fetch-interval", str(3600.0 if webhook else interval)]
    if webhook:
        (base / "webhook-secret").write_text(WEBHOOK_SECRET)
        command += ["--http", "127.0.0.1:0", "--webhook-secret-file", str(base / "webhook-secret")]
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "gitops_acp", *command], stderr=stderr)
    if not webhook:
        return proc, None
    found: list[str] = []

    def listening() -> bool:
        found[:] = re.findall(r"listening on (http://[0-9.]+:[0-9]+)", log.read_text(errors="replace"))
        return bool(found)

    wait_for(listening, "serve --http to listen")
    return proc, found[0]


def send_push_webhook(root: str) -> None:
    """What GitHub sends after a push to main: a signed `push` event."""
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"}
    request = urllib.request.Request(f"{root}/webhooks/github", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 202:
            raise SystemExit(f"the webhook was refused: HTTP {response.status}")


def approvals(n: int, *, interval: float, webhook: bool) -> list[float]:
    """Milliseconds from a reviewer's push of an approval merge to the tool's run, `n` times."""
    script = Path(tempfile.mkdtemp(prefix="bench-acp-")) / "script.json"
    script.write_text(json.dumps(SCRIPT))
    stub, llm_url = start_stub(script)
    latencies: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
            base = Path(tmp)
            counter = base / "counter.txt"
            repo, secrets = make_approval_repo(base, llm_url, n, counter)
            server = GitServer(base)
            try:
                url = publish(repo, base, server)
                serve, root = start_serve(url, base, secrets, interval=interval, webhook=webhook)
                try:
                    wait_for(lambda: remote_waiting(base / "remote.git") == n, f"{n} approvals on the remote")
                    git(repo, "fetch", "-q", "origin")
                    branches = remote_branches(repo)
                    for branch in branches:
                        size = counter.stat().st_size if counter.exists() else 0
                        git(repo, "merge", "-q", "--no-ff", "-m", f"Approve {branch}", f"origin/{branch}")
                        git(repo, "push", "-q", "origin", "main")
                        pushed = time.time()
                        if root is not None:
                            send_push_webhook(root)  # as the forge does once the push landed
                        ran = tool_ran_at(counter, size, timeout=interval * 3 + 10)
                        latencies.append((ran - pushed) * 1000)
                        # A reviewer's push lands at any moment of the fetch cycle, not right after one.
                        time.sleep(0.1 if webhook else random.uniform(0.1, interval))
                finally:
                    serve.terminate()
                    serve.wait(30)
            finally:
                server.stop()
    finally:
        stub.terminate()
        stub.wait(10)
    return latencies


def throughput(n: int, *, through_remote: bool) -> dict[str, float]:
    stub, llm_url = start_stub()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
            base = Path(tmp)
            repo, secrets = make_tasks_repo(base, llm_url, n)
            server = GitServer(base) if through_remote else None
            try:
                if server is not None:
                    url = publish(repo, base, server)
                    mirror = base / "cache" / "mirror.git"
                    options = ServeOptions(
                        repo=mirror, once=True, remote=RemoteOptions(url=url, mirror=mirror)
                    )
                    readable = base / "remote.git"
                else:
                    options = ServeOptions(repo=repo, once=True)
                    readable = repo
                manager = Manager(
                    options, llm=OpenAIClient(max_concurrent_requests=16), secrets=SecretResolver(secrets)
                )
                started = time.perf_counter()
                asyncio.run(manager.run())
                seconds = time.perf_counter() - started
                done = git(readable, "grep", "-c", "phase: FinalAnswer", "acp/status", "--", "status/tasks/")
                finished = sum(int(line.rsplit(":", 1)[1]) for line in done.splitlines() if line)
                if finished != n:
                    raise SystemExit(f"only {finished} of {n} tasks reached FinalAnswer")
                return {
                    "seconds": seconds,
                    "tasks_per_s": n / seconds,
                    "commits": manager.writer.stats.commits,
                    "checkpoints": manager.writer.stats.resources,
                    "pushes": manager.remote.stats.pushes if manager.remote is not None else 0,
                }
            finally:
                if server is not None:
                    server.stop()
    finally:
        stub.terminate()
        stub.wait(10)


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label}, {len(values)} approvals: p50 {percentile(values, 50):.0f} ms, "
        f"p95 {percentile(values, 95):.0f} ms, min {min(values):.0f} ms, max {max(values):.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--approvals", type=int, default=20, help="approvals per mode (default: 20)")
    parser.add_argument("--interval", type=float, default=2.0, help="fetch interval of the interval mode, s")
    parser.add_argument("--n", type=int, default=200, help="tasks for the throughput runs (default: 200)")
    parser.add_argument("--skip-approvals", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(ROOT, '--version')}")
    if not args.skip_approvals:
        interval = approvals(args.approvals, interval=args.interval, webhook=False)
        print(summary(f"push of an approval merge -> tool runs, fetch every {args.interval:g} s", interval))
        hooked = approvals(args.approvals, interval=args.interval, webhook=True)
        print(summary("push of an approval merge -> tool runs, signed push webhook to serve --http", hooked))
    if not args.skip_throughput:
        for label, through_remote in (("local repository", False), ("through git daemon", True)):
            figures = throughput(args.n, through_remote=through_remote)
            print(
                f"{args.n} single-turn tasks, {label}: {figures['tasks_per_s']:.1f} tasks/s "
                f"({figures['seconds']:.2f} s), {figures['commits']:.0f} commits of "
                f"{figures['checkpoints']:.0f} checkpoints, {figures['pushes']:.0f} push rounds"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
