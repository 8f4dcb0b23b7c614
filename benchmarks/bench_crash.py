"""Crash soak: `serve` SIGKILLed again and again mid-work, then one `serve --once` must finish everything.

    python benchmarks/bench_crash.py                          # 100 rounds of 4 tasks
    python benchmarks/bench_crash.py --rounds 10 --seed 7 --json crash.json
    python benchmarks/bench_crash.py --rounds 20 --workdir /tmp/soak   # keep the repository to look at

The real CLI on a real repository in a temporary directory, the LLM stub in its own process, the
project's MCP test server over stdio. The agent's only tool is the test server's `work`: NOT
idempotent, and the server runs one call at a time (later calls queue behind the one running).
Each task's first LLM turn asks for `work` with the task's name as its label; the second answers.

Each round commits `--tasks-per-round` new tasks to `main`, starts `serve` in its own session and,
a random 0.3-1.5 s after its first checkpoint commit, SIGKILLs its process group and every process
it started (the MCP server runs in a session of its own), as Kubernetes or the OOM killer would: no
checkpoint in flight is finished, no git child survives. Tasks of earlier rounds carry on in later
ones. The delay runs from the first checkpoint, not from the launch (`--clock launch`), because
start-up (Python's imports, reading the repository) takes ~1.5 s here: counted from the launch,
nearly every kill would land before `serve` did anything. A serve that commits nothing within
`--start-timeout` (10 s) is killed then (a round without a checkpoint: a stalled serve). After the last
round one `serve --once` runs with a generous timeout; not exiting by then is a stall (it is killed
and reported).

The witness is the test server's counter file: `work` appends `start <label>` before it works and
`end <label>` after, each fsynced. Read with plain git and that file at the end:

- tasks terminal (FinalAnswer, Failed, Cancelled on `acp/status`) or not;
- tool executions (`start` lines) and the labels that started more than once (doubles: a
  non-idempotent tool run twice, which DESIGN §4 forbids);
- calls declared unknown (ToolCalls Failed with "interrupted: outcome unknown, not re-run"), split
  into those that never started (the witness has no line: the call was only queued, or not even
  sent), those cut mid-execution (a start without its end) and those that ran to their end (killed
  before the result was committed);
- calls really cut mid-execution (every label whose starts outnumber its ends);
- `git fsck`: errors or garbage make it not clean; dangling objects are normal after kills (a
  commit written whose ref move never happened) and are counted apart; lock files left in `.git`.

Targets: 0 doubles, 0 stalls (and the final serve exits 0), every task terminal, fsck clean,
unknown <= 2 x cut mid-execution (a kill cuts at most the one call the serial server is running;
a call that ended but whose result was not committed yet is unknown too, so about as many again
at most).

`--lock-every K` also leaves `refs/heads/acp/status.lock` behind after every K-th kill, as a kill
inside `git update-ref` does: random kills meet that millisecond rarely (none in 100 here).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

CLI = [sys.executable, "-m", "gitops_acp"]
API = "acp.gitops.dev/v1alpha1"
STATUS_BRANCH = "acp/status"
TERMINAL = {"FinalAnswer", "Failed", "Cancelled"}
INTERRUPTED = "interrupted: outcome unknown, not re-run"
#: The e2e tests' fast settings, and tool calls that never time out while they queue behind a
#: serial server (hundreds of calls at 0.2 s each can wait longer than the default 60 s).
SERVE_FLAGS = ["--backoff-base", "0.05", "--poll-interval", "0.2", "--tool-timeout", "600"]
#: Task names, the user messages and the `work` labels are all `soak-r<round>-t<index>`.
PREFIX = "soak-"


def soak_rules(work_seconds: float = 0.2, *, server: str = "tools") -> list[dict[str, Any]]:
    """The stub LLM's rules: the first turn calls `work` with the user message as the label."""
    return [
        {
            "match": f"^{PREFIX}",
            "when": "first",
            "toolCalls": [
                {"name": f"{server}__work", "arguments": {"label": "{user}", "seconds": work_seconds}}
            ],
        },
        {"match": f"^{PREFIX}", "when": "tool", "content": "Done: {tool}"},
    ]


