"""Approval latency: from a person's merge of an approval branch to the tool running, on a local repository.

    python benchmarks/bench_approval.py            # 20 approvals, decided one after another
    python benchmarks/bench_approval.py --n 50

`serve` runs in the background on a local repository (main checked out, as a person's clone) with
the LLM stub at 0 ms and the project's MCP test server behind a git approval channel. N tasks each
ask for the non-idempotent `count` tool, so N approval branches wait. Then, one at a time, the
benchmark merges a branch with `git merge --no-ff` in the work tree (what a reviewer does) and
measures from the moment it started that merge (the clock is read just before running `git merge`,
so the figure includes up to ~12 ms of git's own merge) to the moment the tool recorded its run (the MCP
server appends the label to its counter file; the benchmark watches that file's size every
millisecond and takes the time it grew). Nothing under .git is read: `serve`'s repository
maintenance (gc, pack-refs) may pack or move any of it. ACP polls approvals every 5 s; the target
here is p50 <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tasks import ROOT, git, percentile, start_stub

SCRIPT = {
    "rules": [
        {
            "match": "^Approve",
            "when": "first",
            "toolCalls": [{"name": "tools__count", "arguments": {"label": "{user}"}}],
        },
        {"match": "^Approve", "when": "tool", "content": "Counted: {tool}"},
    ]
}


def make_repo(base: Path, url: str, n: int, counter: Path) -> tuple[Path, Path]:
    """N tasks whose agent calls `tools__count`, behind the git approval channel `reviewers`."""
    resources = (
        "---\napiVersion: acp.gitops.dev/v1alpha1\nkind: ContactChannel\nmetadata: {name: reviewers}\n"
        "spec: {type: git}\n"
        "---\napiVersion: acp.gitops.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: tools}\n"
        f"spec:\n  transport: stdio\n  command: {sys.executable}\n"
        "  args: [-m, gitops_acp.testing.mcp_server]\n"
        f"  env: [{{name: ACP_TEST_COUNTER_FILE, value: '{counter}'}}]\n"
        "  approvalContactChannel: {name: reviewers}\n"
        "---\napiVersion: acp.gitops.dev/v1alpha1\nkind: Agent\nmetadata: {name: bench}\n"
        "spec:\n  llmRef: {name: bench}\n  system: You count.\n  mcpServers: [{name: tools}]\n"
    )
    return make_human_repo(base, url, resources, {f"a-{i:03d}": f"Approve a-{i:03d}" for i in range(n)})


def make_human_repo(base: Path, url: str, resources: str, tasks: dict[str, str]) -> tuple[Path, Path]:
    """A repository (main checked out, committed as a person) with the stub's LLM, `resources`, and
    one task of agent `bench` per name → user message."""
    repo, secrets = base / "repo", base / "secrets"
    (secrets / "bench").mkdir(parents=True)
    (secrets / "bench" / "API_KEY").write_text("bench-key\n")
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Reviewer")
    git(repo, "config", "user.email", "reviewer@example.com")
    (repo / "acp.yaml").write_text(
        "apiVersion: acp.gitops.dev/v1alpha1\nkind: LLM\nmetadata: {name: bench}\n"
        "spec:\n  provider: openai\n  apiKeyFrom: {secretKeyRef: {name: bench, key: API_KEY}}\n"
        f"  parameters: {{model: stub, baseUrl: '{url}'}}\n" + resources
    )
    folder = repo / "tasks"
    folder.mkdir()
    for name, message in tasks.items():
        (folder / f"{name}.yaml").write_text(
            "apiVersion: acp.gitops.dev/v1alpha1\nkind: Task\n"
            f"metadata: {{name: {name}}}\nspec:\n  agentRef: {{name: bench}}\n  userMessage: {message}\n"
        )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{len(tasks)} tasks")
    return repo, secrets


def approval_branches(repo: Path) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/acp/approvals/")
    return [line for line in out.splitlines() if line]


def waiting_calls(repo: Path, phase: str = "AwaitingHumanApproval") -> int:
    """How many tool calls are in `phase` on the status branch."""
    out = subprocess.run(
        ["git", "grep", "-l", f"phase: {phase}", "acp/status", "--", "status/toolcalls/"],
        cwd=repo,
        capture_output=True,
        text=True,
    ).stdout
    return len([line for line in out.splitlines() if line])


def wait_for(predicate: object, what: str, timeout: float = 120.0) -> None:
    assert callable(predicate)
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def tool_ran_at(counter: Path, size: int, timeout: float = 10.0) -> float:
    """The time the counter file grew past `size` (polled every millisecond)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if counter.stat().st_size > size:
                return time.time()
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    raise SystemExit("the approved tool did not run within 10 s")


def run(n: int) -> list[float]:
    script = Path(tempfile.mkdtemp(prefix="bench-acp-")) / "script.json"
    script.write_text(json.dumps(SCRIPT))
    stub, url = start_stub(script)
    latencies: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
            counter = Path(tmp) / "counter.txt"
            repo, secrets = make_repo(Path(tmp), url, n, counter)
            command = ["--repo", str(repo), "serve", "--secrets-dir", str(secrets)]
            serve = subprocess.Popen(
                [sys.executable, "-m", "gitops_acp", *command], stderr=subprocess.DEVNULL
            )
            try:
                wait_for(lambda: waiting_calls(repo) == n, f"{n} tool calls awaiting approval")
                for branch in approval_branches(repo):
                    size = counter.stat().st_size if counter.exists() else 0
                    # The clock starts when the reviewer starts the merge, not when it returns.
                    # `main` moves inside the command, and git then still runs `git maintenance run
                    # --auto` before it exits, while `serve` may already be acting on the new
                    # `main`: the time after the command would leave out part of the latency. The
                    # time before it adds the part of git's merge before `main` moves (the whole
                    # command takes ~12 ms here): an upper bound, never a flattering figure. The
                    # merge commit's committer time is in whole seconds, far too coarse for tens
                    # of ms. Nothing under .git is read: `serve`'s maintenance packs refs, so the
                    # loose ref file may not exist.
                    merged = time.time()
                    git(repo, "merge", "-q", "--no-ff", "-m", f"Approve {branch}", branch)
                    ran = tool_ran_at(counter, size)
                    latencies.append((ran - merged) * 1000)
                    time.sleep(0.1)
            finally:
                serve.terminate()
                serve.wait(10)
    finally:
        stub.terminate()
        stub.wait(10)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="approvals to decide (default: 20)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(ROOT, '--version')}")
    latencies = run(args.n)
    print(
        f"local repository, merge of the approval branch -> tool runs, {len(latencies)} approvals: "
        f"p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms, "
        f"min {min(latencies):.1f} ms, max {max(latencies):.1f} ms, mean {statistics.mean(latencies):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
