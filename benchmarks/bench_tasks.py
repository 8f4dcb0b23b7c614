"""Throughput and reaction benchmarks of the reconciler against the local LLM stub at 0 ms.

    python benchmarks/bench_tasks.py                 # N = 1, 100, 1000 and the reaction latency
    python benchmarks/bench_tasks.py --n 100 --skip-reaction
    python benchmarks/bench_tasks.py --tools --n 1000 --shards 2   # two reconciler processes

Throughput: N single-turn tasks committed to `main` in one commit; `serve --once` (the Manager, in a
fresh child process so that its peak RSS is its own) runs them all to FinalAnswer. Printed: tasks/s
from `Manager.run()` to idle. The LLM, the agent and the MCP server were made Ready by an earlier
run, then the N tasks were committed, as they would arrive at a reconciler already serving; the
timed run is a new process all the same: it reads the repository, validates the LLM again and
starts the MCP server. Python's imports of the program, ~1.5 s here, are done before the clock
starts, as `serve` does them before serving), checkpoint commit time p50/p99 (one commit of the status
writer, which may carry many checkpoints), amortized cost per checkpoint, commits and checkpoints
written, peak RSS of the reconciler process.

Shards (`--shards N`, docs/scale.md): N children run together on the same repository, child i with the
Manager of shard i/N (its own status branch `acp/status-i-of-N`, warmed by its own first run); tasks/s
is N tasks over the wall time from the first child's start to the last one's finish; CPU and
checkpoints are summed over the children, commits are printed per shard, and every task must reach
FinalAnswer on exactly one branch.

Reaction: `serve` runs in the background on a repository whose LLM and agent are Ready; a task is
committed to `main` (`git commit` in the work tree) and the time until the stub receives that
task's first LLM request is measured, 30 times. The stub runs in its own process and stamps each
request on arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def start_stub(script: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "gitops_acp", "llm-stub", "--port", "0", "--max-seconds", "1800"]
    if script is not None:
        cmd += ["--script", str(script)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


TOOL_SCRIPT = {
    "rules": [
        {
            "match": "^Benchmark",
            "when": "first",
            "toolCalls": [{"name": "tools__echo", "arguments": {"text": "{user}"}}],
        },
        {"match": "^Benchmark", "when": "tool", "content": "The tool said: {tool}"},
    ]
}


def make_repo(base: Path, url: str, n_tasks: int, *, tools: bool = False) -> tuple[Path, Path]:
    repo, secrets = base / "repo", base / "secrets"
    (secrets / "bench").mkdir(parents=True)
    (secrets / "bench" / "API_KEY").write_text("bench-key\n")
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Bench")
    git(repo, "config", "user.email", "bench@example.com")
    (repo / "llm.yaml").write_text(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: LLM\nmetadata: {name: bench}\n"
        "spec:\n  provider: openai\n  apiKeyFrom: {secretKeyRef: {name: bench, key: API_KEY}}\n"
        f"  parameters: {{model: stub, baseUrl: '{url}'}}\n"
    )
    (repo / "agent.yaml").write_text(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Agent\nmetadata: {name: bench}\n"
        "spec:\n  llmRef: {name: bench}\n  system: You are a benchmark.\n"
        + ("  mcpServers: [{name: tools}]\n" if tools else "")
    )
    if tools:  # the project's MCP test server over stdio: one persistent session for every call
        (repo / "mcp.yaml").write_text(
            "apiVersion: acp.gitops.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: tools}\n"
            f"spec:\n  transport: stdio\n  command: {sys.executable}\n"
            "  args: [-m, gitops_acp.mcp.testserver]\n"
        )
    (repo / "tasks").mkdir()
    add_tasks(repo, n_tasks)
    return repo, secrets


def add_tasks(repo: Path, n_tasks: int) -> None:
    """Commit `n_tasks` tasks to main in one commit."""
    for i in range(n_tasks):
        write_task(repo / "tasks", f"task-{i:05d}")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", f"{n_tasks} tasks")


def write_task(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\n"
        f"metadata: {{name: {name}}}\nspec:\n  agentRef: {{name: bench}}\n  userMessage: Benchmark {name}\n"
    )
    return path


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- throughput: runs in a child process ---------------------------------------------------------


def task_latencies(repo: Path) -> list[float]:
    """Seconds from startTime to completionTime of every task, read from the status branches."""
    from gitops_acp.controllers.base import parse_rfc3339
    from gitops_acp.store import shards
    from gitops_acp.store.gitrepo import GitRepo

    with GitRepo.open(repo) as git_repo:
        documents = shards.read_merged(git_repo).documents
    latencies = []
    for (kind, _), doc in documents.items():
        status = doc.get("status") or {}
        if kind == "Task" and status.get("startTime") and status.get("completionTime"):
            latencies.append(parse_rfc3339(status["completionTime"]) - parse_rfc3339(status["startTime"]))
    return latencies


def child(repo: Path, secrets: Path, shard_text: str) -> None:
    """Run the Manager (of shard `I/N`) once over `repo` and print its figures as JSON."""
    import gitops_acp.mcp.connection  # noqa: F401  (imported by the first MCPServer; see the docstring)
    from gitops_acp.llm.openai_client import OpenAIClient
    from gitops_acp.reactor.manager import Manager, ServeOptions
    from gitops_acp.secrets import SecretResolver
    from gitops_acp.store import shards

    shard = shards.parse(shard_text, hostname=None)
    # 16 in flight: the stub answers at once, so more in flight only adds connection-pool CPU.
    llm = OpenAIClient(max_concurrent_requests=16)
    options = ServeOptions(repo=repo, once=True, shard=shard, status_branch=shard.branch)
    manager = Manager(options, llm=llm, secrets=SecretResolver(secrets))
    cpu0 = time.process_time()
    started = time.time()
    t0 = time.perf_counter()
    asyncio.run(manager.run())
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats = manager.writer.stats
    durations = list(stats.durations_ms)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "started": started,
                "finished": started + elapsed,
                "cpu_seconds": cpu,
                # The MCP server and git processes the reconciler started (reaped by now).
                "children_cpu_seconds": _children_cpu(),
                "commits": stats.commits,
                "checkpoints": stats.resources,
                "commit_p50_ms": percentile(durations, 50),
                "commit_p99_ms": percentile(durations, 99),
                "commit_total_ms": sum(durations),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    n: int, url: str, *, tools: bool = False, stub_pid: int | None = None, shards: int = 1
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
        # Warm: the LLM, the agent and the MCP server are Ready (a first run validated them) when
        # the N tasks arrive in one commit, as with a reconciler already serving. The timed run
        # still starts from scratch: a new process reading the repository, starting the MCP server.
        repo, secrets = make_repo(Path(tmp), url, 0, tools=tools)
        run_children(repo, secrets, shards)
        add_tasks(repo, n)
        stub_cpu = process_cpu(stub_pid) if stub_pid is not None else 0.0
        each = run_children(repo, secrets, shards)
        figures: dict[str, float] = {
            key: sum(f[key] for f in each)
            for key in ("cpu_seconds", "children_cpu_seconds", "commits", "checkpoints", "commit_total_ms")
        }
        figures["seconds"] = max(f["finished"] for f in each) - min(f["started"] for f in each)
        for key in ("commit_p50_ms", "commit_p99_ms", "peak_rss_mb"):
            figures[key] = max(f[key] for f in each)
        for i, f in enumerate(each):
            figures[f"commits_{i}"] = f["commits"]
        figures["stub_cpu_seconds"] = process_cpu(stub_pid) - stub_cpu if stub_pid is not None else 0.0
        check_finished_once(repo, n, shards)
        figures["size_kb"] = sum(f.stat().st_size for f in (repo / ".git").rglob("*") if f.is_file()) / 1024
        latencies = task_latencies(repo)
        figures["latency_p50"] = percentile(latencies, 50)
        figures["latency_p95"] = percentile(latencies, 95)
        return figures


def run_children(repo: Path, secrets: Path, shards: int) -> list[dict[str, float]]:
    """Run one child per shard, all started together; return each one's figures."""
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", str(repo), str(secrets), f"{i}/{shards}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(shards)
    ]
    outputs = [proc.communicate()[0] for proc in children]
    if any(proc.returncode for proc in children):
        raise SystemExit(f"a child failed: exit codes {[proc.returncode for proc in children]}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def check_finished_once(repo: Path, n: int, shards: int) -> None:
    """Every task reached FinalAnswer on exactly one status branch."""
    branches = [f"acp/status-{i}-of-{shards}" for i in range(shards)] if shards > 1 else ["acp/status"]
    seen: dict[str, str] = {}
    for branch in branches:
        files = git(repo, "grep", "-l", "phase: FinalAnswer", branch, "--", "status/tasks/")
        for line in files.splitlines():
            name = line.rsplit("/", 1)[1].removesuffix(".yaml")
            if name in seen:
                raise SystemExit(f"task {name} finished on {seen[name]} and on {branch}")
            seen[name] = branch
    if len(seen) != n:
        raise SystemExit(f"only {len(seen)} of {n} tasks reached FinalAnswer")


# -- reaction: serve in the background ------------------------------------------------------------


def stub_requests(url: str) -> list[dict[str, object]]:
    root = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/_stub/requests", timeout=10) as response:
        data = json.load(response)
    return data if isinstance(data, list) else list(data.get("requests", []))


def first_request_time(url: str, marker: str) -> float | None:
    for record in stub_requests(url):
        body = record.get("body")
        if isinstance(body, dict) and marker in json.dumps(body.get("messages", [])):
            stamp = record.get("time")
            return float(stamp) if isinstance(stamp, int | float) else None
    return None


def reaction(url: str, trials: int = 30) -> list[float]:
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
        repo, secrets = make_repo(Path(tmp), url, 0)
        serve = subprocess.Popen(
            [sys.executable, "-m", "gitops_acp", "--repo", str(repo), "serve", "--secrets-dir", str(secrets)],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 30
            while time.time() < deadline:  # wait until the agent is Ready
                status = subprocess.run(
                    ["git", "show", "acp/status:status/agents/bench.yaml"],
                    cwd=repo,
                    capture_output=True,
                    text=True,
                )
                if "status: Ready" in status.stdout:
                    break
                time.sleep(0.05)
            for i in range(trials):
                name = f"react-{i:03d}"
                write_task(repo / "tasks", name)
                git(repo, "add", "tasks")
                subprocess.run(["git", "commit", "-q", "-m", name], cwd=repo, check=True)
                committed = time.time()
                deadline = time.time() + 10
                seen = None
                while seen is None and time.time() < deadline:
                    time.sleep(0.01)
                    seen = first_request_time(url, f"Benchmark {name}")
                if seen is None:
                    raise SystemExit(f"no LLM request for {name} within 10 s")
                latencies.append((seen - committed) * 1000)
                time.sleep(0.05)
        finally:
            serve.terminate()
            serve.wait(10)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="task counts (default: 1, 100, 1000)")
    parser.add_argument("--skip-reaction", action="store_true")
    parser.add_argument(
        "--tools",
        action="store_true",
        help="two LLM turns and one MCP tool call per task (instead of one turn)",
    )
    parser.add_argument(
        "--shards", type=int, default=1, help="reconciler processes, each serving shard i/N (default: 1)"
    )
    parser.add_argument("--child", nargs=3, metavar=("REPO", "SECRETS", "SHARD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return 0
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(ROOT, '--version')}")
    script = None
    if args.tools:
        script = Path(tempfile.mkdtemp(prefix="bench-acp-")) / "script.json"
        script.write_text(json.dumps(TOOL_SCRIPT))
    stub, url = start_stub(script)
    turns = 2 if args.tools else 1
    print("workload:", "2 LLM turns + 1 MCP tool call per task" if args.tools else "1 LLM turn per task")
    print(f"reconciler processes: {args.shards}" + (" (one shard each)" if args.shards > 1 else ""))
    try:
        print(
            f"{'N':>6} {'tasks/s':>8} {'seconds':>8} {'cpu ms/turn':>11} {'lat p50':>8} {'p95 s':>6} "
            f"{'commits':>8} {'checkpoints':>11} {'commit p50':>10} {'p99 ms':>7} {'ms/ckpt':>8} "
            f"{'RSS MB':>7} {'repo KB':>8}"
        )
        for n in args.n or [1, 100, 1000]:
            f = throughput(n, url, tools=args.tools, stub_pid=stub.pid, shards=args.shards)
            print(
                f"{n:>6} {n / f['seconds']:>8.1f} {f['seconds']:>8.2f} "
                f"{f['cpu_seconds'] * 1000 / (n * turns):>11.2f} "
                f"{f['latency_p50']:>8.2f} {f['latency_p95']:>6.2f} "
                f"{int(f['commits']):>8} {int(f['checkpoints']):>11} {f['commit_p50_ms']:>10.2f} "
                f"{f['commit_p99_ms']:>7.2f} {f['commit_total_ms'] / max(f['checkpoints'], 1):>8.3f} "
                f"{f['peak_rss_mb']:>7.1f} {f['size_kb']:>8.0f}"
            )
            cpu = {"reconciler": f["cpu_seconds"], "stub": f["stub_cpu_seconds"]}
            cpu["MCP server + git"] = f["children_cpu_seconds"]
            print(
                f"{'':>6} CPU ms per task: "
                + ", ".join(f"{name} {seconds * 1000 / n:.2f}" for name, seconds in cpu.items())
                + f"; all of them: {sum(cpu.values()) / f['seconds']:.2f} cores busy on average"
            )
            if args.shards > 1:
                commits = ", ".join(f"{i}: {int(f[f'commits_{i}'])}" for i in range(args.shards))
                print(f"{'':>6} commits per shard: {commits}")
        if not args.skip_reaction and not args.tools:
            latencies = reaction(url)
            print(
                f"reaction (commit on main -> first LLM request), {len(latencies)} trials: "
                f"p50 {percentile(latencies, 50):.1f} ms, p90 {percentile(latencies, 90):.1f} ms, "
                f"min {min(latencies):.1f} ms, max {max(latencies):.1f} ms, "
                f"mean {statistics.mean(latencies):.1f} ms"
            )
    finally:
        stub.terminate()
        stub.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
