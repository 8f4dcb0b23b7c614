"""Throughput and reaction benchmarks of the reconciler against the local LLM stub at 0 ms.

    python benchmarks/bench_tasks.py                 # N = 1, 100, 1000 and the reaction latency
    python benchmarks/bench_tasks.py --n 100 --skip-reaction
    python benchmarks/bench_tasks.py --tools --n 1000 --shards 2   # two reconciler processes
    python benchmarks/bench_tasks.py --tools --n 1000 --cold       # a new process, start-up timed

Throughput: N tasks (one LLM turn each; with --tools two turns and one MCP tool call on one
persistent session) committed to `main` in one commit, run to FinalAnswer. Two ways to time it:

- default, serving: reconciler processes (`serve`, the Manager, each a fresh child process so that
  its peak RSS is its own) start on the repository and become Ready (LLM validated, agent Ready,
  MCP server connected); then the N tasks are committed, and the clock runs from that commit to the
  last task finished. This is the throughput of a running reconciler: what a user committing N
  tasks waits for.
- `--cold`: a new process per N, timed from `Manager.run()` to idle: start-up included (reading the
  repository, validating the LLM, starting the MCP server; the LLM, agent and MCP server were made
  Ready by an earlier run, as they are for a reconciler restarting). Python's imports, ~1.5 s
  here, are done before the clock starts, as `serve` does them before serving.

Printed: tasks/s, CPU per LLM turn, task latency p50/p95 (startTime to completionTime), checkpoint
commit time p50/p99 (one commit of the status writer, which may carry many checkpoints), amortized
cost per checkpoint, commits and checkpoints written, peak RSS of a reconciler process, repository
size; and CPU per task of the reconcilers, of the stub and of the MCP server and git processes
(over the timed stretch only).

Shards (`--shards N`, docs/scale.md): N reconciler processes run together on the same repository,
process i serving shard i/N (its own status branch `acp/status-i-of-N`); CPU and checkpoints are
summed over them, commits are printed per shard, and every task must reach FinalAnswer on exactly
one branch.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def repository_kb(repo: Path) -> float:
    """The object store's size as git counts it (loose + packed, KiB): no walking of .git's layout."""
    counts = dict(line.split(": ", 1) for line in git(repo, "count-objects", "-v").splitlines())
    return float(counts.get("size", 0)) + float(counts.get("size-pack", 0))


def callgrind_prefix(folder: Path | None) -> list[str]:
    """The command that runs a reconciler under valgrind's callgrind, its counts into `folder`
    (nothing without one): instructions executed, which do not drift with the machine as CPU
    seconds do."""
    if folder is None:
        return []
    out = f"--callgrind-out-file={folder}/callgrind.%p"
    return ["valgrind", "-q", "--tool=callgrind", out, "--dump-instr=no"]


def count_instructions(pid: int, folder: Path, label: str | None) -> int | None:
    """Zero callgrind's counters in process `pid` (`label` None) or dump them as `label` (a dump
    zeroes them too): the instructions it executed since the last dump or zeroing (every thread;
    not its child processes)."""
    if label is None:
        subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
        return None
    subprocess.run(["callgrind_control", f"--dump={label}", str(pid)], check=True, capture_output=True)
    dumps = sorted(folder.glob(f"callgrind.{pid}.*"), key=lambda path: int(path.suffix[1:]))
    for line in dumps[-1].read_text().splitlines():  # the newest dump: this one
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dumps[-1]}")


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
            "  args: [-m, gitops_acp.testing.mcp_server]\n"
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
    from gitops_acp.store.git import GitRepo

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


async def serve_until_ready(manager: Any, ready: Callable[[], bool]) -> asyncio.Task[int]:
    """Start `manager.run()` and return its task once `ready()` says so (exit if it stops first)."""
    serving = asyncio.create_task(manager.run())
    while not ready():
        if serving.done():
            serving.result()
            raise SystemExit("serve stopped before it was ready")
        await asyncio.sleep(0.02)
    return serving


def serving_child(repo: Path, secrets: Path, shard_text: str, n_tasks: int, *, counted: bool = False) -> None:
    """Serve `repo` (shard `I/N`) until Ready, say so, then until this shard's share of the N
    tasks committed meanwhile by the parent is finished; print the figures of that stretch as JSON.
    `counted` (under callgrind): once finished, say so and wait for a line on stdin (the parent
    dumps the counters meanwhile), so that stopping is not counted.
    """
    import psutil

    import gitops_acp.mcp.connection  # noqa: F401  (imported by the first MCPServer; see the docstring)
    from gitops_acp.llm.openai_client import OpenAIClient
    from gitops_acp.reactor.manager import Manager, ServeOptions
    from gitops_acp.resources.meta import TERMINAL_TASK_PHASES, Kind
    from gitops_acp.resources.models import LLM, Agent, MCPServer, Task
    from gitops_acp.secrets import SecretResolver
    from gitops_acp.store import shards

    shard = shards.parse(shard_text, hostname=None)
    mine = [name for i in range(n_tasks) if shard.owns(name := f"task-{i:05d}")]
    llm = OpenAIClient(max_concurrent_requests=16)
    options = ServeOptions(repo=repo, shard=shard, status_branch=shard.branch)
    manager = Manager(options, llm=llm, secrets=SecretResolver(secrets))
    me = psutil.Process()

    def ready() -> bool:
        llm, agent = manager.state.observed(Kind.LLM, "bench"), manager.state.observed(Kind.Agent, "bench")
        if not (isinstance(llm, LLM) and llm.status and llm.status.ready):
            return False
        if not (isinstance(agent, Agent) and agent.status and agent.status.ready):
            return False
        if not (repo / "mcp.yaml").exists():
            return True
        server, state = manager.state.observed(Kind.MCPServer, "tools"), manager.mcp.state("tools")
        connected = isinstance(server, MCPServer) and server.status is not None and server.status.connected
        return connected and state is not None and state.connected

    pending = list(mine)

    def finished() -> int:
        """Tasks of this shard finished so far, counted in order, every 20 ms: the poll runs in the
        reconciler's own process, and looking at every task every 5 ms took a sixth of its CPU
        (py-spy), which the figures then charged to the reconciler; looking at every unfinished
        one every 20 ms still took 7% of it. The first unfinished task stops the count, so a poll
        costs one lookup, and the last task finished is still seen within one poll."""
        done = 0
        for name in pending:
            if not _terminal(manager.state.observed(Kind.Task, name)):
                break
            done += 1
        del pending[:done]
        return len(mine) - len(pending)

    def _terminal(task: object) -> bool:
        return (
            isinstance(task, Task) and task.status is not None and task.status.phase in TERMINAL_TASK_PHASES
        )

    def cpu_of_children() -> float:  # the MCP server (alive) and git processes (reaped)
        alive = sum(sum(p.cpu_times()[:2]) for p in me.children(recursive=True) if p.is_running())
        return alive + _children_cpu()

    async def go() -> dict[str, float]:
        serving = await serve_until_ready(manager, ready)
        cpu0, children0 = time.process_time(), cpu_of_children()
        commits0, resources0 = manager.writer.stats.commits, manager.writer.stats.resources
        print(json.dumps({"ready": True}), flush=True)
        while finished() < len(mine):
            await asyncio.sleep(0.02)  # a 20 ms resolution on runs of seconds; cheaper to look
        if counted:
            print(json.dumps({"counted": True}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        figures = {
            "finished": time.time(),
            "cpu_seconds": time.process_time() - cpu0,
            "children_cpu_seconds": cpu_of_children() - children0,
            "commits": manager.writer.stats.commits - commits0,
            "checkpoints": manager.writer.stats.resources - resources0,
        }
        durations = list(manager.writer.stats.durations_ms)[commits0:]
        figures |= {
            "commit_p50_ms": percentile(durations, 50),
            "commit_p99_ms": percentile(durations, 99),
            "commit_total_ms": sum(durations),
        }
        manager.stop()
        await serving
        return figures

    figures = asyncio.run(go())
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures), flush=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    n: int,
    url: str,
    *,
    tools: bool = False,
    stub_pid: int | None = None,
    shards: int = 1,
    cold: bool = False,
    callgrind: Path | None = None,
) -> dict[str, float]:
    if not cold:
        return serving_throughput(n, url, tools=tools, stub_pid=stub_pid, shards=shards, callgrind=callgrind)
    with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
        # Warm: the LLM, the agent and the MCP server are Ready (a first run validated them) when
        # the N tasks arrive in one commit, as with a reconciler already serving. The timed run
        # still starts from scratch: a new process reading the repository, starting the MCP server.
        repo, secrets = make_repo(Path(tmp), url, 0, tools=tools)
        run_children(repo, secrets, shards)
        add_tasks(repo, n)
        stub_cpu = process_cpu(stub_pid) if stub_pid is not None else 0.0
        each = run_children(repo, secrets, shards)
        started = min(f["started"] for f in each)
        return combine(each, repo, n, shards, started=started, stub_pid=stub_pid, stub_cpu=stub_cpu)


def combine(
    each: list[dict[str, float]],
    repo: Path,
    n: int,
    shards: int,
    *,
    started: float,
    stub_pid: int | None,
    stub_cpu: float,
) -> dict[str, float]:
    """The figures of one run from each reconciler process's own, once every task is checked."""
    figures: dict[str, float] = {
        key: sum(f[key] for f in each)
        for key in ("cpu_seconds", "children_cpu_seconds", "commits", "checkpoints", "commit_total_ms")
    }
    figures["seconds"] = max(f["finished"] for f in each) - started
    for key in ("commit_p50_ms", "commit_p99_ms", "peak_rss_mb"):
        figures[key] = max(f[key] for f in each)
    for i, f in enumerate(each):
        figures[f"commits_{i}"] = f["commits"]
    figures["stub_cpu_seconds"] = process_cpu(stub_pid) - stub_cpu if stub_pid is not None else 0.0
    check_finished_once(repo, n, shards)
    figures["size_kb"] = repository_kb(repo)
    latencies = task_latencies(repo)
    figures["latency_p50"] = percentile(latencies, 50)
    figures["latency_p95"] = percentile(latencies, 95)
    return figures