def task_name(round_: int, index: int) -> str:
    return f"{PREFIX}r{round_:03d}-t{index}"


def task_yaml(name: str, agent: str) -> str:
    return (
        f"apiVersion: {API}\nkind: Task\nmetadata:\n  name: {name}\n"
        f"spec:\n  agentRef:\n    name: {agent}\n  userMessage: {name}\n"
    )


def git(cwd: Path, *args: str, timeout: float = 60) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=timeout)
    return out.stdout.strip()


# -- the scenario ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Soak:
    """Where the scenario runs: a repository whose `main` has an LLM on the stub and `agent`, whose
    MCP server (`work`) writes to `witness`; the stub answers with `soak_rules()`."""

    repo: Path
    secrets: Path
    witness: Path
    logs: Path
    agent: str
    rounds: int = 100
    tasks_per_round: int = 4
    seed: int = 1
    min_delay: float = 0.3
    max_delay: float = 1.5
    final_timeout: float = 300.0
    #: "checkpoint": the kill delay runs from the serve's first checkpoint commit (waited for at
    #: most `start_timeout`); "launch": from the process start. Python's imports and the start-up
    #: of `serve` take ~1.5 s on the 2-core development machine, so from launch nearly every kill
    #: would land before the first checkpoint and the soak would test little.
    clock: str = "checkpoint"
    start_timeout: float = 10.0
    #: After every `lock_every`-th kill (0: never), leave `refs/heads/acp/status.lock` behind, as a
    #: kill inside `git update-ref` (between its prepare and its commit) does: random kills land
    #: in that window of a millisecond or so rarely, this makes the soak meet it for sure.
    lock_every: int = 0


@dataclasses.dataclass
class Result:
    rounds: int = 0
    kills: int = 0
    locks_left: int = 0  # ref locks left behind on purpose (`lock_every`)
    serve_exited_before_kill: int = 0  # a serve that stopped by itself within its round
    early_exit_stderr: str = ""  # the last lines of the first such serve's stderr
    rounds_without_checkpoint: int = 0  # rounds whose serve committed nothing before its kill
    tasks: int = 0
    tasks_terminal: int = 0
    tasks_not_terminal: int = 0
    #: Tasks not terminal, by phase ("-": no status yet).
    not_terminal_phases: dict[str, int] = dataclasses.field(default_factory=dict)
    tool_calls: int = 0
    tool_calls_not_terminal: int = 0
    tool_executions: int = 0  # `start` lines in the witness
    tool_executions_ended: int = 0  # `end` lines
    unknown: int = 0
    unknown_never_started: int = 0
    unknown_cut: int = 0
    unknown_ran_to_end: int = 0
    failed_otherwise: int = 0  # ToolCalls Failed for another reason
    failed_otherwise_sample: str = ""
    cut_mid_execution: int = 0
    doubles: int = 0
    double_labels: list[str] = dataclasses.field(default_factory=list)
    stalls: int = 0
    final_exit_code: int | None = None
    final_seconds: float = 0.0
    final_stderr_tail: str = ""
    fsck_clean: bool = False
    fsck_problems: str = ""
    fsck_dangling: int = 0
    lock_files: list[str] = dataclasses.field(default_factory=list)
    run_seconds: float = 0.0

    def verdicts(self) -> dict[str, bool]:
        """Each target and whether it was met."""
        return {
            "0 doubles": self.doubles == 0,
            "0 stalls": self.stalls == 0,
            "final serve --once exits 0": self.final_exit_code == 0,
            "every task terminal": self.tasks_not_terminal == 0,
            "fsck clean": self.fsck_clean,
            "unknown <= 2 x cut mid-execution": self.unknown <= 2 * self.cut_mid_execution,
        }


