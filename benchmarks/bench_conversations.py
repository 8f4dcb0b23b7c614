"""Conversations through one `serve` (DESIGN §12): follow-ups/s, and how soon a follow-up reaches the model.

    python benchmarks/bench_conversations.py                   # 1,000 conversations x 5 follow-ups
    python benchmarks/bench_conversations.py --n 100 --follow-ups 3 --trials 10

One `serve` runs in the background on a repository whose LLM (the stub at 0 ms, its own process)
and agent are Ready. N tasks are committed to `main` in one commit and answered. Then, for each
round r = 1..F, one commit of `main` appends follow-up r to every task's file (`spec.followUps`,
as `task send` writes it), and the round ends when every task has taken it and answered
(`status.followUpsApplied == r`, `FinalAnswer`, read from the status branch with one `git cat-file
--batch`). Printed:

- follow-ups/s: N x F over the time from each round's commit to its last answer, summed;
- the latency from a follow-up's commit (the moment `main` moved) to the model's request for it
  (the stub stamps each request on arrival), p50/p95/max over all N x F: a burst of N at once;
- the same latency for one follow-up alone (`--trials` times, to a running, idle serve): what a
  person sending one message waits before the model is asked; target p50 <= 50 ms;
- CPU of serve per follow-up, checkpoint commits written, and repository size.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from benchmarks.bench_tasks import git, make_repo, percentile, repository_kb, start_stub  # noqa: E402
from gitops_acp.resources.meta import Kind, status_path  # noqa: E402


def task_name(i: int) -> str:
    return f"task-{i:05d}"


def follow_up_text(name: str, r: int) -> str:
    return f"Follow-up {r} of {name}"


def task_file(name: str, follow_ups: int) -> str:
    text = (
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\n"
        f"metadata: {{name: {name}}}\nspec:\n  agentRef: {{name: bench}}\n  userMessage: Benchmark {name}\n"
    )
    if follow_ups:
        text += "  followUps:\n" + "".join(
            f"    - content: {follow_up_text(name, r)}\n" for r in range(1, follow_ups + 1)
        )
    return text


def commit_round(repo: Path, names: list[str], follow_ups: int) -> float:
    """Write every task's file with `follow_ups` follow-ups and commit; return when main moved."""
    for name in names:
        (repo / "tasks" / f"{name}.yaml").write_text(task_file(name, follow_ups))
    git(repo, "add", "tasks")
    tree = git(repo, "write-tree")
    parent = git(repo, "rev-parse", "HEAD")
    commit = git(
        repo, "commit-tree", tree, "-p", parent, "-m", f"follow-up {follow_ups} to {len(names)} tasks"
    )
    moved = time.time()
    git(repo, "update-ref", "refs/heads/main", commit, parent)  # what `git commit` does last
    git(repo, "reset", "-q", "--soft", commit)  # the index already matches
    return moved


def statuses(repo: Path, names: list[str]) -> dict[str, dict[str, object]]:
    """Every task's status at the tip of acp/status: one `git cat-file --batch`."""
    paths = [f"acp/status:{status_path(Kind.Task, name)}\n" for name in names]
    out = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo,
        input="".join(paths).encode(),
        capture_output=True,
        check=True,
    ).stdout
    found: dict[str, dict[str, object]] = {}
    offset = 0
    for name in names:
        end = out.index(b"\n", offset)
        header = out[offset:end].split()
        if header[-1] == b"missing":
            offset = end + 1
            continue
        size = int(header[2])
        body = out[end + 1 : end + 1 + size]
        offset = end + 1 + size + 1
        found[name] = (yaml.load(body, Loader=yaml.CSafeLoader) or {}).get("status") or {}
    return found


def wait_round(
    repo: Path, names: list[str], applied: int, since: str | None, timeout: float = 600.0
) -> float:
    """Wait until every task took `applied` follow-ups and answered; return when that was seen.

    Cheap while waiting: the answers are counted in the messages of the status commits made since
    `since` (`Task/<name>: ReadyForLLM -> FinalAnswer` lines); the status files are read once, at
    the end, to check what was counted (polling 1,000 files would take the CPU the reconciler needs).
    """
    deadline = time.time() + timeout
    wanted = set(names)
    while time.time() < deadline:
        span = f"{since}..acp/status" if since else "acp/status"
        log = subprocess.run(
            ["git", "log", "--format=%B", span], cwd=repo, capture_output=True, text=True
        ).stdout
        answered = {
            line.split(":", 1)[0].removeprefix("Task/")
            for line in log.splitlines()
            if line.startswith("Task/") and line.endswith("-> FinalAnswer")
        }
        if wanted <= answered:
            seen = time.time()
            found = statuses(repo, names)
            done = [
                name
                for name, status in found.items()
                if status.get("phase") == "FinalAnswer" and status.get("followUpsApplied", 0) == applied
            ]
            if len(done) == len(names):
                return seen
        time.sleep(0.05)
    raise SystemExit(f"round {applied}: not every task answered within {timeout:.0f} s")


