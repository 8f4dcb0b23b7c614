"""What a person waits for at 100,000 tasks: `get task`, `describe task`, `history -n 20`, `get tasks`.

    python benchmarks/bench_cli.py                      # 100,000 tasks, a repository made and removed
    python benchmarks/bench_cli.py --keep /tmp/cli100k  # made there and kept (reused when it exists)
    python benchmarks/bench_cli.py --keep /tmp/cli100k --code /tmp/older-checkout   # another version

DESIGN §9 / issue 12: at 100,000 tasks in the status branch's tip, `get task NAME` and `describe
task NAME` within 100 ms and `history task NAME -n 20` within 50 ms, timed from a shell: a new
process each, Python's start-up included. Each figure is the median of `--runs` fresh processes
(and the fastest, and the slowest); `python -c pass` and `gitops-acp --help` are printed beside
them, with the import time (`-X importtime`, summed over top-level imports) of the commands.

Running 100,000 tasks through `serve` takes minutes (benchmarks/bench_growth.py does it); this
benchmark writes the same repository directly, with `git fast-import`:

- the status documents are a real run's: `gitops-acp demo` (the offline end-to-end run, through
  the real reconciler) is run once, and the checkpoint sequence of its single-turn task
  `hello-world-task`, and of its tool-using task `add-numbers` and that task's tool call, are read
  from its status branch, blob by blob, with their commit-message lines;
- task `g000123` gets the template's blobs with the name replaced, its timestamps shifted to its
  own commits (so `acp.gitops.dev/first-checkpoint`, which bounds `history`'s walk, is true), and
  the spec commit set to this repository's `main`; every `--tool-every`-th task is a tool-using
  one, with its tool call;
- the tasks are run in waves of `--group`: a wave's N-th checkpoints of every task and tool call
  are one group commit (`checkpoint: <n> resources`, a `Kind/name: Old -> New` line each and the
  writer's trailers), as the status writer commits them, at the paths `meta.status_path` gives
  (fanned out, `status/tasks/<a>/<b>/<c>/<name>.yaml`); 20 commits a second of commit time;
- `main` holds the demo's LLM, Agent, MCP server and contact channel, and the Task files of the
  last `--on-main` tasks (as bench_growth leaves them: earlier batches' files removed);
- then `git commit-graph write --reachable --changed-paths`, as `serve`'s maintenance does.

The probes are a task of the first wave (the most history after it: what made `history` slow)
and one of the last, a tool call of the first wave, and the first page of `get tasks`; then, in
three runs each, lists that read every task: `--phase Failed` (none failed: every file read and
parsed, nothing printed) and the whole list.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gitops_acp.resources import meta

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_TASK = "hello-world-task"
TEMPLATE_TOOL_TASK = "add-numbers"
STATIC_KINDS = ("llms", "agents", "mcpservers", "contactchannels", "sources")
_STAMP = re.compile(rb'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z"')
_SPEC_COMMIT = re.compile(rb"(acp\.gitops\.dev/spec-commit: )[0-9a-f]{40}")
COMMITS_PER_SECOND = 20
IDENTITY = "gitops-acp <gitops-acp@localhost>"


def git(cwd: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, input=data, check=True, capture_output=True).stdout


@dataclass(frozen=True)
class Step:
    """One checkpoint of a template resource: its commit-message line's phases and its file."""

    old: str
    new: str
    data: bytes


@dataclass(frozen=True)
class Template:
    """A real run's resources to copy: checkpoint sequences, the kinds people write, main's files."""

    task: list[Step]
    tool_task: list[Step]
    tool_call: list[Step]
    tool_call_name: str  # the template tool call's name (starts with TEMPLATE_TOOL_TASK)
    static: dict[str, bytes]  # status/llms/... files of the demo's tip
    main: dict[str, bytes]  # main's files, tasks/ left out
    task_file: bytes  # the template Task's document on main (its file holds the demo's other Tasks too)


def status_path(kind: str, name: str) -> str:
    return meta.status_path(meta.Kind(kind), name)


def steps(repo: Path, kind: str, name: str) -> list[Step]:
    """The checkpoints of one resource on the demo's status branch, oldest first."""
    path = status_path(kind, name)
    out = git(repo, "log", "--reverse", "--format=%H%x1f%B%x1e", "acp/status", "--", path).decode()
    found: list[Step] = []
    for record in out.split("\x1e"):
        if not record.strip():
            continue
        sha, _, message = record.strip().partition("\x1f")
        line = next(ln for ln in message.splitlines() if ln.startswith(f"{kind}/{name}: "))
        old, _, new = line.split(": ", 1)[1].partition(" -> ")
        found.append(Step(old, new, git(repo, "show", f"{sha}:{path}")))
    return found


