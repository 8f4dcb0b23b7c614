"""The whole loop as it runs with GitHub: a remote repository, approval pull requests, signed webhooks.

`git daemon` on 127.0.0.1 serves the remote's bare repository; the fake forge speaks GitHub's
pull-request API over HTTP and works on that same bare repository (merging a pull request there is
a real `--no-ff` merge commit, as GitHub makes it on its side); `serve` runs against the URL with
`--http`, and the fake sends its signed `pull_request` events there. The fetch interval is ten
minutes and the forge poll interval too, so only the webhook can make a decision seen in time.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import git
from tests.e2e.conftest import (
    Remote,
    Stub,
    call,
    cli,
    remote_phase,
    serving_remote,
    stderr_of,
    task_yaml,
    tool_agent_yaml,
    wait_for,
)
from tests.e2e.test_approvals import counted, gated_server_yaml
from tests.e2e.test_forge import ALICE, TOKEN, WEBHOOK_SECRET, channel_yaml, leaks
from tests.e2e.test_remote import awaiting, toolcall_of
from tests.fakes.forges import FakeForge

pytestmark = pytest.mark.e2e


@pytest.fixture
def forge(remote: Remote) -> Iterator[FakeForge]:
    """The fake GitHub, on the remote's own repository."""
    (remote.human.secrets / "forge-token").mkdir()
    (remote.human.secrets / "forge-token" / "FORGE_TOKEN").write_text(TOKEN + "\n")
    with FakeForge(remote.bare.path, token=TOKEN) as server:
        yield server


def http_root(proc: subprocess.Popen[bytes]) -> str:
    def printed() -> str | None:
        match = re.search(r"listening on (http://[0-9.]+:\d+)", stderr_of(proc))
        return match[1] if match else None

    root: str = wait_for(printed, timeout=60, interval=0.1, what="serve --http to listen")
    return root


def test_a_pull_request_merged_on_the_forge_reaches_the_reconciler_through_the_webhook(
    remote: Remote, stub: Stub, marker: str, forge: FakeForge, tmp_path: Path
) -> None:
    tasks = ["merged", "closed", "offline"]
    counter = tmp_path / "counter"
    stub.rules(
        *[
            {"match": f"^Via GitHub {t}$", "when": "first", "toolCalls": [call("gated__count", label=t)]}
            for t in tasks
        ],
        {"when": "tool", "content": "{tool}"},
    )
    files = {
        "contactchannels/reviewers.yaml": channel_yaml("github", forge.api_url("github")),
        "mcpservers/gated.yaml": gated_server_yaml(
            "gated", marker=marker, counter=counter, channel="reviewers"
        ),
        "agents/gated.yaml": tool_agent_yaml("gated", servers=("gated",)),
        **{f"tasks/{t}.yaml": task_yaml(t, f"Via GitHub {t}", agent="gated") for t in tasks},
    }
    remote.human.commit(files, "Two tasks whose tool needs a reviewed pull request")
    remote.push()
    secret = tmp_path / "webhook-secret"
    secret.write_text(WEBHOOK_SECRET)
    slow = ("--fetch-interval", "600", "--forge-poll-interval", "600")
    with serving_remote(remote, *slow, "--http", "127.0.0.1:0", "--webhook-secret-file", str(secret)) as proc:
        forge.webhook_url, forge.webhook_secret = http_root(proc), WEBHOOK_SECRET
        wait_for(lambda: awaiting(remote, tasks), timeout=90, what="two approvals on the remote")
        names = {t: toolcall_of(remote.bare, t) for t in tasks}

        def opened() -> bool:
            return all(forge.pull_for("github", f"acp/approvals/{n}") is not None for n in names.values())

        wait_for(opened, timeout=30, what="the pull requests")
        pulls = {t: forge.pull_for("github", f"acp/approvals/{n}") for t, n in names.items()}
        assert counted(counter) == []
        time.sleep(1.0)  # settled into waiting: the next fetch and poll are ten minutes away

        merged_pull, closed_pull, offline_pull = pulls["merged"], pulls["closed"], pulls["offline"]
        assert merged_pull is not None
        assert closed_pull is not None
        assert offline_pull is not None
        forge.merge("github", merged_pull.number, by=ALICE)  # sends the signed event (merged_by: alice)
        forge.close("github", closed_pull.number)
        # Decided on a clone with the CLI and pushed: no webhook, the pull request stays open.
        git(remote.human.path, "pull", "-q", "--ff-only", "origin", "main")
        git(remote.human.path, "fetch", "-q", "origin", f"acp/approvals/{names['offline']}")
        git(remote.human.path, "branch", "-q", f"acp/approvals/{names['offline']}", "FETCH_HEAD")
        approved = cli("--repo", str(remote.human.path), "approve", names["offline"])
        assert approved.returncode == 0, approved.stderr
        remote.push()
        forge.send_webhook("github", offline_pull, secret=WEBHOOK_SECRET)  # a push event's wake-up
        wait_for(
            lambda: all(remote_phase(remote, t) == "FinalAnswer" for t in tasks),
            timeout=30,
            what="both tasks finished on the remote, woken by the webhooks",
        )
        wait_for(lambda: remote.remote_status() == remote.mirror_status(), timeout=30, what="all pushed")

        def approval_branches() -> tuple[str, str]:
            refs = "refs/heads/acp/approvals/"
            mirror = remote.cache / "mirror.git"
            return git(remote.bare.path, "for-each-ref", refs), git(mirror, "for-each-ref", refs)

        # Every call ended: its branch is deleted on the remote (a pushed deletion) and in the mirror.
        wait_for(lambda: approval_branches() == ("", ""), timeout=30, what="the approval branches deleted")
        wait_for(
            lambda: offline_pull.state == "closed", timeout=30, what="the CLI-decided pull request closed"
        )
        stderr = stderr_of(proc)
    calls = {t: (remote.bare.status("toolcalls", n) or {})["status"] for t, n in names.items()}
    assert calls["merged"]["phase"] == "Succeeded"
    assert calls["merged"]["approval"]["decidedBy"] == "alice"
    assert calls["merged"]["approval"]["decidedVia"] == "github merged_by"
    assert calls["merged"]["approval"]["pullRequest"] == merged_pull.number
    assert calls["closed"]["phase"] == "ToolCallRejected"
    assert calls["closed"]["result"] == "Rejected: closed without merging"
    assert calls["offline"]["phase"] == "Succeeded"  # no approvers: the commit author is recorded as such
    assert (calls["offline"]["approval"]["decidedBy"], calls["offline"]["approval"]["decidedVia"]) == (
        "Test Human <human@example.com>",
        "commit author",
    )
    assert sorted(counted(counter)) == ["merged", "offline"]
    assert len(forge.pulls["github"]) == 3
    assert (merged_pull.comments, closed_pull.comments) == ([], [])  # decided on the forge: left alone
    (comment,) = offline_pull.comments
    by = "Test Human <human@example.com> (commit author)"
    assert comment.startswith(f"gitops-acp: tool call `{names['offline']}` was approved by {by}")
    assert "Traceback" not in stderr
    assert TOKEN not in stderr
    assert WEBHOOK_SECRET not in stderr
    assert leaks(remote.bare, TOKEN, WEBHOOK_SECRET) == []
