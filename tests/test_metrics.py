"""The Prometheus metrics (telemetry/metrics.py) fed by the real status writer, queue and HTTP app."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from gitops_acp.reactor import webhooks
from gitops_acp.reactor.queue import WorkQueue
from gitops_acp.reactor.remote import RemoteOptions, RemoteSync
from gitops_acp.store.status import Change, StatusWriter
from gitops_acp.telemetry import metrics
from tests.conftest import commit_files, git

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def sample(name: str, **labels: str) -> float:
    """The current value of one sample in the registry's exposition (0 when absent)."""
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def task(name: str, old: str, new: str) -> Change:
    document = {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"agentRef": {"name": "a"}, "userMessage": "hi"},
        "status": {"phase": new},
    }
    return Change(kind="Task", name=name, document=document, old_phase=old, new_phase=new)  # type: ignore[arg-type]


def toolcall(name: str, old: str, new: str, *, start: str | None = None) -> Change:
    status: dict[str, Any] = {"phase": new}
    if start is not None:
        status["startTime"] = start
    document = {
        "apiVersion": "acp.gitops.dev/v1alpha1",
        "kind": "ToolCall",
        "metadata": {"name": name},
        "spec": {
            "toolCallId": "c1",
            "taskRef": {"name": "t"},
            "toolRef": {"name": "s__t"},
            "arguments": "{}",
        },
        "status": status,
    }
    return Change(kind="ToolCall", name=name, document=document, old_phase=old, new_phase=new)  # type: ignore[arg-type]


def test_commits_and_the_tasks_gauge_follow_what_landed_and_restart_from_the_tip(repo: Path) -> None:
    async def scenario() -> tuple[float, float, float, float, float]:
        writer = StatusWriter(repo)
        await writer.start()
        commits = sample("gitops_acp_checkpoint_commits_total")
        observed = sample("gitops_acp_checkpoint_commit_seconds_count")
        await asyncio.gather(
            writer.commit([task("a", "-", "Pending")], spec_commit=""),
            writer.commit([task("b", "-", "Pending")], spec_commit=""),
        )
        await writer.commit([task("a", "Pending", "ReadyForLLM")], spec_commit="")
        await writer.commit([task("a", "ReadyForLLM", "FinalAnswer")], spec_commit="")
        await writer.commit(
            [task("a", "FinalAnswer", "FinalAnswer")], spec_commit=""
        )  # the same blob: no commit
        made = int(git(repo, "rev-list", "--count", "acp/status"))
        counted = sample("gitops_acp_checkpoint_commits_total") - commits
        timed = sample("gitops_acp_checkpoint_commit_seconds_count") - observed
        pending, final = (
            sample("gitops_acp_tasks", phase="Pending"),
            sample("gitops_acp_tasks", phase="FinalAnswer"),
        )
        await writer.close()
        return made, counted, timed, pending, final

    made, counted, timed, pending, final = run(scenario())
    assert counted == timed == made
    assert (pending, final) == (1, 1)
    assert sample("gitops_acp_tasks", phase="ReadyForLLM") == 0

    # A restart sets the gauge from the tip, whatever it said before.
    metrics.TASKS.labels("Pending").set(99)

    async def restart() -> None:
        writer = StatusWriter(repo)
        await writer.start()
        await writer.commit([task("b", "Pending", "Failed")], spec_commit="")
        await writer.close()

    run(restart())
    assert sample("gitops_acp_tasks", phase="Pending") == 0
    assert sample("gitops_acp_tasks", phase="Failed") == 1
    assert sample("gitops_acp_tasks", phase="FinalAnswer") == 1


def test_archived_and_deleted_tasks_leave_the_gauge() -> None:
    metrics.tasks_at_start([])
    metrics.committed(0.001, [task("x", "-", "FinalAnswer"), task("y", "-", "Failed")])
    metrics.committed(0.001, [task("x", "FinalAnswer", "Archived"), task("y", "Failed", "Deleted")])
    assert sample("gitops_acp_tasks", phase="FinalAnswer") == 0
    assert sample("gitops_acp_tasks", phase="Failed") == 0


def test_a_wait_for_a_person_is_timed_from_the_commit_that_began_it() -> None:
    before = sample("gitops_acp_approval_wait_seconds_count")
    slow = sample("gitops_acp_approval_wait_seconds_bucket", le="1.0")
    metrics.committed(0.001, [toolcall("c-1", "Pending", "AwaitingHumanApproval")])
    metrics.committed(0.001, [toolcall("c-1", "AwaitingHumanApproval", "ReadyToExecuteApprovedTool")])
    assert sample("gitops_acp_approval_wait_seconds_count") == before + 1
    assert sample("gitops_acp_approval_wait_seconds_bucket", le="1.0") == slow + 1  # moments, not hours
    # Begun before this process started: its status' startTime says when (two hours ago here).
    start = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 7200))
    total = sample("gitops_acp_approval_wait_seconds_sum")
    metrics.committed(0.001, [toolcall("c-2", "AwaitingHumanInput", "Succeeded", start=start)])
    assert 7190 < sample("gitops_acp_approval_wait_seconds_sum") - total < 7300
    # Archived while waiting: nobody decided, nothing observed.
    metrics.committed(0.001, [toolcall("c-3", "Pending", "AwaitingHumanApproval")])
    metrics.committed(0.001, [toolcall("c-3", "AwaitingHumanApproval", "Archived")])
    assert sample("gitops_acp_approval_wait_seconds_count") == before + 2


