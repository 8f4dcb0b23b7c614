"""Signed `main` (DESIGN §10): only commits signed by an allowed signer are applied.

One repository lives through the whole story, with ssh keys made by `ssh-keygen` here:
1. History from before signing is adopted by Alice's seal; her signed task runs.
2. Mallory (a key nobody allowed) and an unsigned commit add tasks; Alice signs a task on top.
   Nothing of them runs: applying stops right before the first bad commit, the earlier task keeps
   its state, `get source` names the commit and why; a restart does not adopt it either.
3. Alice reviews and seals the bad commit: everything up to her seal runs, once.
4. The reconciler signs its own approval proposal with its key; Alice merges it with a signed
   merge: main stays verified, the tool runs, and the approval records Alice's signing principal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import git
from tests.e2e.conftest import (
    API,
    AcpRepo,
    Stub,
    call,
    cli,
    mcpserver_yaml,
    module_repo,
    no_servers_left,
    one_error_line,
    serve_args,
    task_yaml,
    tool_agent_yaml,
)

pytestmark = pytest.mark.e2e


@dataclass
class Key:
    """An ssh key pair made by ssh-keygen, and the identity its owner commits as."""

    path: Path
    email: str

    @classmethod
    def make(cls, base: Path, name: str) -> Key:
        path = base / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
        )
        return cls(path=path, email=f"{name}@example.com")

    @property
    def public(self) -> str:
        return Path(f"{self.path}.pub").read_text().strip()

    def git(self, repo: Path, *args: str, sign: bool = True) -> str:
        """Run git as this person, signing what they commit (or not)."""
        config = ["-c", f"user.email={self.email}", "-c", f"user.name={self.email.split('@')[0]}"]
        if sign:
            config += [
                "-c",
                "gpg.format=ssh",
                "-c",
                f"user.signingkey={self.path}",
                "-c",
                "commit.gpgsign=true",
            ]
        env_free = [f"--author={self.email.split('@')[0]} <{self.email}>"] if args[0] == "commit" else []
        return git(repo, *config, *args, *env_free)

    def commit(self, repo: AcpRepo, files: dict[str, str], message: str, *, sign: bool = True) -> str:
        for rel, text in files.items():
            target = repo.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            git(repo.path, "add", rel)
        self.git(repo.path, "commit", "-q", "-m", message, sign=sign)
        return git(repo.path, "rev-parse", "HEAD")

    def seal(self, repo: AcpRepo, sha: str, message: str) -> str:
        self.git(repo.path, "commit", "-q", "--allow-empty", "-m", message, "--trailer", f"Acp-Seal: {sha}")
        return git(repo.path, "rev-parse", "HEAD")


@dataclass
class Story:
    repo: AcpRepo
    policy: Path
    alice: Key
    mallory: Key
    counter: Path  # the non-idempotent `count` tool appends a line per run
    shas: dict[str, str] = field(default_factory=dict)
    runs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def serve(self, step: str) -> subprocess.CompletedProcess[str]:
        result = cli(*serve_args(self.repo, "--policy", str(self.policy), once=True), timeout=120)
        self.runs[step] = result
        return result

    def source(self) -> dict[str, Any]:
        document = self.repo.status("sources", "main")
        assert document is not None, "status/sources/main.yaml is missing"
        status: dict[str, Any] = document["status"]
        return status


def _channel(name: str, approvers: list[str]) -> str:
    return (
        f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: {name}\nspec:\n  type: git\n"
        f"  git:\n    approvers: {json.dumps(approvers)}\n"
    )


@pytest.fixture(scope="module")
def story(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    base = tmp_path_factory.mktemp("signed")
    keys = base / "keys"
    keys.mkdir()
    alice, mallory, bot = Key.make(keys, "alice"), Key.make(keys, "mallory"), Key.make(keys, "reconciler")
    allowed = keys / "allowed_signers"
    allowed.write_text(f"{alice.email} {alice.public}\n{bot.email} {bot.public}\n")
    policy = base / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "mcp": {"allowedCommands": [sys.executable]},
                "signers": {
                    "allowedSignersFile": str(allowed),
                    "requireSignedMain": True,
                    "signingKey": str(bot.path),
                },
            }
        )
    )
    with no_servers_left() as marker, module_repo(stub_process, base) as (repo, _):
        stub_process.rules(
            {"match": "^Approve me", "when": "first", "toolCalls": [call("guarded__count", label="approve")]},
            {"when": "tool", "content": "{tool}"},
        )
        s = Story(repo, policy, alice, mallory, base / "counter")
        # 1. The history from before signing is adopted by a seal; then a signed task.
        s.shas["seal"] = alice.seal(repo, repo.main_sha(), "Adopt the history from before signing")
        s.shas["first"] = alice.commit(repo, {"tasks/first.yaml": task_yaml("first", "Task one")}, "first")
        s.serve("1")
        s.seen["1"] = s.source()
        # 2. An unknown signer, an unsigned commit, and a signed one on top.
        s.shas["mallory"] = mallory.commit(repo, {"tasks/evil.yaml": task_yaml("evil", "Task evil")}, "evil")
        s.shas["unsigned"] = alice.commit(
            repo, {"tasks/unsigned.yaml": task_yaml("unsigned", "Task unsigned")}, "unsigned", sign=False
        )
        s.shas["on-top"] = alice.commit(
            repo, {"tasks/on-top.yaml": task_yaml("on-top", "Task on top")}, "top"
        )
        s.serve("2")
        s.seen["2"] = s.source()
        s.seen["get source"] = cli("--repo", str(repo.path), "get", "source")
        s.serve("2 again")
        s.seen["2 again"] = s.source()
        s.seen["ran before the seal"] = {n: repo.status("tasks", n) for n in ("evil", "unsigned", "on-top")}
        s.seen["asked before the seal"] = [
            m for m in ("Task evil", "Task unsigned", "Task on top") if stub_process.chats(m)
        ]
        # 3. Alice reviews what Mallory and the unsigned commit did, and seals them.
        s.shas["recover"] = alice.seal(repo, s.shas["unsigned"], "Reviewed: adopt evil and unsigned")
        s.serve("3")
        s.seen["3"] = s.source()
        # 4. An approval under signed main: the reconciler signs its proposal, Alice signs the merge.
        alice.commit(
            repo,
            {
                "contactchannels/reviewers.yaml": _channel("reviewers", [alice.email]),
                "mcpservers/guarded.yaml": mcpserver_yaml("guarded", marker=marker, counter=s.counter)
                + "  approvalContactChannel:\n    name: reviewers\n",
                "agents/guarded.yaml": tool_agent_yaml("guarded", servers=("guarded",)),
                "tasks/approve.yaml": task_yaml("approve", "Approve me", agent="guarded"),
            },
            "a task whose tool needs approval",
        )
        s.serve("4 ask")
        branches = git(repo.path, "for-each-ref", "--format=%(refname:short)", "refs/heads/acp/approvals/")
        s.seen["branches"] = branches.split()
        if s.seen["branches"]:
            branch = s.seen["branches"][0]
            s.seen["proposal verdict"] = git(
                repo.path,
                "-c",
                f"gpg.ssh.allowedSignersFile={allowed}",
                "log",
                "-1",
                "--format=%G? %GS",
                branch,
            )
            alice.git(repo.path, "merge", "-q", "--no-ff", "-m", f"Approve {branch}", branch)
            s.serve("4 decide")
        s.seen["4"] = s.source()
        yield s


def test_a_signed_history_applies_and_runs(story: Story) -> None:
    assert story.runs["1"].returncode == 0, story.runs["1"].stderr
    source = story.seen["1"]
    assert source["status"] == "Ready"
    assert source["verified"] is True
    assert source["appliedCommit"] == story.shas["first"] == source["headCommit"]
    assert "alice@example.com" in source["signedBy"]
    assert story.repo.phase("first") == "FinalAnswer"


def test_an_unverified_commit_stops_applying_right_before_it(story: Story) -> None:
    source = story.seen["2"]
    assert source["status"] == "Error"
    assert source["appliedCommit"] == story.shas["first"]  # the last verified commit keeps running
    assert source["headCommit"] == story.shas["on-top"]
    assert source["blockedCommit"] == story.shas["mallory"]
    assert "signed by a key that is not an allowed signer" in source["statusDetail"]
    assert f"Acp-Seal: {story.shas['mallory']}" in source["statusDetail"]
    stderr = story.runs["2"].stderr
    assert f"commit {story.shas['mallory'][:12]}" in stderr  # said once in the log, as an error
    # Neither the bad commits nor the signed one on top were applied: none of their tasks ran.
    # (They were applied in step 3: what they had before is recorded in the step-2 source only.)
    assert story.repo.phase("first") == "FinalAnswer"


def test_a_signed_commit_on_top_does_not_adopt_the_bad_one_even_after_a_restart(story: Story) -> None:
    again = story.seen["2 again"]
    assert again["appliedCommit"] == story.shas["first"]
    assert again["blockedCommit"] == story.shas["mallory"]
    # Nothing of step 2 ran in either run: its tasks had no status and the model was not asked.
    assert story.seen["ran before the seal"] == {"evil": None, "unsigned": None, "on-top": None}
    assert story.seen["asked before the seal"] == []


def test_get_source_says_which_commit_and_why(story: Story) -> None:
    result = story.seen["get source"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["NAME", "BRANCH", "STATUS", "VERIFIED", "APPLIED", "HEAD"]
    assert lines[1].split()[:6] == [
        "main",
        "main",
        "Error",
        "true",
        story.shas["first"][:12],
        story.shas["on-top"][:12],
    ]
    assert f"commit {story.shas['mallory'][:12]}" in lines[1]


def test_a_signed_seal_adopts_the_reviewed_commits_and_they_run_once(story: Story) -> None:
    assert story.runs["3"].returncode == 0, story.runs["3"].stderr
    source = story.seen["3"]
    assert source["status"] == "Ready"
    assert source["appliedCommit"] == story.shas["recover"]
    assert "blockedCommit" not in source
    for name in ("evil", "unsigned", "on-top"):
        assert story.repo.phase(name) == "FinalAnswer", name
        runs = [t for t in story.repo.transitions("Task", name) if t[1] == "FinalAnswer"]
        assert len(runs) == 1


def test_the_reconcilers_proposal_is_signed_and_a_signed_merge_approves(story: Story) -> None:
    assert story.seen["branches"], story.runs["4 ask"].stderr
    verdict = story.seen["proposal verdict"]
    assert verdict == "G reconciler@example.com"
    source = story.seen["4"]
    assert source["status"] == "Ready", source
    assert story.repo.phase("approve") == "FinalAnswer"
    calls = [c for c in _toolcalls(story) if c["spec"]["taskRef"]["name"] == "approve"]
    assert len(calls) == 1
    assert calls[0]["status"]["phase"] == "Succeeded"
    # The merge's author is "Test Human" (the environment's identity): the signature names Alice.
    approval = calls[0]["status"]["approval"]
    assert (approval["decidedBy"], approval["decidedVia"]) == ("alice@example.com", "ssh signature")
    assert story.counter.read_text().split() == ["approve"]  # the tool ran once


def test_a_bad_signers_section_is_one_line(story: Story, tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("signers:\n  requireSignedMain: true\n")
    result = cli(*serve_args(story.repo, "--policy", str(bad), once=True))
    assert one_error_line(result) == (
        f"error: --policy {bad}: signers.requireSignedMain: set signers.allowedSignersFile (ssh) "
        "or signers.gpgHome (gpg): nobody could sign"
    )


def _toolcalls(story: Story) -> list[dict[str, Any]]:
    listing = git(story.repo.path, "ls-tree", "-r", "--name-only", "acp/status", "status/toolcalls")
    documents = []
    for path in listing.split():
        documents.append(yaml.safe_load(git(story.repo.path, "show", f"acp/status:{path}")))
    return documents
