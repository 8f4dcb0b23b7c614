"""Question latency: from a person's merge of an answered question branch to the model reading the answer.

    python benchmarks/bench_question.py            # 20 questions, answered one after another
    python benchmarks/bench_question.py --n 50

`serve` runs in the background on a local repository (main checked out, as a person's clone) with
the LLM stub at 0 ms. N tasks each call `team__human_contact` on a git channel, so N question
branches wait. The benchmark writes an answer on every branch first (a commit each, untimed); then,
one at a time, merges a branch with `git merge --no-ff` in the work tree and measures from the
moment it started that merge (an upper bound: it includes git's own merge) to the moment the stub received
the chat completion request carrying the answer as the tool result (its own receive time). That
span holds: noticing main moved, reading the response file, committing the ToolCall `Succeeded`,
waking the task, committing it `ReadyForLLM`, and sending the request. ACP polled every 5 s.
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
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_approval import make_human_repo, waiting_calls
from bench_tasks import ROOT, git, percentile, start_stub

SCRIPT = {
    "rules": [
        {
            "match": "^Ask",
            "when": "first",
            "toolCalls": [{"name": "team__human_contact", "arguments": {"message": "May I? ({user})"}}],
        },
        {"match": "^Ask", "when": "tool", "content": "Got: {tool}"},
    ]
}


def make_repo(base: Path, url: str, n: int) -> tuple[Path, Path]:
    """N tasks whose agent asks the git channel `team` a question."""
    resources = (
        "---\napiVersion: acp.gitops.dev/v1alpha1\nkind: ContactChannel\nmetadata: {name: team}\n"
        "spec: {type: git}\n"
        "---\napiVersion: acp.gitops.dev/v1alpha1\nkind: Agent\nmetadata: {name: bench}\n"
        "spec:\n  llmRef: {name: bench}\n  system: You ask.\n  humanContactChannels: [{name: team}]\n"
    )
    return make_human_repo(base, url, resources, {f"q-{i:03d}": f"Ask q-{i:03d}" for i in range(n)})


def question_branches(repo: Path) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/acp/questions/")
    return [line for line in out.splitlines() if line]


def answer_on_branch(repo: Path, branch: str, text: str) -> None:
    """Write `response` in the branch's file and commit it (what the person does before merging)."""
    name = branch.removeprefix("acp/questions/")
    path = repo / "responses" / f"{name}.yaml"
    git(repo, "checkout", "-q", branch)
    document = yaml.safe_load(path.read_text())
    document["spec"]["response"] = text
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    git(repo, "commit", "-q", "-am", f"Answer {name}")
    git(repo, "checkout", "-q", "main")


def answer_received_at(stub_root: str, text: str, timeout: float = 10.0) -> float:
    """The stub's receive time of the first chat request whose last message is the tool result `text`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(stub_root + "/_stub/requests", timeout=10) as response:
            records = json.loads(response.read())
        for record in records:
            messages = (record.get("body") or {}).get("messages") or []
            if messages and messages[-1].get("role") == "tool" and messages[-1].get("content") == text:
                return float(record["time"])
        time.sleep(0.002)
    raise SystemExit(f"the model never received {text!r} within {timeout} s")


def wait_for(predicate: object, what: str, timeout: float = 120.0) -> None:
    assert callable(predicate)
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def run(n: int) -> list[float]:
    script = Path(tempfile.mkdtemp(prefix="bench-acp-")) / "script.json"
    script.write_text(json.dumps(SCRIPT))
    stub, url = start_stub(script)
    latencies: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-acp-") as tmp:
            repo, secrets = make_repo(Path(tmp), url, n)
            command = ["--repo", str(repo), "serve", "--secrets-dir", str(secrets)]
            serve = subprocess.Popen(
                [sys.executable, "-m", "gitops_acp", *command], stderr=subprocess.DEVNULL
            )
            try:
                wait_for(
                    lambda: waiting_calls(repo, "AwaitingHumanInput") == n,
                    f"{n} questions awaiting an answer",
                )
                branches = question_branches(repo)
                for i, branch in enumerate(branches):
                    answer_on_branch(repo, branch, f"answer {i}")
                for i, branch in enumerate(branches):
                    # From the start of the person's merge, as bench_approval does: nothing under
                    # .git is read (`serve`'s maintenance may pack the loose ref of main).
                    merged = time.time()
                    git(repo, "merge", "-q", "--no-ff", "-m", f"Answer {branch}", branch)
                    latencies.append(
                        (answer_received_at(url.removesuffix("/v1"), f"answer {i}") - merged) * 1000
                    )
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
    parser.add_argument("--n", type=int, default=20, help="questions to answer (default: 20)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {git(ROOT, '--version')}")
    latencies = run(args.n)
    print(
        f"local repository, merge of the answered question branch -> the model reads the answer, "
        f"{len(latencies)} questions: p50 {percentile(latencies, 50):.1f} ms, "
        f"p95 {percentile(latencies, 95):.1f} ms, min {min(latencies):.1f} ms, max {max(latencies):.1f} ms, "
        f"mean {statistics.mean(latencies):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