def run_soak(soak: Soak, *, log: Callable[[str], None] = lambda _: None) -> Result:
    """Run every round, then the final `serve --once`; return what the status branch, the witness
    and `git fsck` say. Every process started here is dead when it returns."""
    result = Result()
    rng = random.Random(soak.seed)
    started = time.monotonic()
    names: list[str] = []
    for round_ in range(soak.rounds):
        batch = [task_name(round_, i) for i in range(soak.tasks_per_round)]
        names += batch
        commit_tasks(soak.repo, batch, soak.agent, f"Soak round {round_}: {len(batch)} tasks")
        before = status_tip(soak.repo)
        stderr_path = soak.logs / "serve-round.stderr"
        with serve(soak, stderr_path, once=False) as proc:
            committed = True
            if soak.clock == "checkpoint":
                committed = wait_for_checkpoint(soak, proc, before)
            if proc.poll() is None and committed:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=rng.uniform(soak.min_delay, soak.max_delay))
            if proc.poll() is None:
                kill_tree(proc)
                result.kills += 1
                if soak.lock_every and result.kills % soak.lock_every == 0:
                    result.locks_left += leave_ref_lock(soak.repo)
            else:
                result.serve_exited_before_kill += 1
                if not result.early_exit_stderr:
                    result.early_exit_stderr = f"exit {proc.returncode}: " + tail(stderr_path)
        result.rounds += 1
        if status_tip(soak.repo) == before:
            result.rounds_without_checkpoint += 1
        if (round_ + 1) % 10 == 0 or round_ + 1 == soak.rounds:
            log(
                f"round {round_ + 1}/{soak.rounds}: {result.kills} kills, "
                f"{result.rounds_without_checkpoint} rounds without a checkpoint, "
                f"{time.monotonic() - started:.0f} s"
            )

    log(f"final serve --once (timeout {soak.final_timeout:.0f} s)")
    stderr_path = soak.logs / "serve-final.stderr"
    t0 = time.monotonic()
    with serve(soak, stderr_path, once=True) as proc:
        try:
            result.final_exit_code = proc.wait(timeout=soak.final_timeout)
        except subprocess.TimeoutExpired:
            result.stalls += 1
            kill_tree(proc)
    result.final_seconds = time.monotonic() - t0
    if result.final_exit_code != 0:
        result.final_stderr_tail = tail(stderr_path)

    inspect(soak, names, result)
    result.run_seconds = time.monotonic() - started
    return result


def wait_for_checkpoint(soak: Soak, proc: subprocess.Popen[bytes], before: str | None) -> bool:
    """Wait until the status branch moves (True), `proc` exits, or `start_timeout` passes (False)."""
    deadline = time.monotonic() + soak.start_timeout
    ref = soak.repo / ".git" / "refs" / "heads" / STATUS_BRANCH
    while proc.poll() is None and time.monotonic() < deadline:
        try:  # the loose ref file: cheaper than a git process every 20 ms
            tip: str | None = ref.read_text().strip()
        except OSError:  # not created yet, or packed
            tip = status_tip(soak.repo)
        if tip != before:
            return True
        time.sleep(0.02)
    return status_tip(soak.repo) != before


def commit_tasks(repo: Path, names: list[str], agent: str, message: str) -> None:
    folder = repo / "tasks"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.yaml").write_text(task_yaml(name, agent))
    git(repo, "add", "tasks")
    git(repo, "commit", "-q", "-m", message)


