"""Growth: is the reconciler as fast after a year of tasks as on the first day? (DESIGN §9, issue 12)

    python benchmarks/bench_growth.py                          # 100,000 tasks in batches of 2,000
    python benchmarks/bench_growth.py --retain-finished never  # the same with no archiving at all
    python benchmarks/bench_growth.py --total 10000 --batch 2000

One reconciler (the Manager, in a child process so that its figures are its own) serves a local
repository with the stub LLM answering at 0 ms. The parent commits a batch of single-turn tasks to
`main`, tells the child their names, and the child reports once every one of them is finished: the
batch's tasks/s, its checkpoint commits' p50/p99 (the status writer's own timings), its RSS, and its
CPU time per task and in the cycle collector (the reconciler process's, every thread; not the git
processes it drives): steadier than tasks/s on a shared machine; the seconds from the batch's commit
to the first checkpoint of its first task (reading `main` comes before it); and how busy the whole
machine was meanwhile (1.00: both cores, so some of the batch waited for a CPU). Between batches, with the
reconciler idle, the parent times what a person runs, through the real CLI: `get task NAME`,
`describe task NAME`, `history task NAME -n 20` (three times each, in turn: the figure is the median,
the runs are in `--json`) and `get tasks --limit 100` (each a new process, as
from a shell: the `gitops-acp` script `pip install` made, beside this Python, else `python -m
gitops_acp`, which also imports runpy, ~3-5 ms more; Python's start-up and imports are in every
figure; bytecode is written and used even where PYTHONDONTWRITEBYTECODE is set, as an installed
package has it), and the
object store's size as `git count-objects` counts it, and its packs (past 50, a person's `git commit`
starts `git gc --auto`, which repacks all of it). Before each batch the parent also times a fixed
piece of pure Python (`probe ms`, the fastest of 7: `machine_probe_ms`) and `python -c pass` (`python
ms`, the fastest of 3): the machine's own drift over the run, to read the batches' figures against
(the second moved with them on 2026-12-07 when the first did not). The reconciler's minor page faults
per batch are in `--json` (`minor_faults`), and its CPU split into user and system time (`user_s`,
`sys_s`: what `--callgrind` counts is the user part).

Start-up (with archiving): the reconciler's time to ready on this repository once every task is
archived, against a repository made the same way that never ran a task; the two are timed one
after the other at the end, five times each, so that both see the machine as it is then.

The reader commands look at one task of the first batch (`g001000`): with archiving it is in
`archive/` from the second batch or so on; `get` and `describe` also at one of the batch just run,
still declared on `main` (its file there is read as well). By default each batch's Task files are
removed from `main` when the next batch is committed (`--keep-main` keeps them: main then grows,
and so does what parsing it costs); `--retain-finished never` turns archiving off, so the tip grows.

RSS is also split into what holds it (`--json`: `pymalloc_mb`, Python's arenas of small objects,
given back only when empty; `malloc_mb`, glibc's heap in use and free but kept), and compared from
the first tenth of the run on, once the working set is reached. `ACP_BENCH_TRACEMALLOC=FRAMES`
prints, after each batch, where the Python memory grown since the second batch was allocated.

`--callgrind DIR` runs the reconciler under valgrind's callgrind, which counts the instructions the
process executes (every thread; not its git children), and prints them per task for each batch
(`Minstr/task`, with `--json`: `instructions`). A count does not drift with the machine as CPU
seconds do (the same work gives the same count with the other core busy or idle), so batch
against batch it tells whether the reconciler does more work as tasks pile up, where tasks/s and
CPU time mix that with the VM's moods. Everything runs ~30 times slower (use a smaller `--total`);
the counters are zeroed before the first batch and dumped into DIR after each (`callgrind_control`),
so a batch's count also holds what the reconciler did after the batch before it ended (archiving
the tasks that fell due meanwhile, maintenance, idling while the readers are timed), which its CPU
time leaves out.

Side by side (`--side-by-side ROUNDS`, default 3): at the end, in turn, a batch on a new repository
(made as this one was, its own reconciler: its first batch) and one more batch on this one, the
order swapped every round, each followed by the readers on a task of that repository's first
batch; the medians are compared. The first batch ran minutes or an hour before
the last, and this machine's speed drifts by a third within that (`probe ms`, `python ms`); side by
side, both see the same machine, and what differs is only the tasks run before. With archiving,
the reconciler here archives all its tasks before each new repository's batch.

Targets (DESIGN §9): the last batch's tasks/s at least 0.8 of the first's, with and without
archiving; `get task` and `describe` at most 100 ms and `history -n 20` at most 50 ms at 100,000
tasks (of the command's own work: the start-up is printed beside them); RSS flat.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tasks import (
    callgrind_prefix,
    count_instructions,
    git,
    make_repo,
    percentile,
    repository_kb,
    serve_until_ready,
    start_stub,
    write_task,
)


def _cli() -> list[str]:
    """The command a person types: the `gitops-acp` script of this Python's environment (until
    2026-12-07 the figures were of `python -m gitops_acp`, which runs runpy first)."""
    script = Path(sys.executable).with_name("gitops-acp")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gitops_acp"]


CLI = _cli()


def child(repo: Path, secrets: Path, retain: str) -> None:
    """Serve `repo`; for each line of names on stdin, answer with that batch's figures once finished."""
    import asyncio
    import resource

    from gitops_acp.llm.openai_client import OpenAIClient
    from gitops_acp.reactor.manager import Manager, ServeOptions
    from gitops_acp.reactor.retention import parse_retain
    from gitops_acp.resources.meta import TERMINAL_TASK_PHASES, Kind
    from gitops_acp.resources.models import LLM, Agent, Task
    from gitops_acp.secrets import SecretResolver

    manager = Manager(
        ServeOptions(repo=repo, poll_interval=0.2, retain_finished=parse_retain(retain)),
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

    collecting: dict[str, float] = {"since": 0.0, "total": 0.0}

    def timed_gc(phase: str, info: dict[str, int]) -> None:  # the cycle collector's share of a batch
        if phase == "start":
            collecting["since"] = time.perf_counter()
        else:
            collecting["total"] += time.perf_counter() - collecting["since"]

    gc.callbacks.append(timed_gc)

    # ACP_BENCH_TRACEMALLOC=FRAMES: after each batch, the Python memory grown since the second
    # batch, by where it was allocated (to stderr): what RSS growth is made of
    tracing = int(os.environ.get("ACP_BENCH_TRACEMALLOC", "0"))
    baseline: list[object] = []
    if tracing:
        import tracemalloc

        tracemalloc.start(tracing)

    async def go() -> None:
        serving = await serve_until_ready(manager, ready)
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                break
            if line.strip() == "drain":  # until every task is archived (archiving mode only)
                while any(kind == Kind.Task for kind, _ in manager.state.observed_keys()):
                    await asyncio.sleep(0.1)
                print(json.dumps({"drained": True}), flush=True)
                continue
            pending = set(line.split())
            started, commits0 = time.perf_counter(), manager.writer.stats.commits
            machine0 = _machine_ticks()
            first = min(pending)
            first_s = None
            cpu0 = time.process_time()
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            faults0 = usage0.ru_minflt
            threads0, children0 = _thread_cpu(), _children_cpu()
            gc0 = collecting["total"]
            # A finished task may be archived soon after: remember it finished. Every 50 ms: this
            # poll runs in the reconciler's process and its CPU is counted as the reconciler's; at
            # every 10 ms over 2,000 unfinished tasks it was a fifth of that process's time (py-spy).
            while first_s is None:  # its first checkpoint: reading main's commit is what comes before
                task = manager.state.observed(Kind.Task, first)
                if task is not None and task.status is not None:
                    first_s = time.perf_counter() - started
                await asyncio.sleep(0.002)
            while pending:
                pending = {name for name in pending if not done(name)}
                await asyncio.sleep(0.05)
            machine1 = _machine_ticks()
            threads1 = _thread_cpu()
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
            seconds = time.perf_counter() - started
            durations = list(manager.writer.stats.durations_ms)[commits0:]
            figures = {
                "seconds": seconds,
                "cpu_s": time.process_time() - cpu0,  # this process, every thread (not its git children)
                # pages the kernel had to give it (fresh or given back before): in a VM each may
                # cost the host a fault too
                "minor_faults": usage1.ru_minflt - faults0,
                # of which in the kernel on its behalf (system calls, page faults): the instruction
                # counts of `--callgrind` leave these out
                "user_s": usage1.ru_utime - usage0.ru_utime,
                "sys_s": usage1.ru_stime - usage0.ru_stime,
                "commits": len(durations),
                "commit_p50_ms": percentile(durations, 50),
                "commit_p99_ms": percentile(durations, 99),
                "gc_s": collecting["total"] - gc0,
                # by thread (the loop, the status writer, the reader of main...) and the git processes
                # it waited for (maintenance, reads of main): where a batch's CPU went
                "threads_cpu_s": {
                    name: round(seconds - threads0.get(name, 0.0), 3) for name, seconds in threads1.items()
                },
                "children_cpu_s": _children_cpu() - children0,
                "first_checkpoint_s": first_s,
                # every process's, of all cores: 1.0 is a saturated machine (another tenant, a
                # `git gc` of the parent's commits), whatever the reconciler does
                "machine_busy": 1 - (machine1[1] - machine0[1]) / max(1, machine1[0] - machine0[0]),
                "rss_mb": _rss_mb(),
                "pymalloc_mb": _pymalloc_mb(),
                "malloc_mb": _malloc_mb(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
            print(json.dumps(figures), flush=True)
            if tracing:
                _trace_growth(baseline)
        manager.stop()
        await serving

    asyncio.run(go())


def _pymalloc_mb() -> float:
    """The MB pymalloc holds in arenas (its pool of small objects, given back to the system only whole)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    for line in text.splitlines():
        if line.startswith("# arenas allocated current"):
            return int(line.split("=")[1].replace(",", "")) * 1.0  # 1 MiB arenas
    return 0.0


def _malloc_mb() -> tuple[float, float]:
    """glibc's heap: MB in use and MB free but kept (mallinfo2), outside pymalloc's arenas too."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def _trace_growth(baseline: list[object]) -> None:
    import tracemalloc

    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if len(baseline) < 2:  # the first batch warms up: compare with the second's end
        baseline.append(snapshot)
        return
    grown = snapshot.compare_to(baseline[1], "traceback")  # type: ignore[arg-type]
    total = sum(stat.size_diff for stat in grown)
    print(f"tracemalloc: {total / 1e6:+.1f} MB since the second batch", file=sys.stderr)
    for stat in grown[:12]:
        print(f"  {stat.size_diff / 1e6:+.2f} MB {stat.count_diff:+d}", file=sys.stderr)
        for line in stat.traceback.format()[-8:]:
            print("     " + line, file=sys.stderr)
    sys.stderr.flush()


def startup_child(repo: Path, secrets: Path) -> None:
    """Time one reconciler's start-up on `repo`, from `run()` to ready (recovery done), as JSON."""
    import asyncio

    from gitops_acp.llm.openai_client import OpenAIClient
    from gitops_acp.reactor.manager import Manager, ServeOptions
    from gitops_acp.secrets import SecretResolver

    manager = Manager(
        ServeOptions(repo=repo, poll_interval=0.2, retain_finished=None),
        llm=OpenAIClient(max_concurrent_requests=16),
        secrets=SecretResolver(secrets),
    )

    async def go() -> None:
        started = time.perf_counter()
        serving = asyncio.create_task(manager.run())
        while manager.readiness() is not None:
            if serving.done():
                raise SystemExit(f"serve stopped before it was ready: {serving.result()}")
            await asyncio.sleep(0.001)
        elapsed = (time.perf_counter() - started) * 1000
        manager.stop()
        await serving
        print(json.dumps({"startup_ms": elapsed, "observed": len(manager.state.observed_keys())}))

    asyncio.run(go())


def measure_startup(repo: Path, secrets: Path, runs: int = 5, *, forget: bool = False) -> dict[str, float]:
    """The median start-up of `runs` fresh reconciler processes on `repo` (each its own process);
    `forget`: each without the finished tasks' facts the one before saved (reactor/coldfacts.py)."""
    found = []
    for _ in range(runs):
        if forget:
            for saved in (repo / ".git" / "gitops-acp").glob("cold-facts-*"):
                saved.unlink()
        out = subprocess.run(
            [sys.executable, __file__, "--startup", str(repo), str(secrets)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        found.append(json.loads(out.stdout.strip().splitlines()[-1]))
    times = sorted(item["startup_ms"] for item in found)
    return {"startup_ms": times[len(times) // 2], "observed": found[-1]["observed"]}


def start_child(
    repo: Path, secrets: Path, retain: str, *, callgrind: Path | None = None
) -> subprocess.Popen[str]:
    """The reconciler's process, once its LLM and agent are Ready (under callgrind, into that folder)."""
    server = subprocess.Popen(
        [*callgrind_prefix(callgrind), sys.executable, __file__, "--child", str(repo), str(secrets), retain],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    if json.loads(server.stdout.readline()).get("ready") is not True:
        raise SystemExit("the reconciler did not become ready")
    return server


def stop_child(server: subprocess.Popen[str]) -> None:
    """Stop the reconciler's process cleanly (an empty line)."""
    assert server.stdin is not None
    server.stdin.write("\n")
    server.stdin.flush()
    server.wait(timeout=120)


def report_startup(
    repo: Path, secrets: Path, baseline: tuple[Path, Path], before: dict[str, float], last_batch: list[str]
) -> None:
    """Start-up with every task archived against start-up with none (DESIGN §9: within 1.2x).

    The same tip as at the start (the LLM and the agent: every task archived) and the same main
    (no Task files): only the archive differs. `baseline` is a repository made as `repo` was and
    never given a task; the two are timed one after the other, five times each, so both figures
    see the machine as it is at the end of the run (`before`: `repo` itself before any task ran,
    minutes earlier, printed beside them).
    """
    for name in last_batch:
        (repo / "tasks" / f"{name}.yaml").unlink(missing_ok=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "the last tasks leave main")
    empty: list[float] = []
    archived: list[float] = []
    for _ in range(5):
        empty.append(measure_startup(*baseline, runs=1)["startup_ms"])
        after = measure_startup(repo, secrets, runs=1)
        archived.append(after["startup_ms"])
    listing = git(repo, "ls-tree", "-r", "--name-only", "acp/status", "--", "archive/tasks/")
    count = len(listing.split())
    none_ms, all_ms = statistics.median(empty), statistics.median(archived)
    print(
        f"start-up to ready (medians of 5, taken alternately at the end): {none_ms:.0f} ms with nothing "
        f"archived, {all_ms:.0f} ms with {count:,} tasks archived (ratio {all_ms / none_ms:.2f}, target "
        f"<= 1.2); status files read: {before['observed']:.0f} and {after['observed']:.0f}; this "
        f"repository before its first task: {before['startup_ms']:.0f} ms"
    )


def machine_probe_ms() -> float:
    """Milliseconds of a fixed piece of pure-Python work, the fastest of 7 runs of ~5 ms: how fast
    this machine runs Python right now, at best. Taken in the parent before each batch is written,
    the reconciler idle but for its background work (archiving, maintenance's git), which a median
    would catch as well: a probe sharing a core runs at half speed. A shared machine drifts by tens
    of percent within a run (the same code's first batch took 0.98 ms of CPU a task in one run and
    1.26 ms in another two hours later): a change in the batches' figures is read against this."""
    times = []
    for _ in range(7):
        started = time.perf_counter()
        table: dict[str, dict[str, object]] = {}
        for i in range(4_000):
            name = f"task-{i:06d}"
            table[name] = {"name": name, "phase": "Succeeded", "turns": [i, i * 2, str(i)]}
        json.dumps(table)
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def python_start_ms() -> float:
    """Milliseconds `python -c pass` takes, the fastest of 3: what starting a process costs right
    now. The other half of the machine's drift: on 2026-12-07 it went from 10 to 18 ms within the
    hour while `machine_probe_ms` stayed at 6.5-7 ms, and every reader, and the reconciler's CPU a
    task, were 30-70% slower with it."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def _machine_ticks() -> tuple[int, int]:
    """All CPU time of the machine so far and its idle part, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]  # idle + iowait


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by its Python name (/proc/self/task)."""
    import threading

    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for thread in threading.enumerate():
        with contextlib.suppress(OSError):
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            name = thread.name.split(" (")[0]
            found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return found


def _children_cpu() -> float:
    """CPU seconds of the child processes this process has waited for (git, mostly)."""
    times = os.times()
    return times.children_user + times.children_system


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


#: The commands timed on one task between batches, by their figure's name; each is run READER_RUNS
#: times and its figure is the median (every run is in `--json`, as `<name>_runs`).
READERS = {
    "get_task_ms": ("get", "task"),
    "describe_ms": ("describe", "task"),
    "history_ms": ("history", "task", "{name}", "-n", "20"),
}
READER_RUNS = 3


def commit_batch(
    repo: Path, names: list[str], *, leaving: Sequence[str] = (), no_auto_gc: bool = False
) -> None:
    """Commit `names` as Task files on `repo`'s main, and remove `leaving`'s (a person's commit)."""
    for name in leaving:
        (repo / "tasks" / f"{name}.yaml").unlink()
    for name in names:
        write_task(repo / "tasks", name)
    git(repo, "add", "-A")
    no_gc = ("-c", "gc.auto=0") if no_auto_gc else ()
    message = f"{len(names)} tasks" if names else f"{len(leaving)} tasks leave main"
    git(repo, *no_gc, "commit", "-q", "-m", message)


def run_batch(server: subprocess.Popen[str], names: list[str]) -> dict[str, Any]:
    """Tell the reconciler the batch just committed; its figures once every task of it finished."""
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write(" ".join(names) + "\n")
    server.stdin.flush()
    figures: dict[str, Any] = json.loads(server.stdout.readline())
    return figures


def drain(server: subprocess.Popen[str]) -> None:
    """Wait until the reconciler has archived every task (archiving mode only)."""
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write("drain\n")
    server.stdin.flush()
    json.loads(server.stdout.readline())


def side_by_side(
    server: subprocess.Popen[str],
    repo: Path,
    tmp: Path,
    url: str,
    args: argparse.Namespace,
    *,
    first: int,
    previous: list[str],
    archiving: bool,
) -> dict[str, Any]:
    """The first day against today, both now: `args.side_by_side` rounds, each a batch on a new
    repository (made as this one was, its own reconciler, its first batch) and one more batch on this
    one, in turn (the order swapped every round). A run of 100,000 tasks lasts long enough for this
    machine's speed to drift by a third (`probe ms`, `python ms`); batches side by side see the same
    machine, so what differs between them is the tasks run before. With archiving, this repository's
    tasks are all archived before a new repository's batch runs (its reconciler idles meanwhile)."""
    found: dict[str, Any] = {"fresh": [], "grown": [], "fresh_cpu": [], "grown_cpu": []}
    batch = min(args.batch, args.total)
    probe = f"g{batch // 2:06d}"  # a task of each repository's first batch, as between batches
    for round_ in range(args.side_by_side):
        for which in ("fresh", "grown") if round_ % 2 == 0 else ("grown", "fresh"):
            if which == "fresh":
                if archiving:
                    drain(server)
                new_repo, new_secrets = make_repo(tmp / f"side-{round_}", url, 0)
                other = start_child(new_repo, new_secrets, args.retain_finished)
                try:
                    names = [f"g{i:06d}" for i in range(batch)]
                    commit_batch(new_repo, names, no_auto_gc=args.no_auto_gc)
                    figures = run_batch(other, names)
                    if not args.keep_main:  # as here, where a batch's Task files left with the next
                        commit_batch(new_repo, [], leaving=names, no_auto_gc=args.no_auto_gc)
                        time.sleep(2.0)  # its reconciler reads that commit before the readers run
                    read = readers(new_repo, probe)
                finally:
                    stop_child(other)
                shutil.rmtree(tmp / f"side-{round_}", ignore_errors=True)
            else:
                names = [f"g{first + i:06d}" for i in range(batch)]
                first += batch
                leaving = [] if args.keep_main else previous
                commit_batch(repo, names, leaving=leaving, no_auto_gc=args.no_auto_gc)
                previous = names
                figures = run_batch(server, names)
                read = readers(repo, probe)
            found[which].append(batch / figures["seconds"])
            found[f"{which}_cpu"].append(1000 * figures["cpu_s"] / batch)
            for figure in READERS:
                found.setdefault(f"{which}_{figure}", []).append(read[figure])
            where = "a new repository" if which == "fresh" else "this one"
            print(
                f"  side by side, round {round_ + 1}: {where} {batch / figures['seconds']:.0f} tasks/s, "
                f"{1000 * figures['cpu_s'] / batch:.2f} CPU ms a task; get task, describe, history -n 20 "
                + ", ".join(f"{read[figure]:.0f}" for figure in READERS)
                + " ms",
                flush=True,
            )
    found["previous"] = previous
    return found


def _listed(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


def readers(repo: Path, name: str) -> dict[str, object]:
    """The one-object readers on task `name`, each the median of READER_RUNS fresh processes run
    in turn (get, describe, history, get, ...): one run on a shared machine is now and then twice
    as slow for reasons of its own (another process's burst), which a median of three leaves out
    and the runs, kept beside it, still show."""
    runs: dict[str, list[float]] = {figure: [] for figure in READERS}
    for _ in range(READER_RUNS):
        for figure, command in READERS.items():
            args = [part.format(name=name) for part in command] if "{name}" in command else [*command, name]
            runs[figure].append(timed(repo, *args))
    found: dict[str, object] = {figure: statistics.median(times) for figure, times in runs.items()}
    found.update({f"{figure}_runs": times for figure, times in runs.items()})
    return found


def timed(repo: Path, *args: str) -> float:
    """Milliseconds one CLI command takes, start-up included; fail loudly if it fails."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    proc = subprocess.run(
        [*CLI, "--repo", str(repo), *args], capture_output=True, text=True, timeout=600, env=env
    )
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
    parser.add_argument(
        "--retain-finished",
        default="10s",
        help="serve --retain-finished: how long finished tasks stay in the tip (default 10s, so most "
        "are archived during the run; `never`: no archiving at all)",
    )
    parser.add_argument(
        "--keep-main",
        action="store_true",
        help="leave every Task file on main (default: each batch's files are removed from main in "
        "the commit that adds the next batch, as a team that lets finished Tasks go would)",
    )
    parser.add_argument(
        "--no-auto-gc",
        action="store_true",
        help="commit each batch with `-c gc.auto=0`: without it, the parent's `git commit` starts "
        "`git gc --auto` as a person's would, and once the repository holds over 50 packs that "
        "repacks all of it in the background (docs/growth.md, 'Packs and a person's git gc --auto')",
    )
    parser.add_argument(
        "--callgrind",
        type=Path,
        metavar="DIR",
        help="run the reconciler under valgrind's callgrind and print the instructions it executes "
        "per task in each batch (machine-independent; ~30x slower); its dumps go into DIR",
    )
    parser.add_argument(
        "--side-by-side",
        type=int,
        default=3,
        metavar="ROUNDS",
        help="at the end, ROUNDS times in turn: a batch on a new repository (its first, its own "
        "reconciler) and a batch on this one, so that both see the machine as it is then (default 3; "
        "0: none; not with --callgrind)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="make the repository in DIR and keep it")
    parser.add_argument("--child", nargs=3, metavar=("REPO", "SECRETS", "RETAIN"), help=argparse.SUPPRESS)
    parser.add_argument("--startup", nargs=2, metavar=("REPO", "SECRETS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return 0
    if args.startup:
        startup_child(Path(args.startup[0]), Path(args.startup[1]))
        return 0
    archiving = args.retain_finished.strip().lower() != "never"
    if args.callgrind is not None:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            raise SystemExit("--callgrind: valgrind is not installed (Debian: apt-get install valgrind)")
        args.callgrind.mkdir(parents=True, exist_ok=True)

    stub, url = start_stub()
    rows: list[dict[str, float]] = []
    side: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack:
            if args.keep is not None:
                args.keep.mkdir(parents=True)
                tmp = str(args.keep)
            else:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-growth-"))
            repo, secrets = make_repo(Path(tmp), url, 0)
            before = None
            baseline = None
            if archiving:  # start-up once the LLM and the agent are Ready, before any task ran
                warm = start_child(repo, secrets, args.retain_finished)
                stop_child(warm)
                before = measure_startup(repo, secrets)
                baseline = make_repo(Path(tmp) / "baseline", url, 0)  # never given a task
                stop_child(start_child(*baseline, args.retain_finished))
            server = start_child(repo, secrets, args.retain_finished, callgrind=args.callgrind)
            assert server.stdin is not None
            assert server.stdout is not None
            try:
                startup = timed(repo, "--help")
                print(f"machine: {os.cpu_count()} cores; CLI start-up (`--help`): {startup:.0f} ms")
                print(
                    f"--retain-finished {args.retain_finished}; Task files "
                    + ("all kept on main" if args.keep_main else "of a batch removed from main with the next")
                    + ("; the parent's commits start no `git gc --auto`" if args.no_auto_gc else "")
                )
                print(
                    "   tasks  tasks/s  commits  commit p50/p99 ms   get task  describe  history -n20"
                    "  get/describe on main  get --limit100"
                    "   RSS MB   .git MB  CPU ms/task  gc s  1st ckpt s  busy  packs  probe ms  python ms"
                    + ("  Minstr/task" if args.callgrind else "")
                )
                done = 0
                previous: list[str] = []
                while done < args.total:
                    speed, spawn = machine_probe_ms(), python_start_ms()
                    names = [f"g{done + i:06d}" for i in range(min(args.batch, args.total - done))]
                    leaving = [] if args.keep_main else previous
                    previous = names
                    commit_batch(repo, names, leaving=leaving, no_auto_gc=args.no_auto_gc)
                    if args.callgrind is not None and not rows:
                        count_instructions(server.pid, args.callgrind, None)
                    figures = run_batch(server, names)
                    if args.callgrind is not None:
                        label = f"batch {len(rows) + 1}"
                        figures["instructions"] = count_instructions(server.pid, args.callgrind, label)
                    done += len(names)
                    probe = f"g{args.batch // 2:06d}"  # of the first batch: archived later, if archiving
                    row = {
                        "tasks": done,
                        "tasks_per_s": len(names) / figures["seconds"],
                        "probe_ms": speed,
                        "python_start_ms": spawn,
                        **figures,
                        **readers(repo, probe),
                        # a task of this batch: still declared on main, its file there read too
                        "get_main_ms": timed(repo, "get", "task", names[len(names) // 2]),
                        "describe_main_ms": timed(repo, "describe", "task", names[len(names) // 2]),
                        "get_limit_ms": timed(repo, "get", "tasks", "--limit", "100"),
                        "git_mb": repository_kb(repo) / 1024,
                        "packs": len(list((repo / ".git" / "objects" / "pack").glob("pack-*.idx"))),
                        "startup_ms": startup,
                    }
                    rows.append(row)
                    print(
                        f"{done:8d} {row['tasks_per_s']:8.0f} {row['commits']:8.0f}"
                        f" {row['commit_p50_ms']:8.1f} /{row['commit_p99_ms']:7.1f}"
                        f" {row['get_task_ms']:10.0f} {row['describe_ms']:9.0f} {row['history_ms']:13.0f}"
                        f" {row['get_main_ms']:12.0f} /{row['describe_main_ms']:8.0f}"
                        f" {row['get_limit_ms']:15.0f} {row['rss_mb']:8.0f} {row['git_mb']:9.1f}"
                        f" {1000 * row['cpu_s'] / len(names):12.2f} {row['gc_s']:5.2f}"
                        f" {row['first_checkpoint_s']:11.2f} {row['machine_busy']:5.2f} {row['packs']:6d}"
                        f" {row['probe_ms']:9.1f} {row['python_start_ms']:10.1f}"
                        + (f" {row['instructions'] / len(names) / 1e6:12.2f}" if args.callgrind else ""),
                        flush=True,
                    )
                if args.side_by_side and args.callgrind is None:
                    side = side_by_side(
                        server,
                        repo,
                        Path(tmp),
                        url,
                        args,
                        first=done,
                        previous=previous,
                        archiving=archiving,
                    )
                    previous = side["previous"]
                if archiving:
                    drain(server)
                stop_child(server)
                if before is not None and baseline is not None:
                    report_startup(repo, secrets, baseline, before, previous)
                else:  # every task in the tip: start-up with their facts saved at the stop, and without
                    known = measure_startup(repo, secrets)
                    unknown = measure_startup(repo, secrets, runs=3, forget=True)
                    print(
                        f"start-up to ready with {unknown['observed']:,.0f} status files in the tip: "
                        f"{known['startup_ms']:.0f} ms (median of 5) with the finished ones' facts saved "
                        f"by the run before, {unknown['startup_ms']:.0f} ms (median of 3) without them "
                        "(every file read)"
                    )
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
    finally:
        stub.kill()
        stub.wait()
    first, last = rows[0], rows[-1]
    ratio = last["tasks_per_s"] / first["tasks_per_s"]
    cpu_ratio = first["cpu_s"] / last["cpu_s"]  # tasks per CPU second, last / first (batches are equal)
    steady = statistics.median(row["tasks_per_s"] for row in rows[1:10])
    latest = statistics.median(row["tasks_per_s"] for row in rows[-10:])
    print(
        f"last batch / first batch tasks/s: {ratio:.2f} (target >= 0.8); "
        f"tasks per CPU second: {cpu_ratio:.2f} of the first batch's; "
        f"RSS {first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB"
    )
    for figure, target in (("get_task_ms", 100), ("describe_ms", 100), ("history_ms", 50)):
        medians = [row[figure] for row in rows]
        singles = [run for row in rows for run in row[f"{figure}_runs"]]
        print(
            f"{' '.join(READERS[figure][:2])} (target <= {target} ms): medians of {READER_RUNS} "
            f"{min(medians):.0f}-{max(medians):.0f} ms (median {statistics.median(medians):.0f}), within "
            f"the target in {sum(m <= target for m in medians)} of {len(medians)} batches; single runs "
            f"{min(singles):.0f}-{max(singles):.0f} ms, {sum(r <= target for r in singles)} of {len(singles)}"
        )
    if side:
        grown, fresh = statistics.median(side["grown"]), statistics.median(side["fresh"])
        print(
            f"side by side at the end, {args.side_by_side} rounds taken alternately: a new repository's "
            f"first batch {fresh:.0f} tasks/s (median; {_listed(side['fresh'])}), this repository's next "
            f"batch {grown:.0f} ({_listed(side['grown'])}): {grown / fresh:.2f} (target >= 0.8); CPU ms a "
            f"task {statistics.median(side['fresh_cpu']):.2f} and {statistics.median(side['grown_cpu']):.2f}"
        )
        print(
            "the readers on a task of each one's first batch, side by side (medians of the rounds), "
            "a new repository against this one: "
            + "; ".join(
                f"{' '.join(READERS[figure][:2])} {statistics.median(side[f'fresh_{figure}']):.0f} and "
                f"{statistics.median(side[f'grown_{figure}']):.0f} ms"
                for figure in READERS
            )
        )
    if args.callgrind is not None:  # batches are equal: instructions per task, last / first
        counts = [row["instructions"] for row in rows]
        print(
            "instructions per task (callgrind), last batch / first batch: "
            f"{last['instructions'] / first['instructions']:.3f}; "
            f"the most of any batch / the first: {max(counts) / first['instructions']:.3f}"
        )
    print(
        f"medians of tasks/s, batches 2-10 -> the last 10: {steady:.0f} -> {latest:.0f} "
        f"({latest / steady:.2f}); the machine's Python probe, first -> last batch: "
        f"{first['probe_ms']:.1f} -> {last['probe_ms']:.1f} ms "
        f"({first['probe_ms'] / last['probe_ms']:.2f} of its first speed), medians over the same batches "
        f"{statistics.median(row['probe_ms'] for row in rows[1:10]):.1f} -> "
        f"{statistics.median(row['probe_ms'] for row in rows[-10:]):.1f} ms; `python -c pass` "
        f"{first['python_start_ms']:.1f} -> {last['python_start_ms']:.1f} ms"
    )
    # RSS after the first tenth of the run (the working set of a batch running while the one
    # before waits to be archived is reached by then) against the end, and what it is made of
    settled = rows[len(rows) // 10]
    print(
        f"RSS at {settled['tasks']:,} tasks -> at {last['tasks']:,}: {settled['rss_mb']:.0f} -> "
        f"{last['rss_mb']:.0f} MB; pymalloc's arenas {settled['pymalloc_mb']:.0f} -> "
        f"{last['pymalloc_mb']:.0f} MB, "
        f"glibc's heap in use {settled['malloc_mb'][0]:.0f} -> {last['malloc_mb'][0]:.0f} MB, "
        f"free but kept {settled['malloc_mb'][1]:.0f} -> {last['malloc_mb'][1]:.0f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