def serving_throughput(
    n: int, url: str, *, tools: bool, stub_pid: int | None, shards: int, callgrind: Path | None = None
) -> dict[str, float]:
    """N tasks committed at once to `main` while the reconcilers serve; the clock runs from that
    commit to the last task finished. Under `callgrind`, each reconciler's instructions from that
    commit to its last task finished are counted too (`instructions`)."""
    with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
        repo, secrets = make_repo(Path(tmp), url, 0, tools=tools)
        children = [
            subprocess.Popen(
                [
                    *callgrind_prefix(callgrind),
                    sys.executable,
                    __file__,
                    "--serving-child",
                    str(repo),
                    str(secrets),
                    f"{i}/{shards}",
                    str(n),
                    "counted" if callgrind is not None else "-",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(shards)
        ]
        instructions = 0
        try:
            for proc in children:  # every reconciler Ready: LLM validated, MCP server connected
                assert proc.stdout is not None
                if not json.loads(proc.stdout.readline() or "{}").get("ready"):
                    raise SystemExit("a serving child stopped before it was ready")
                if callgrind is not None:
                    count_instructions(proc.pid, callgrind, None)
            stub_cpu = process_cpu(stub_pid) if stub_pid is not None else 0.0
            add_tasks(repo, n)
            committed = time.time()
            if callgrind is not None:
                for proc in children:
                    assert proc.stdout is not None
                    if not json.loads(proc.stdout.readline() or "{}").get("counted"):
                        raise SystemExit("a serving child stopped before its tasks finished")
                    instructions += count_instructions(proc.pid, callgrind, f"N {n}") or 0
            outputs = [proc.communicate("\n", timeout=600)[0] for proc in children]
        finally:
            for proc in children:
                if proc.poll() is None:
                    proc.kill()
        if any(proc.returncode for proc in children) or not all(out.strip() for out in outputs):
            raise SystemExit(
                f"a child failed: exit codes {[proc.returncode for proc in children]}, output {outputs!r}"
            )
        each = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
        figures = combine(each, repo, n, shards, started=committed, stub_pid=stub_pid, stub_cpu=stub_cpu)
        if callgrind is not None:
            figures["instructions"] = instructions
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
        found = subprocess.run(  # exit code 1: no match (a shard that owned none of the tasks)
            ["git", "grep", "-l", "phase: FinalAnswer", branch, "--", "status/tasks/"],
            cwd=repo,
            capture_output=True,
            text=True,
        )
        if found.returncode not in (0, 1):
            raise SystemExit(f"git grep on {branch} failed: {found.stderr.strip()}")
        files = found.stdout
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
    parser.add_argument(
        "--cold",
        action="store_true",
        help="time a new reconciler process per N, start-up included (default: N tasks arriving "
        "at reconcilers already serving)",
    )
    parser.add_argument(
        "--callgrind",
        type=Path,
        metavar="DIR",
        help="run each serving reconciler under valgrind's callgrind (its counts into DIR) and print the "
        "instructions it executes per task from the commit to the last task finished (~30x slower)",
    )
    parser.add_argument("--child", nargs=3, metavar=("REPO", "SECRETS", "SHARD"), help=argparse.SUPPRESS)
    parser.add_argument("--serving-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return 0
    if args.serving_child:
        repo, secrets, shard, n, counted = args.serving_child
        serving_child(Path(repo), Path(secrets), shard, int(n), counted=counted == "counted")
        return 0
    if args.callgrind is not None:
        if args.cold:
            raise SystemExit("--callgrind counts reconcilers already serving: not with --cold")
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            raise SystemExit("--callgrind: valgrind is not installed (Debian: apt-get install valgrind)")
        args.callgrind.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(ROOT, '--version')}")
    script = None
    if args.tools:
        script = Path(tempfile.mkdtemp(prefix="bench-acp-")) / "script.json"
        script.write_text(json.dumps(TOOL_SCRIPT))
    stub, url = start_stub(script)
    turns = 2 if args.tools else 1
    print("workload:", "2 LLM turns + 1 MCP tool call per task" if args.tools else "1 LLM turn per task")
    print(f"reconciler processes: {args.shards}" + (" (one shard each)" if args.shards > 1 else ""))
    print(
        "timed: "
        + (
            "a new reconciler process per N, from its start (LLM, agent, MCP server Ready before) to idle"
            if args.cold
            else "from the commit of N tasks on main (reconcilers serving, Ready) to the last task finished"
        )
    )
    try:
        print(
            f"{'N':>6} {'tasks/s':>8} {'seconds':>8} {'cpu ms/turn':>11} {'lat p50':>8} {'p95 s':>6} "
            f"{'commits':>8} {'checkpoints':>11} {'commit p50':>10} {'p99 ms':>7} {'ms/ckpt':>8} "
            f"{'RSS MB':>7} {'repo KB':>8}"
        )
        for n in args.n or [1, 100, 1000]:
            f = throughput(
                n,
                url,
                tools=args.tools,
                stub_pid=stub.pid,
                shards=args.shards,
                cold=args.cold,
                callgrind=args.callgrind,
            )
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
            if "instructions" in f:
                per_task = f["instructions"] / n / 1e6
                print(f"{'':>6} reconciler instructions (callgrind): {per_task:.2f} M a task")
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