@contextlib.contextmanager
def serve(soak: Soak, stderr_path: Path, *, once: bool) -> Iterator[subprocess.Popen[bytes]]:
    """`serve` in its own session (its process group is the one to kill); dead on exit."""
    argv = [*CLI, "--repo", str(soak.repo), "serve", *(["--once"] if once else [])]
    argv += ["--secrets-dir", str(soak.secrets), "--log-dir", str(soak.logs), *SERVE_FLAGS]
    with stderr_path.open("ab") as stderr:
        stderr.write(f"--- {' '.join(argv[2:])}\n".encode())
        stderr.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    try:
        yield proc
    finally:
        kill_tree(proc)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL `proc`'s process group and every process it started, as a container's end would.

    The group is frozen first (SIGSTOP) so that nothing new is spawned between listing the
    descendants and killing them; the MCP servers run in sessions of their own, so each
    descendant leading its own group has that group killed too (a server's children with it).
    """
    if proc.poll() is None:
        pgid = proc.pid  # start_new_session: serve leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGSTOP)
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(child.pid) == child.pid:
                    os.killpg(child.pid, signal.SIGKILL)
                else:
                    os.kill(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def leave_ref_lock(repo: Path) -> int:
    """Leave the status branch's ref lock, holding its tip, as a writer killed mid-update does."""
    tip = status_tip(repo)
    lock = repo / ".git" / "refs" / "heads" / f"{STATUS_BRANCH}.lock"
    if tip is None or lock.exists():
        return 0
    lock.write_text(tip + "\n")
    return 1


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def status_tip(repo: Path) -> str | None:
    out = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", f"refs/heads/{STATUS_BRANCH}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() or None


# -- what it left -----------------------------------------------------------------------------------


def status_files(repo: Path, folder: str) -> dict[str, dict[str, Any]]:
    """Every status file under `status/<folder>/` (fanned out: docs/growth.md) at the tip of the
    status branch, parsed, by resource name."""
    if status_tip(repo) is None:
        return {}
    listing = git(repo, "ls-tree", "-r", "--name-only", STATUS_BRANCH, "--", f"status/{folder}/")
    paths = [line for line in listing.splitlines() if line.endswith(".yaml")]
    if not paths:
        return {}
    out = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo,
        input="".join(f"{STATUS_BRANCH}:{path}\n" for path in paths).encode(),
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    for path in paths:
        header_end = out.index(b"\n", offset)
        size = int(out[offset:header_end].split()[2])
        name = path.rsplit("/", 1)[1].removesuffix(".yaml")
        found[name] = yaml.safe_load(out[header_end + 1 : header_end + 1 + size])
        offset = header_end + 1 + size + 1
    return found


def witness(path: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """How many times each label started, and ended, in the counter file."""
    starts: collections.Counter[str] = collections.Counter()
    ends: collections.Counter[str] = collections.Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            event, _, label = line.partition(" ")
            if event == "start":
                starts[label] += 1
            elif event == "end":
                ends[label] += 1
    return starts, ends


def label_of(call: dict[str, Any]) -> str:
    """The label the call asked `work` for (its task's name when the arguments do not parse)."""
    spec = call.get("spec") or {}
    try:
        return str(json.loads(spec.get("arguments") or "{}")["label"])
    except (ValueError, KeyError, TypeError):
        return str((spec.get("taskRef") or {}).get("name", ""))


def inspect(soak: Soak, names: list[str], result: Result) -> None:
    tasks = status_files(soak.repo, "tasks")
    result.tasks = len(names)
    phases: collections.Counter[str] = collections.Counter()
    for name in names:
        phase = ((tasks.get(name) or {}).get("status") or {}).get("phase") or "-"
        if phase in TERMINAL:
            result.tasks_terminal += 1
        else:
            phases[phase] += 1
    result.tasks_not_terminal = result.tasks - result.tasks_terminal
    result.not_terminal_phases = dict(phases)

    starts, ends = witness(soak.witness)
    result.tool_executions = sum(starts.values())
    result.tool_executions_ended = sum(ends.values())
    result.cut_mid_execution = sum(max(0, starts[label] - ends[label]) for label in starts)
    result.double_labels = sorted(label for label, n in starts.items() if n > 1)
    result.doubles = len(result.double_labels)

    calls = status_files(soak.repo, "toolcalls")
    result.tool_calls = len(calls)
    for call in calls.values():
        status = call.get("status") or {}
        phase, error = status.get("phase"), str(status.get("error") or "")
        if phase not in {"Succeeded", "Failed", "ToolCallRejected"}:
            result.tool_calls_not_terminal += 1
        if phase != "Failed":
            continue
        if INTERRUPTED not in error:
            result.failed_otherwise += 1
            result.failed_otherwise_sample = result.failed_otherwise_sample or error
            continue
        result.unknown += 1
        label = label_of(call)
        if starts[label] == 0:
            result.unknown_never_started += 1
        elif ends[label] < starts[label]:
            result.unknown_cut += 1
        else:
            result.unknown_ran_to_end += 1

    result.fsck_clean, result.fsck_problems, result.fsck_dangling = fsck(soak.repo)
    git_dir = soak.repo / ".git"
    result.lock_files = sorted(str(p.relative_to(git_dir)) for p in git_dir.rglob("*.lock"))


def fsck(repo: Path) -> tuple[bool, str, int]:
    """(clean, the lines that are not about dangling objects, how many dangling objects)."""
    try:
        out = subprocess.run(
            ["git", "fsck", "--no-progress"], cwd=repo, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return False, "git fsck did not finish within 300 s", 0
    lines = (out.stdout + out.stderr).splitlines()
    dangling = sum(1 for line in lines if line.startswith("dangling "))
    problems = [line for line in lines if line.strip() and not line.startswith("dangling ")]
    return out.returncode == 0 and not problems, "\n".join(problems), dangling


# -- report ---------------------------------------------------------------------------------------


def report(result: Result, soak: Soak) -> str:
    verdicts = result.verdicts()

    def mark(target: str) -> str:
        return f"   [target: {target}: {'met' if verdicts[target] else 'NOT MET'}]"

    lines = [
        f"rounds {result.rounds} x {soak.tasks_per_round} tasks, seed {soak.seed}, kill "
        f"{soak.min_delay}-{soak.max_delay} s after the serve's "
        + ("first checkpoint" if soak.clock == "checkpoint" else "launch")
        + f"; run time {result.run_seconds:.1f} s",
        f"kills                      {result.kills}"
        + (f" ({n} serve exited before its kill)" if (n := result.serve_exited_before_kill) else "")
        + (f", {n} of them leaving the status branch's ref lock" if (n := result.locks_left) else ""),
        f"rounds without a checkpoint {result.rounds_without_checkpoint}",
        f"tasks                      {result.tasks}",
        f"  terminal                 {result.tasks_terminal}",
        f"  not terminal             {result.tasks_not_terminal}"
        + (f" {result.not_terminal_phases}" if result.not_terminal_phases else "")
        + mark("every task terminal"),
        f"tool calls                 {result.tool_calls} ({result.tool_calls_not_terminal} not terminal)",
        f"tool executions            {result.tool_executions} started, {result.tool_executions_ended} ended",
        f"calls declared unknown     {result.unknown}: {result.unknown_never_started} never started, "
        f"{result.unknown_cut} cut, {result.unknown_ran_to_end} ran to their end"
        + mark("unknown <= 2 x cut mid-execution"),
        f"calls cut mid-execution    {result.cut_mid_execution}",
        f"calls failed otherwise     {result.failed_otherwise}"
        + (f" (e.g. {result.failed_otherwise_sample[:100]!r})" if result.failed_otherwise else ""),
        f"doubles                    {result.doubles}"
        + (f" {result.double_labels[:10]}" if result.doubles else "")
        + mark("0 doubles"),
        f"stalls                     {result.stalls}" + mark("0 stalls"),
        f"final serve --once         exit {result.final_exit_code}, {result.final_seconds:.1f} s"
        + mark("final serve --once exits 0"),
        f"git fsck                   {'clean' if result.fsck_clean else 'NOT CLEAN'}, "
        f"{result.fsck_dangling} dangling objects (normal after kills)" + mark("fsck clean"),
    ]
    if result.fsck_problems:
        lines.append("  " + result.fsck_problems.replace("\n", "\n  "))
    if result.lock_files:
        lines.append(f"lock files left            {result.lock_files}")
    if result.early_exit_stderr:
        lines.append("a serve that exited by itself:\n  " + result.early_exit_stderr.replace("\n", "\n  "))
    if result.final_stderr_tail:
        lines.append("final serve's stderr (tail):\n  " + result.final_stderr_tail.replace("\n", "\n  "))
    return "\n".join(lines)


# -- the benchmark's own repository and stub --------------------------------------------------------


def make_repo(base: Path, url: str) -> Soak:
    """repo/ (main: the LLM on the stub, the MCP server, the agent), secrets/, logs/, witness."""
    repo, secrets, logs, witness_file = base / "repo", base / "secrets", base / "logs", base / "witness"
    (secrets / "soak").mkdir(parents=True)
    (secrets / "soak" / "API_KEY").write_text("soak-key\n")
    logs.mkdir()
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Soak")
    git(repo, "config", "user.email", "soak@example.com")
    (repo / "llm.yaml").write_text(
        f"apiVersion: {API}\nkind: LLM\nmetadata: {{name: soak}}\n"
        "spec:\n  provider: openai\n  apiKeyFrom: {secretKeyRef: {name: soak, key: API_KEY}}\n"
        f"  parameters: {{model: stub, baseUrl: '{url}'}}\n"
    )
    (repo / "mcp.yaml").write_text(
        f"apiVersion: {API}\nkind: MCPServer\nmetadata: {{name: tools}}\n"
        f"spec:\n  transport: stdio\n  command: {json.dumps(sys.executable)}\n"
        '  args: ["-m", "gitops_acp.testing.mcp_server"]\n'
        f"  env:\n    - name: ACP_TEST_COUNTER_FILE\n      value: {json.dumps(str(witness_file))}\n"
    )
    (repo / "agent.yaml").write_text(
        f"apiVersion: {API}\nkind: Agent\nmetadata: {{name: soak}}\n"
        "spec:\n  llmRef: {name: soak}\n  system: You run jobs.\n  mcpServers: [{name: tools}]\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "The LLM, the MCP server and the agent")
    return Soak(repo=repo, secrets=secrets, witness=witness_file, logs=logs, agent="soak")


@contextlib.contextmanager
def stub_process(script: Path, max_seconds: float) -> Iterator[str]:
    """`gitops-acp llm-stub --port 0 --script FILE`; yield its URL; killed on exit."""
    proc = subprocess.Popen(
        [*CLI, "llm-stub", "--port", "0", "--script", str(script), "--max-seconds", str(max_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            url = lines.get(timeout=60).strip()
        except queue.Empty:
            raise SystemExit("the LLM stub did not print its URL within 60 s") from None
        if not url.startswith("http://"):
            raise SystemExit(f"the LLM stub printed {url!r} instead of its URL")
        yield url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--tasks-per-round", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-delay", type=float, default=0.3, help="earliest kill after start, seconds")
    parser.add_argument("--max-delay", type=float, default=1.5, help="latest kill after start, seconds")
    parser.add_argument(
        "--clock",
        choices=("checkpoint", "launch"),
        default="checkpoint",
        help="where the kill delay starts: the serve's first checkpoint commit (default) or its launch",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=10.0,
        help="with --clock checkpoint: kill a serve that committed nothing after this long (default: 10)",
    )
    parser.add_argument(
        "--lock-every",
        type=int,
        default=0,
        metavar="K",
        help="after every K-th kill, leave refs/heads/acp/status.lock as a kill inside git update-ref "
        "does (default: 0, never)",
    )
    parser.add_argument("--work-seconds", type=float, default=0.2, help="how long one `work` call works")
    parser.add_argument("--final-timeout", type=float, default=300.0, help="the final serve --once's limit")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--workdir", type=Path, help="run in DIR (created, kept) instead of a temp dir")
    args = parser.parse_args()
    if args.rounds < 1 or args.tasks_per_round < 1 or not 0 < args.min_delay <= args.max_delay:
        parser.error("--rounds and --tasks-per-round must be >= 1 and 0 < --min-delay <= --max-delay")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=False)
            base = args.workdir.resolve()
        else:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-crash-")))
        script = base / "script.json"
        script.write_text(json.dumps({"rules": soak_rules(args.work_seconds)}))
        budget = args.rounds * (args.max_delay + 30) + args.final_timeout + 600
        url = stack.enter_context(stub_process(script, budget))
        soak = dataclasses.replace(
            make_repo(base, url),
            rounds=args.rounds,
            tasks_per_round=args.tasks_per_round,
            seed=args.seed,
            min_delay=args.min_delay,
            max_delay=args.max_delay,
            final_timeout=args.final_timeout,
            clock=args.clock,
            start_timeout=args.start_timeout,
            lock_every=args.lock_every,
        )
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(base, '--version')}")
        result = run_soak(soak, log=log)
        print(report(result, soak))
        if args.json is not None:
            settings = {k: getattr(args, k) for k in ("rounds", "tasks_per_round", "seed", "work_seconds")}
            settings |= {"min_delay": args.min_delay, "max_delay": args.max_delay, "clock": args.clock}
            settings["lock_every"] = args.lock_every
            figures = dataclasses.asdict(result) | {"settings": settings, "targets": result.verdicts()}
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        if args.workdir is not None:
            print(f"kept: {base}")
    return 0 if all(result.verdicts().values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
