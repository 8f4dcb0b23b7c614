"""`history` of a task archived long ago, against how many commits came after it.

    python benchmarks/bench_history.py                      # 10,000, 100,000 and 300,000 commits after
    python benchmarks/bench_history.py --after 50000 --runs 15

`git log -- <path>` walks back from where it starts to the task's first checkpoint (`--since`):
from the tip, every commit made since the task ran, ~2 µs each with the commit-graph's Bloom
filters. A task archived a year ago on a branch of a busy repository (a few commits a task, so
hundreds of thousands of commits) took most of a second. The status writer bookmarks the last
commit of every hour (store/statustree.py) and `history` starts an archived task's walk at the
first bookmark holding its archived file (store/history.py).

The branch is made with `git fast-import` in the writer's layout (a commit per minute, a task's
three checkpoints, its archive commit an hour after it finished, a bookmark for every hour that
had commits, the commit-graph with changed paths as maintenance writes it): what the reader
meets, without running the writer for hours. Each size is timed twice, on the branch with its
bookmarks and on the same branch without them (`--no-bookmarks`), and the outputs must agree.
Printed: medians of `gitops-acp history task <old> -n 20`, a new process each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitops_acp.resources.meta import Kind, rfc3339, status_path  # noqa: E402
from gitops_acp.store.statustree import bookmark_path  # noqa: E402

T0 = 1_780_000_000  # a start of the branch
STEP = 60  # seconds between commits
CLI = [sys.executable, "-m", "gitops_acp"]


def document(name: str, phase: str, began: float) -> bytes:
    return (
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\nmetadata:\n"
        f'  name: {name}\n  annotations:\n    acp.gitops.dev/first-checkpoint: "{rfc3339(began)}"\n'
        f"spec:\n  agentRef:\n    name: a\n  userMessage: hi\nstatus:\n  phase: {phase}\n"
        f"  statusDetail: now {phase}\n"
    ).encode()


def build(repo: Path, after: int, *, bookmarks: bool) -> None:
    """A status branch: task `old` runs in its first three commits and is archived an hour later;
    then `after` commits of other tasks, one a minute."""
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    answers, answer_fd = os.pipe()  # fast-import says a commit's sha on request (`get-mark`)
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet", f"--cat-blob-fd={answer_fd}"],
        stdin=subprocess.PIPE,
        cwd=repo,
        pass_fds=(answer_fd,),
    )
    os.close(answer_fd)
    reply = os.fdopen(answers, "rb")
    stdin = proc.stdin
    assert stdin is not None
    mark = 0
    last: tuple[int, int] | None = None  # (mark, time) of the previous commit

    def commit(when: int, message: str, files: list[tuple[str, bytes | None]]) -> None:
        nonlocal mark, last
        if bookmarks and last is not None and when // 3600 > last[1] // 3600:
            stdin.write(b"get-mark :%d\n" % last[0])
            stdin.flush()
            files = [*files, (bookmark_path(last[1]), reply.readline().strip() + b"\n")]
        mark += 1
        stdin.write(f"commit refs/heads/acp/status\nmark :{mark}\n".encode())
        stdin.write(f"committer gitops-acp <bot@gitops-acp> {when} +0000\n".encode())
        stdin.write(f"data {len(message.encode())}\n{message}\n".encode())
        if last is not None:
            stdin.write(b"from :%d\n" % last[0])
        for path, data in files:
            if data is None:
                stdin.write(f"D {path}\n".encode())
            else:
                stdin.write(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
        stdin.write(b"\n")
        last = (mark, when)

    old = status_path(Kind.Task, "old")
    began = T0
    moves = ["-", "ReadyForLLM", "ToolCallsPending", "FinalAnswer"]
    for i in range(3):
        commit(
            T0 + i, f"Task/old: {moves[i]} -> {moves[i + 1]}", [(old, document("old", moves[i + 1], began))]
        )
    when = T0 + 2
    archived = False
    for i in range(after):
        when += STEP
        if not archived and when >= T0 + 3600:
            final = document("old", "FinalAnswer", began)
            moved = [(old, None), (status_path(Kind.Task, "old", root="archive"), final)]
            commit(when, "archive: 1 resources\n\nTask/old: FinalAnswer -> Archived", moved)
            archived = True
            when += STEP
        name = f"n{i:07d}"
        commit(
            when,
            f"Task/{name}: - -> FinalAnswer",
            [(status_path(Kind.Task, name), document(name, "x", when))],
        )
    stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    reply.close()
    subprocess.run(["git", "commit-graph", "write", "--reachable", "--changed-paths"], cwd=repo, check=True)


def timed(repo: Path, runs: int) -> tuple[float, str]:
    """Median ms of `history task old -n 20` (a new process each run), and its output."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    env.pop("PYTHONDONTWRITEBYTECODE")
    times: list[float] = []
    output = ""
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(
            [*CLI, "history", "task", "old", "-n", "20", "--repo", str(repo)],
            capture_output=True,
            text=True,
            env=env,
        )
        times.append((time.perf_counter() - started) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"history failed: {proc.stderr.strip()}")
        output = proc.stdout
    return statistics.median(times), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--after", type=int, action="append", help="commits after the task (repeatable)")
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    sizes = args.after or [10_000, 100_000, 300_000]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print("history task old -n 20: medians of new processes, ms (the task archived an hour after it ran)")
    print(f"{'commits after':>14} {'bookmarks':>10} {'without':>8} {'ratio':>6}")
    for after in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
            marked, plain = Path(folder) / "marked.git", Path(folder) / "plain.git"
            build(marked, after, bookmarks=True)
            build(plain, after, bookmarks=False)
            timed(marked, 2)  # warm the page cache
            timed(plain, 2)
            fast, shown = timed(marked, args.runs)
            slow, expected = timed(plain, args.runs)
            if [line.split()[1:] for line in shown.splitlines()] != [
                line.split()[1:] for line in expected.splitlines()
            ]:
                raise SystemExit(f"outputs differ:\n{shown}\n{expected}")
            print(f"{after:>14,} {fast:>10.1f} {slow:>8.1f} {slow / fast:>6.1f}")


if __name__ == "__main__":
    main()