def test_llm_and_tool_series_and_their_labels() -> None:
    requests = sample("gitops_acp_llm_requests_total", llm="m-llm", outcome="success")
    metrics.llm_request("m-llm", 0.02, "success", prompt_tokens=10, completion_tokens=3)
    metrics.llm_request("m-llm", 0.5, "temporary_error")
    assert sample("gitops_acp_llm_requests_total", llm="m-llm", outcome="success") == requests + 1
    assert sample("gitops_acp_llm_requests_total", llm="m-llm", outcome="temporary_error") >= 1
    assert sample("gitops_acp_llm_tokens_total", llm="m-llm", type="prompt") >= 10
    assert sample("gitops_acp_llm_request_seconds_count", llm="m-llm") >= 2
    metrics.tool_call("srv", "echo", 0.01, ok=True)
    metrics.tool_call("srv", "echo", 0.01, ok=False)
    assert sample("gitops_acp_tool_calls_total", server="srv", tool="echo", outcome="error") >= 1
    assert sample("gitops_acp_tool_call_seconds_count", server="srv") >= 2


def test_queue_depth_is_read_at_scrape_time() -> None:
    async def scenario() -> tuple[float, float]:
        async def handler(key: Any) -> None:
            return None

        queue = WorkQueue(handler, concurrency=1)
        for i in range(5):
            queue.add(("Task", f"t{i}"))
        waiting = sample("gitops_acp_queue_depth")
        queue.start()
        await queue.wait_idle()
        await queue.stop()
        return waiting, sample("gitops_acp_queue_depth")

    assert run(scenario()) == (5, 0)


def test_metrics_route_beside_healthz_without_authentication() -> None:
    async def scenario() -> tuple[int, str, bytes]:
        stop = asyncio.Event()
        with webhooks.listen("127.0.0.1", 0) as sock:
            port = sock.getsockname()[1]

            async def run_until_stopped() -> int:
                await stop.wait()
                return 0

            serving = asyncio.ensure_future(webhooks.serve(run_until_stopped, lambda f, b: None, sock, None))

            def get() -> tuple[int, str, bytes]:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                            return r.status, r.headers["Content-Type"], r.read()
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)

            try:
                return await asyncio.to_thread(get)
            finally:
                stop.set()
                await serving

    status, content_type, body = run(scenario())
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    for name in (
        "gitops_acp_tasks",
        "gitops_acp_checkpoint_commits_total",
        "gitops_acp_checkpoint_commit_seconds",
        "gitops_acp_llm_requests_total",
        "gitops_acp_llm_request_seconds",
        "gitops_acp_llm_tokens_total",
        "gitops_acp_tool_calls_total",
        "gitops_acp_tool_call_seconds",
        "gitops_acp_approval_wait_seconds",
        "gitops_acp_queue_depth",
        "gitops_acp_push_failures_total",
    ):
        assert f"# TYPE {name} " in text, name


def test_rejected_pushes_are_counted(repo: Path, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(origin))
    git(tmp_path, "clone", "-q", str(origin), "human")
    human = tmp_path / "human"
    mirror = tmp_path / "cache" / "mirror.git"
    options = RemoteOptions(url=str(origin), mirror=mirror, fetch_interval=3600)
    identity = ("gitops-acp", "gitops-acp@localhost")

    async def scenario() -> tuple[int, float]:
        before = sample("gitops_acp_push_failures_total")
        sync = RemoteSync(
            options, main="main", status_branch="acp/status", identity=identity, on_change=lambda: None
        )
        await sync.start()
        writer = StatusWriter(mirror)
        writer.confirm = sync.pushed
        await writer.start()
        await writer.commit([task("t", "-", "Pending")], spec_commit="s")
        assert sample("gitops_acp_push_failures_total") == before
        git(human, "fetch", "-q", "origin")
        git(human, "checkout", "-q", "-b", "theirs", "origin/acp/status")
        commit_files(human, {"intruder.txt": "hello\n"}, "theirs")
        git(human, "push", "-q", "origin", "theirs:acp/status")
        await writer.commit(
            [task("t", "Pending", "ReadyForLLM")], spec_commit="s"
        )  # rejected, merged, pushed
        await writer.close()
        await sync.close()
        return sync.stats.rejected, sample("gitops_acp_push_failures_total") - before

    rejected, counted = run(scenario())
    assert rejected >= 1
    assert counted == rejected


def test_pushes_to_an_unreachable_remote_are_counted(repo: Path, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(origin))
    mirror = tmp_path / "cache" / "mirror.git"
    options = RemoteOptions(url=str(origin), mirror=mirror, fetch_interval=3600)

    async def scenario() -> float:
        before = sample("gitops_acp_push_failures_total")
        sync = RemoteSync(
            options, main="main", status_branch="acp/status", identity=("a", "a@b"), on_change=lambda: None
        )
        await sync.start()
        writer = StatusWriter(mirror)
        writer.confirm = sync.pushed
        await writer.start()
        origin.rename(tmp_path / "gone.git")  # the remote disappears
        pending = asyncio.ensure_future(writer.commit([task("t", "-", "Pending")], spec_commit="s"))
        deadline = time.monotonic() + 20
        while sample("gitops_acp_push_failures_total") == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        failed = sample("gitops_acp_push_failures_total") - before
        (tmp_path / "gone.git").rename(origin)  # back: the checkpoint is pushed and returns
        sync.poke()
        assert await asyncio.wait_for(pending, 30) is not None
        await writer.close()
        await sync.close()
        return failed

    assert run(scenario()) >= 1