def template(workdir: Path) -> Template:
    """Run `gitops-acp demo` (the real reconciler, offline) and read what it wrote."""
    demo = workdir / "demo"
    subprocess.run(
        [sys.executable, "-m", "gitops_acp", "demo", "--dir", str(demo)],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=600,
    )
    repo = demo / "repo"
    calls = git(repo, "ls-tree", "-r", "--name-only", "acp/status", "status/toolcalls/").decode().split()
    call = next(Path(p).stem for p in calls if Path(p).stem.startswith(TEMPLATE_TOOL_TASK + "-"))
    static = {
        path: git(repo, "show", f"acp/status:{path}")
        for path in git(repo, "ls-tree", "-r", "--name-only", "acp/status", "status/").decode().split()
        if path.split("/")[1] in STATIC_KINDS
    }
    main = {
        path: git(repo, "show", f"main:{path}")
        for path in git(repo, "ls-tree", "-r", "--name-only", "main").decode().split()
        if path.split("/")[0] in STATIC_KINDS
    }
    return Template(
        task=steps(repo, "Task", TEMPLATE_TASK),
        tool_task=steps(repo, "Task", TEMPLATE_TOOL_TASK),
        tool_call=steps(repo, "ToolCall", call),
        tool_call_name=call,
        static=static,
        main=main,
        task_file=git(repo, "show", f"main:tasks/{TEMPLATE_TASK}.yaml").split(b"\n---\n")[0] + b"\n",
    )


def _epoch(stamp: bytes) -> float:
    return datetime.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def _stamp(epoch: float) -> bytes:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").encode()


def _data(payload: bytes) -> bytes:
    return b"data %d\n%s\n" % (len(payload), payload)


@dataclass
class Resource:
    """One synthetic resource on its way through the checkpoints of its template."""

    kind: str
    name: str
    steps: list[Step]
    replace: tuple[bytes, bytes]
    shift: float | None = None  # seconds added to the template's timestamps (set at its first commit)

    def blob(self, index: int, when: float, main: bytes) -> bytes:
        data = self.steps[index].data.replace(*self.replace)
        if self.shift is None:
            first = _STAMP.search(data)
            self.shift = when - (_epoch(first.group(1)) if first else when)
        shift = self.shift
        data = _STAMP.sub(lambda m: b'"' + _stamp(_epoch(m.group(1)) + shift) + b'Z"', data)
        return _SPEC_COMMIT.sub(lambda m: m.group(1) + main, data)


def task_name(i: int) -> str:
    return f"g{i:06d}"


def status_stream(t: Template, *, total: int, group: int, tool_every: int, main: str) -> Iterator[bytes]:
    """The fast-import stream of the status branch (see the module docstring)."""
    start = time.time() - 86400 * 30  # a month ago: commit times are whole seconds, 20 a second
    count = 0

    def commit(lines: list[str], files: list[tuple[str, bytes]]) -> bytes:
        nonlocal count
        when = int(start + count / COMMITS_PER_SECOND)
        count += 1
        subject = lines[0] if len(lines) == 1 else f"checkpoint: {len(lines)} resources"
        body = "" if len(lines) == 1 else "\n".join(lines) + "\n\n"
        trailers = f"Spec-Commit: {main}\n" + "".join(f"ACP-Resource: {ln.split(':')[0]}\n" for ln in lines)
        message = f"{subject}\n\n{body}{trailers}".encode()
        out = [b"commit refs/heads/acp/status\n", f"committer {IDENTITY} {when} +0000\n".encode()]
        out.append(_data(message))
        out += [f"M 100644 inline {path}\n".encode() + _data(data) for path, data in files]
        return b"".join(out)

    yield commit(
        [f"{p.split('/')[1]}/{Path(p).stem}: - -> Ready" for p in t.static],
        list(t.static.items()),
    )
    main_bytes = main.encode()
    for wave in range(0, total, group):
        resources: list[Resource] = []
        for i in range(wave, min(total, wave + group)):
            name = task_name(i)
            if tool_every and i % tool_every == 0:
                resources.append(
                    Resource("Task", name, t.tool_task, (TEMPLATE_TOOL_TASK.encode(), name.encode()))
                )
                call = t.tool_call_name.replace(TEMPLATE_TOOL_TASK, name, 1)
                resources.append(
                    Resource("ToolCall", call, t.tool_call, (TEMPLATE_TOOL_TASK.encode(), name.encode()))
                )
            else:
                resources.append(Resource("Task", name, t.task, (TEMPLATE_TASK.encode(), name.encode())))
        for index in range(max(len(r.steps) for r in resources)):
            when = start + count / COMMITS_PER_SECOND
            lines, files = [], []
            for r in resources:
                if index < len(r.steps):
                    step = r.steps[index]
                    lines.append(f"{r.kind}/{r.name}: {step.old} -> {step.new}")
                    files.append((status_path(r.kind, r.name), r.blob(index, when, main_bytes)))
            yield commit(lines, files)