def status_tip(repo: Path) -> str | None:
    found = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", "acp/status"], cwd=repo, capture_output=True, text=True
    )
    return found.stdout.strip() or None


def stub_requests(url: str) -> list[dict[str, object]]:
    root = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/_stub/requests", timeout=30) as response:
        data = json.load(response)
    return data if isinstance(data, list) else list(data.get("requests", []))


def reset_stub(url: str) -> None:
    root = url.rsplit("/v1", 1)[0]
    request = urllib.request.Request(f"{root}/_stub/reset", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def first_seen(url: str) -> dict[str, float]:
    """The stub's arrival time of the first request whose last user message is each text."""
    seen: dict[str, float] = {}
    for record in stub_requests(url):
        body = record.get("body")
        if not isinstance(body, dict):
            continue
        users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
        if users and isinstance(users[-1], str) and users[-1] not in seen:
            seen[users[-1]] = float(record["time"])  # type: ignore[arg-type]
    return seen


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="conversations (default 1000)")
    parser.add_argument("--follow-ups", type=int, default=5, help="follow-ups each (default 5)")
    parser.add_argument("--trials", type=int, default=30, help="single follow-ups timed alone (default 30)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(ROOT, '--version')}")
    stub, url = start_stub()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
            repo, secrets = make_repo(Path(tmp), url, 0)
            names = [task_name(i) for i in range(args.n)]
            serve = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gitops_acp", "--repo", str(repo), "serve"),
                    *("--secrets-dir", str(secrets), "--retain-finished", "never"),
                ],
                stderr=subprocess.DEVNULL,
            )
            try:
                for name in names:
                    (repo / "tasks" / f"{name}.yaml").write_text(task_file(name, 0))
                git(repo, "add", "tasks")
                git(repo, "commit", "-q", "-m", f"{args.n} tasks")
                wait_round(repo, names, 0, None)
                commits_before = int(git(repo, "rev-list", "--count", "acp/status"))
                cpu_before = cpu_seconds(serve.pid)
                reset_stub(url)
                spent = 0.0
                latencies: list[float] = []
                for r in range(1, args.follow_ups + 1):
                    since = status_tip(repo)
                    moved = commit_round(repo, names, r)
                    ended = wait_round(repo, names, r, since)
                    spent += ended - moved
                    seen = first_seen(url)
                    missing = [n for n in names if follow_up_text(n, r) not in seen]
                    if missing:
                        raise SystemExit(f"round {r}: no LLM request for {len(missing)} follow-ups")
                    latencies += [(seen[follow_up_text(n, r)] - moved) * 1000 for n in names]
                    reset_stub(url)
                    print(f"round {r}: {args.n} follow-ups answered in {ended - moved:.2f} s")
                cpu = cpu_seconds(serve.pid) - cpu_before
                commits = int(git(repo, "rev-list", "--count", "acp/status")) - commits_before
                total = args.n * args.follow_ups
                print(f"conversations: {args.n} x {args.follow_ups} follow-ups through one serve")
                print(f"follow-ups/s: {total / spent:.0f} ({total} in {spent:.2f} s)")
                print(
                    f"commit -> model request, a burst of {args.n}: "
                    f"p50 {statistics.median(latencies):.0f} ms, p95 {percentile(latencies, 95):.0f} ms, "
                    f"max {max(latencies):.0f} ms"
                )
                print(f"serve CPU per follow-up: {cpu / total * 1000:.2f} ms; status commits: {commits}")
                alone: list[float] = []
                for t in range(args.trials):
                    name = names[t % len(names)]
                    applied = args.follow_ups + 1 + t // len(names)
                    text = follow_up_text(name, applied)
                    path = repo / "tasks" / f"{name}.yaml"
                    path.write_text(task_file(name, applied))
                    git(repo, "add", str(path))
                    since = status_tip(repo)
                    tree = git(repo, "write-tree")
                    parent = git(repo, "rev-parse", "HEAD")
                    commit = git(repo, "commit-tree", tree, "-p", parent, "-m", f"follow-up to {name}")
                    moved = time.time()
                    git(repo, "update-ref", "refs/heads/main", commit, parent)
                    git(repo, "reset", "-q", "--soft", commit)
                    wait_round(repo, [name], applied, since, timeout=30)
                    seen = first_seen(url)
                    if text not in seen:
                        raise SystemExit(f"no LLM request for {text}")
                    alone.append((seen[text] - moved) * 1000)
                    reset_stub(url)
                if alone:
                    print(
                        f"commit -> model request, one follow-up alone ({len(alone)} trials): "
                        f"p50 {statistics.median(alone):.0f} ms, p95 {percentile(alone, 95):.0f} ms "
                        f"(target p50 <= 50 ms)"
                    )
                print(f"repository: {repository_kb(repo) / 1024:.1f} MiB")
            finally:
                serve.terminate()
                serve.wait(30)
    finally:
        stub.terminate()
        stub.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
