"""Measure what a checkpoint costs: the status writer's commit latency and group-commit amortization.

Run: ``python benchmarks/bench_checkpoint.py`` (add ``--help`` for sizes). Everything happens in a
temporary non-bare repository whose status branch already holds ``--existing`` task files: run it
with 100 and with 100,000 to see that a commit's cost does not depend on what the tip holds (the
fan-out of docs/growth.md: a commit rewrites only the trees on its files' paths).

- sequential: one resource, one checkpoint at a time (a ~5 KB Task file whose context window
  grows), as the caller sees it (``await writer.commit``) and as the writer thread measured it;
- group: N resources checkpoint concurrently, for several rounds; amortized ms per checkpoint
  and the number of commits it took (the target is <= 5 ms per checkpoint);
- list_tree: walking trees through the persistent cat-file vs one ``git ls-tree -r`` (how
  ``GitRepo.list_tree`` chooses).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitops_acp.cli.commits import init_repository
from gitops_acp.store.git import GitRepo
from gitops_acp.store.status import Change, StatusWriter


def task_document(name: str, turn: int, size: int = 5000) -> dict[str, Any]:
    """Return a Task status file of about `size` bytes that differs at every turn."""
    messages = [{"role": "system", "content": "You are a helpful assistant.\nAnswer briefly."}]
    filler = 0
    while sum(len(m["content"]) for m in messages) < size - 600:
        filler += 1
        messages.append({"role": "user" if filler % 2 else "assistant", "content": f"message {filler} " * 12})
    return {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name, "annotations": {"acp.gitops.dev/source": f"tasks/{name}.yaml"}},
        "spec": {"agentRef": {"name": "my-assistant"}, "userMessage": "What time is it in Tokyo?"},
        "status": {
            "phase": "ReadyForLLM",
            "ready": True,
            "status": "Ready",
            "statusDetail": f"turn {turn}",
            "turns": turn,
            "contextWindow": messages,
        },
    }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def bench_sequential(repo: Path, count: int) -> dict[str, float]:
    writer = StatusWriter(repo)
    await writer.start()
    seen: list[float] = []
    for turn in range(count):
        started = time.perf_counter()
        await writer.commit(
            [Change("Task", "sequential", task_document("sequential", turn), "ReadyForLLM", "ReadyForLLM")],
            spec_commit="0" * 40,
        )
        seen.append((time.perf_counter() - started) * 1000)
    await writer.close()
    inner = writer.stats.durations_ms
    return {
        "p50": statistics.median(seen),
        "p99": percentile(seen, 99),
        "writer_p50": statistics.median(inner),
        "writer_p99": percentile(inner, 99),
        "commits": writer.stats.commits,
    }


async def bench_group(repo: Path, concurrency: int, rounds: int) -> dict[str, float]:
    writer = StatusWriter(repo)
    await writer.start()
    # Documents are built before the clock starts: the benchmark measures the store, not the caller.
    docs = [
        [task_document(f"group-{concurrency}-{i}", turn) for i in range(concurrency)]
        for turn in range(rounds)
    ]
    started = time.perf_counter()
    for turn in range(rounds):
        await asyncio.gather(
            *(
                writer.commit(
                    [Change("Task", doc["metadata"]["name"], doc, "-", "ReadyForLLM")], spec_commit="0" * 40
                )
                for doc in docs[turn]
            )
        )
    elapsed = (time.perf_counter() - started) * 1000
    await writer.close()
    checkpoints = concurrency * rounds
    return {
        "checkpoints": checkpoints,
        "commits": writer.stats.commits,
        "ms_per_checkpoint": elapsed / checkpoints,
        "ms_per_commit": statistics.median(writer.stats.durations_ms),
    }


def bench_list_tree(root: Path) -> list[tuple[str, int, float, float]]:
    shapes = {
        "10 dirs x 5 files": {f"d{i}/f{j}.yaml": b"x: %d\n" % j for i in range(10) for j in range(5)},
        "status: 6 dirs x 170": {
            f"status/p{i}/f{j}.yaml": b"x: %d\n" % j for i in range(6) for j in range(170)
        },
        "200 dirs x 5 files": {f"d{i}/e{k}/f.yaml": b"x\n" for i in range(20) for k in range(10)},
    }
    rows: list[tuple[str, int, float, float]] = []
    for label, files in shapes.items():
        path = root / f"tree-{len(rows)}"
        sha = init_repository(path, files=files, message="shape")
        with GitRepo.open(path) as repo:
            timings = []
            walk = functools.partial(repo._walk_tree, max_trees=10**6)
            for method in (walk, repo._ls_tree):
                method(sha)  # warm the cat-file process and the page cache
                started = time.perf_counter()
                for _ in range(30):
                    method(sha)
                timings.append((time.perf_counter() - started) / 30 * 1000)
        rows.append((label, len(files), timings[0], timings[1]))
    return rows


async def seed(repo: Path, existing: int) -> None:
    writer = StatusWriter(repo)
    await writer.start()
    await writer.commit(
        [
            Change("Task", f"existing-{i:05d}", task_document(f"existing-{i:05d}", 0, 1500))
            for i in range(existing)
        ],
        spec_commit="0" * 40,
    )
    await writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=300, help="sequential checkpoints (default 300)")
    parser.add_argument("--sizes", default="1,10,100,1000", help="concurrent resources per group round")
    parser.add_argument("--rounds", type=int, default=5, help="group rounds per size (default 5)")
    parser.add_argument("--existing", type=int, default=500, help="task files already on the branch")
    parser.add_argument("--dir", default=None, help="where to create the temporary repository")
    args = parser.parse_args()
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{git_version}, Python {sys.version.split()[0]}; {args.existing} task files already on acp/status")

    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-", dir=args.dir) as tmp:
        print(f"repository in {tmp}\n")
        repo = Path(tmp) / "repo"
        init_repository(repo, files={"README.md": b"benchmark\n"}, message="init")
        asyncio.run(seed(repo, args.existing))

        seq = asyncio.run(bench_sequential(repo, args.sequential))
        print(f"sequential single-resource checkpoints ({args.sequential} x ~5 KB)")
        print(f"  caller latency   p50 {seq['p50']:6.2f} ms   p99 {seq['p99']:6.2f} ms")
        print(f"  writer thread    p50 {seq['writer_p50']:6.2f} ms   p99 {seq['writer_p99']:6.2f} ms")
        print(f"  commits          {seq['commits']:.0f}\n")

        print("group commit (N resources checkpointing concurrently)")
        header = (
            ("N", 6),
            ("rounds", 6),
            ("checkpoints", 11),
            ("commits", 8),
            ("ms/commit", 10),
            ("ms/checkpoint", 14),
        )
        print(" ", *(title.rjust(width) for title, width in header))
        for size in (int(s) for s in args.sizes.split(",")):
            row = asyncio.run(bench_group(repo, size, args.rounds))
            print(
                f"  {size:>6} {args.rounds:>6} {row['checkpoints']:>11.0f} {row['commits']:>8.0f}"
                f" {row['ms_per_commit']:>10.2f} {row['ms_per_checkpoint']:>14.3f}"
            )

        print("\nlist_tree: cat-file walk vs one `git ls-tree -r` (ms per call)")
        for label, files, walk, ls_tree in bench_list_tree(Path(tmp)):
            print(f"  {label:<22} {files:>5} files   walk {walk:6.2f}   ls-tree {ls_tree:6.2f}")


if __name__ == "__main__":
    main()