def build(repo: Path, t: Template, *, total: int, group: int, tool_every: int, on_main: int) -> None:
    """Write the repository (see the module docstring); print what it took."""
    started = time.perf_counter()
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    files = dict(t.main)
    for i in range(max(0, total - on_main), total):
        if not (tool_every and i % tool_every == 0):
            name = task_name(i)
            files[f"tasks/{name}.yaml"] = t.task_file.replace(TEMPLATE_TASK.encode(), name.encode())
    when = int(time.time() - 86400 * 31)
    stream = [b"commit refs/heads/main\n", f"committer Bench <bench@example.com> {when} +0000\n".encode()]
    stream.append(_data(b"resources"))
    stream += [f"M 100644 inline {path}\n".encode() + _data(data) for path, data in sorted(files.items())]
    git(repo, "fast-import", "--quiet", data=b"".join(stream))
    main = git(repo, "rev-parse", "refs/heads/main").decode().strip()
    importer = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=repo, stdin=subprocess.PIPE)
    assert importer.stdin is not None
    for chunk in status_stream(t, total=total, group=group, tool_every=tool_every, main=main):
        importer.stdin.write(chunk)
    importer.stdin.close()
    if importer.wait() != 0:
        raise SystemExit("git fast-import failed")
    imported = time.perf_counter() - started
    git(repo, "commit-graph", "write", "--reachable", "--changed-paths")
    commits = int(git(repo, "rev-list", "--count", "acp/status").decode())
    tip = len(git(repo, "ls-tree", "-r", "--name-only", "acp/status", "status/tasks/").split())
    print(
        f"built {repo}: {tip:,} tasks in the tip, {commits:,} commits on acp/status, "
        f"{imported:.0f} s (fast-import) + {time.perf_counter() - started - imported:.0f} s (commit-graph)"
    )


def environment(code: Path | None) -> dict[str, str]:
    """A user's shell: bytecode written and used (this sandbox sets PYTHONDONTWRITEBYTECODE)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def timed(argv: Sequence[str], *, runs: int, env: dict[str, str], cwd: Path) -> list[float]:
    """Milliseconds of `runs` fresh processes of `argv` (after one unmeasured run), sorted.

    Run in `cwd` (the repository), not here: `python -m` puts the current directory first on
    sys.path, which would shadow `--code`.
    """
    subprocess.run(argv, check=True, capture_output=True, env=env, cwd=cwd)
    times: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env=env, cwd=cwd)
        times.append((time.perf_counter() - started) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode().strip()}")
    return sorted(times)


def import_ms(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Milliseconds of imports `-X importtime` reports for `argv` (top-level imports summed)."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, env=env, cwd=cwd)
    total = 0
    for line in proc.stderr.decode().splitlines():
        parts = line.split("|")
        top_level = len(parts) == 3 and parts[2].startswith(" ") and not parts[2][1:2].isspace()
        if line.startswith("import time:") and top_level and parts[1].strip().isdigit():
            total += int(parts[1])
    return total / 1000


def _code_of(env: dict[str, str], cwd: Path) -> str:
    """Where the CLI's package is imported from, as the timed processes will import it."""
    program = "import gitops_acp, pathlib; print(pathlib.Path(gitops_acp.__file__).parent.parent)"
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=cwd
    ).stdout.strip()


