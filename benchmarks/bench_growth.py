"""Growth: is the reconciler as fast after a year of tasks as on the first day? (DESIGN §9, issue 12)

    python benchmarks/bench_growth.py                          # 100,000 tasks in batches of 2,000
    python benchmarks/bench_growth.py --total 10000 --batch 2000

One reconciler (the Manager, in a child process so that its figures are its own) serves a local
repository with the stub LLM answering at 0 ms. The parent commits a batch of single-turn tasks to
`main`, tells the child their names, and the child reports once every one of them is finished:
the batch's tasks/s, its checkpoint commits' p50/p99 (the status writer's own timings) and its
RSS. Between batches, with the reconciler idle, the parent times what a person runs, through the
real CLI: `get task NAME`, `describe task NAME`, `history task NAME -n 20` and `get tasks --limit
100` (each a new process: Python's start-up, ~0.35 s here, is in every figure), and the object
store's size as `git count-objects` counts it.

Targets (DESIGN §9): the last batch's tasks/s at least 0.8 of the first's; `get task` and
`describe` at most 100 ms and `history -n 20` at most 50 ms at 100,000 tasks (of the command's own
work: the start-up is printed beside them); RSS flat. Retention is not built yet, so today every
figure grows with the tasks ever run: that is what this benchmark is for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tasks import (
    git,
    make_repo,
    percentile,
    repository_kb,
    serve_until_ready,
    start_stub,
    write_task,
)

CLI = [sys.executable, "-m", "gitops_acp"]


def child(repo: Path, secrets: Path) -> None:
    """Serve `repo`; for each line of names on stdin, answer with that batch's figures once finished."""
    import asyncio
    import resource

    from gitops_acp.llm.openai_client import OpenAIClient
    from gitops_acp.reactor.manager import Manager, ServeOptions
    from gitops_acp.resources.meta import TERMINAL_TASK_PHASES, Kind
    from gitops_acp.resources.models import LLM, Agent, Task
    from gitops_acp.secrets import SecretResolver

    manager = Manager(
        ServeOptions(repo=repo, poll_interval=0.2),
        llm=OpenAIClient(max_concurrent_requests=16),
        secrets=SecretResolver(secrets),
    )

    def ready() -> bool:
        llm, agent = manager.state.observed(Kind.LLM, "bench"), manager.state.observed(Kind.Agent, "bench")
        return bool(
            isinstance(llm, LLM)
            and llm.status
            and llm.status.ready
            and isinstance(agent, Agent)
            and agent.status
            and agent.status.ready
        )

    def done(name: str) -> bool:
        task = manager.state.observed(Kind.Task, name)
        return (
            isinstance(task, Task) and task.status is not None and task.status.phase in TERMINAL_TASK_PHASES
        )

    async def go() -> None:
        serving = await serve_until_ready(manager, ready)
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                break
            names = line.split()
            started, commits0 = time.perf_counter(), manager.writer.stats.commits
            while not all(done(name) for name in names):
                await asyncio.sleep(0.01)
            seconds = time.perf_counter() - started
            durations = list(manager.writer.stats.durations_ms)[commits0:]
            figures = {
                "seconds": seconds,
                "commits": len(durations),
                "commit_p50_ms": percentile(durations, 50),
                "commit_p99_ms": percentile(durations, 99),
                "rss_mb": _rss_mb(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
            print(json.dumps(figures), flush=True)
        manager.stop()
        await serving

    asyncio.run(go())


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(repo: Path, *args: str) -> float:
    """Milliseconds one CLI command takes, start-up included; fail loudly if it fails."""
    started = time.perf_counter()
    proc = subprocess.run([*CLI, "--repo", str(repo), *args], capture_output=True, text=True, timeout=600)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"`gitops-acp {' '.join(args)}` failed: {proc.stderr.strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--total", type=int, default=100_000, help="tasks in all (default 100,000)")
    parser.add_argument("--batch", type=int, default=2_000, help="tasks per batch (default 2,000)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=2, metavar=("REPO", "SECRETS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return 0

    stub, url = start_stub()
    rows: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
            repo, secrets = make_repo(Path(tmp), url, 0)
            server = subprocess.Popen(
                [sys.executable, __file__, "--child", str(repo), str(secrets)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert server.stdin is not None
            assert server.stdout is not None
            try:
                if json.loads(server.stdout.readline()).get("ready") is not True:
                    raise SystemExit("the reconciler did not become ready")
                startup = timed(repo, "--help")
                print(f"machine: {os.cpu_count()} cores; CLI start-up (`--help`): {startup:.0f} ms")
                print(
                    "   tasks  tasks/s  commits  commit p50/p99 ms   get task  describe  history -n20"
                    "  get --limit100   RSS MB   .git MB"
                )
                done = 0
                while done < args.total:
                    names = [f"g{done + i:06d}" for i in range(min(args.batch, args.total - done))]
                    for name in names:
                        write_task(repo / "tasks", name)
                    git(repo, "add", "-A")
                    git(repo, "commit", "-q", "-m", f"{len(names)} tasks")
                    server.stdin.write(" ".join(names) + "\n")
                    server.stdin.flush()
                    figures = json.loads(server.stdout.readline())
                    done += len(names)
                    probe = names[len(names) // 2]
                    row = {
                        "tasks": done,
                        "tasks_per_s": len(names) / figures["seconds"],
                        **figures,
                        "get_task_ms": timed(repo, "get", "task", probe),
                        "describe_ms": timed(repo, "describe", "task", probe),
                        "history_ms": timed(repo, "history", "task", probe, "-n", "20"),
                        "get_limit_ms": timed(repo, "get", "tasks", "--limit", "100"),
                        "git_mb": repository_kb(repo) / 1024,
                        "startup_ms": startup,
                    }
                    rows.append(row)
                    print(
                        f"{done:8d} {row['tasks_per_s']:8.0f} {row['commits']:8.0f}"
                        f" {row['commit_p50_ms']:8.1f} /{row['commit_p99_ms']:7.1f}"
                        f" {row['get_task_ms']:10.0f} {row['describe_ms']:9.0f} {row['history_ms']:13.0f}"
                        f" {row['get_limit_ms']:15.0f} {row['rss_mb']:8.0f} {row['git_mb']:9.1f}",
                        flush=True,
                    )
                server.stdin.write("\n")
                server.stdin.flush()
                server.wait(timeout=120)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
    finally:
        stub.kill()
        stub.wait()
    first, last = rows[0], rows[-1]
    ratio = last["tasks_per_s"] / first["tasks_per_s"]
    print(
        f"last batch / first batch tasks/s: {ratio:.2f} (target >= 0.8); "
        f"RSS {first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