def measure(repo: Path, *, total: int, group: int, tool_every: int, runs: int, code: Path | None) -> None:
    env = environment(code)
    cli = [sys.executable, "-m", "gitops_acp", "--repo", str(repo)]
    old = task_name(1 if tool_every != 1 else 0)  # of the first wave: single-turn
    recent = task_name(total - 1 if (total - 1) % tool_every else total - 2)
    listed = git(repo, "ls-tree", "-r", "--name-only", "acp/status", "status/toolcalls/").decode().split()
    toolcall = next(Path(p).stem for p in listed if Path(p).stem.startswith(task_name(0) + "-"))
    print(
        f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"code: {_code_of(env, repo)}; medians of {runs} fresh processes (fastest-slowest), ms"
    )
    rows: list[tuple[str, list[str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("gitops-acp --help", [*cli, "--help"]),
        (f"get task {old}", [*cli, "get", "task", old]),
        (f"get task {old} -o yaml", [*cli, "get", "task", old, "-o", "yaml"]),
        (f"describe task {old}", [*cli, "describe", "task", old]),
        (f"history task {old} -n 20", [*cli, "history", "task", old, "-n", "20"]),
        (f"history task {recent} -n 20", [*cli, "history", "task", recent, "-n", "20"]),
        (f"get toolcall {toolcall}", [*cli, "get", "toolcall", toolcall]),
        ("get tasks --limit 100", [*cli, "get", "tasks", "--limit", "100"]),
    ]
    for label, argv in rows:
        times = timed(argv, runs=runs, env=env, cwd=repo)
        imports = "" if label == "python -c pass" else f"   imports {import_ms(argv, env, repo):5.0f}"
        print(f"  {label:44s} {statistics.median(times):7.0f}   ({times[0]:.0f}-{times[-1]:.0f}){imports}")
    # Every task read (seconds each, so fewer runs): a filter that keeps none (reading and
    # parsing 100,000 status files), and the whole list printed (a row each as well).
    whole = [
        ("get tasks --phase Failed (none)", [*cli, "get", "tasks", "--phase", "Failed"]),
        (f"get tasks (all {total:,})", [*cli, "get", "tasks"]),
    ]
    for label, argv in whole:
        times = timed(argv, runs=min(runs, 3), env=env, cwd=repo)
        print(f"  {label:44s} {statistics.median(times):7.0f}   ({times[0]:.0f}-{times[-1]:.0f})")
    api = subprocess.run(
        [sys.executable, "-c", _API_PAGES, str(repo), str(runs)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    print(api.stdout, end="")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


# The HTTP API's list (`GET /v1/tasks?limit=100`) as its read thread answers it (api/reading.py,
# the HTTP layer left out): the first answer lists the names, then each answer comes after one
# more checkpoint commit on acp/status (the writer's, as `serve` makes them), as while serving.
# The status branch is put back where it was at the end (the commits stay as unreachable objects).
_API_PAGES = """
import asyncio, statistics, sys, time
from pathlib import Path
from gitops_acp.api.reading import Reads
from gitops_acp.resources.meta import Kind
from gitops_acp.store.git import GitRepo
from gitops_acp.store.status import Change, StatusWriter

repo, runs = Path(sys.argv[1]), int(sys.argv[2])

async def main():
    reads = Reads(repo, branch="main")
    with GitRepo.open(repo) as opened:
        tip = opened.resolve("refs/heads/acp/status")
    writer = StatusWriter(repo)
    await writer.start()
    times = []
    try:
        for run in range(runs + 1):
            if run:
                doc = {"apiVersion": "acp.gitops.dev/v1alpha1", "kind": "Task",
                       "metadata": {"name": f"bench-api-{run}"}, "spec": {"agentRef": {"name": "a"}},
                       "status": {"phase": "Initializing"}}
                await writer.commit([Change(Kind.Task, f"bench-api-{run}", doc)], spec_commit="")
            started = time.perf_counter()
            page = await reads.run(
                lambda r: r.page(Kind.Task, lambda d: True, limit=100, after=None, archived=False)
            )
            times.append((time.perf_counter() - started) * 1000)
            assert len(page.documents) == 100
    finally:
        await writer.close()
        await reads.aclose()
        with GitRepo.open(repo) as opened:
            moved = opened.resolve("refs/heads/acp/status")
            opened.update_ref("refs/heads/acp/status", tip, moved, message="bench_cli: back")
    steady = sorted(times[1:])
    print(f"  API list of 100 (first answer: names listed)  {times[0]:7.0f}")
    median = statistics.median(steady)
    spread = f"({steady[0]:.0f}-{steady[-1]:.0f})"
    print(f"  API list of 100, a checkpoint before each    {median:7.0f}   {spread}")

asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--total", type=int, default=100_000, help="tasks (default 100,000)")
    parser.add_argument("--group", type=int, default=100, help="tasks per wave / group commit (default 100)")
    parser.add_argument("--tool-every", type=int, default=10, help="every N-th task uses a tool (default 10)")
    parser.add_argument("--on-main", type=int, default=2_000, help="Task files of the last N tasks on main")
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per command (default 15)")
    parser.add_argument("--keep", type=Path, help="build the repository here and keep it; reused if there")
    parser.add_argument(
        "--code", type=Path, help="run the CLI from this checkout (PYTHONPATH), e.g. an older one"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        repo = args.keep or Path(tmp) / "repo"
        if not (repo / ".git").exists():
            if repo.exists():
                shutil.rmtree(repo)
            repo.parent.mkdir(parents=True, exist_ok=True)
            build(
                repo,
                template(Path(tmp)),
                total=args.total,
                group=args.group,
                tool_every=args.tool_every,
                on_main=args.on_main,
            )
        measure(
            repo,
            total=args.total,
            group=args.group,
            tool_every=args.tool_every,
            runs=args.runs,
            code=args.code,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
