"""Which finished tasks fall due for archiving, and with what (reactor/retention.py, DESIGN §9)."""

from __future__ import annotations

from typing import Any

import pytest

from gitops_acp.errors import UserError
from gitops_acp.reactor.retention import due_groups, parse_retain
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import LABEL_PARENT_TOOLCALL, LABEL_TASK, Kind, rfc3339
from gitops_acp.resources.models import AnyResource, from_document

NOW = 1_800_000_000.0
API = "acp.gitops.dev/v1alpha1"


def task(
    name: str, phase: str, *, done: float | None = None, ttl: int | None = None, **extra: Any
) -> AnyResource:
    spec: dict[str, Any] = {"agentRef": {"name": "a"}, "userMessage": "hi"}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    status: dict[str, Any] = {"phase": phase}
    if done is not None:
        status["completionTime"] = rfc3339(done)
    status.update(extra.pop("status", {}))
    return from_document(
        {
            "apiVersion": API,
            "kind": "Task",
            "metadata": {"name": name, **extra},
            "spec": spec,
            "status": status,
        }
    )


def toolcall(name: str, task_name: str, phase: str) -> AnyResource:
    return from_document(
        {
            "apiVersion": API,
            "kind": "ToolCall",
            "metadata": {"name": name, "labels": {LABEL_TASK: task_name}},
            "spec": {
                "taskRef": {"name": task_name},
                "toolRef": {"name": "s__t"},
                "toolCallId": "call-1",
                "toolType": "MCP",
                "arguments": "{}",
            },
            "status": {"phase": phase},
        }
    )


def items(*objects: AnyResource) -> list[tuple[Key, AnyResource]]:
    return [((Kind(obj.kind), obj.metadata.name), obj) for obj in objects]


def test_a_task_falls_due_after_its_retention_with_its_calls_and_children() -> None:
    observed = items(
        task("t", "FinalAnswer", done=NOW - 100),
        toolcall("t-1", "t", "Succeeded"),
        task("child", "FinalAnswer", done=NOW - 120, labels={LABEL_PARENT_TOOLCALL: "t-1"}),
        toolcall("child-1", "child", "Succeeded"),
        task("fresh", "FinalAnswer", done=NOW - 10),
        task("running", "ReadyForLLM"),
    )
    groups, next_due = due_groups(observed, now=NOW, retain=60)
    assert [(g.root, set(g.keys)) for g in groups] == [
        (
            "t",
            {(Kind.Task, "t"), (Kind.ToolCall, "t-1"), (Kind.Task, "child"), (Kind.ToolCall, "child-1")},
        )
    ]
    assert next_due == NOW + 50  # "fresh"
    assert due_groups(observed, now=NOW, retain=None) == ([], None)  # never


def test_a_task_ttl_overrides_the_default() -> None:
    observed = items(
        task("zero", "Failed", done=NOW, ttl=0), task("long", "FinalAnswer", done=NOW - 100, ttl=3600)
    )
    groups, next_due = due_groups(observed, now=NOW, retain=60)
    assert [g.root for g in groups] == ["zero"]
    assert next_due == NOW - 100 + 3600
    groups, _ = due_groups(observed, now=NOW, retain=None)
    assert [g.root for g in groups] == ["zero"]


@pytest.mark.parametrize(
    "extra",
    [
        [toolcall("t-1", "t", "AwaitingHumanApproval")],  # a call still waiting
        [
            toolcall("t-1", "t", "Succeeded"),
            task("child", "ReadyForLLM", labels={LABEL_PARENT_TOOLCALL: "t-1"}),  # a child still running
        ],
    ],
)
def test_nothing_of_a_group_moves_while_part_of_it_is_unfinished(extra: list[AnyResource]) -> None:
    observed = items(task("t", "Cancelled", done=NOW - 1000), *extra)
    assert due_groups(observed, now=NOW, retain=0)[0] == []


def test_a_pending_delivery_or_a_busy_member_holds_the_group() -> None:
    delivering = task("d", "FinalAnswer", done=NOW - 1000, status={"delivery": {"state": "Pending"}})
    delivered = task("e", "FinalAnswer", done=NOW - 1000, status={"delivery": {"state": "Delivered"}})
    observed = items(
        delivering, delivered, task("b", "FinalAnswer", done=NOW - 1000), toolcall("b-1", "b", "Failed")
    )
    groups, _ = due_groups(observed, now=NOW, retain=0, busy=lambda key: key == (Kind.ToolCall, "b-1"))
    assert [g.root for g in groups] == ["e"]


@pytest.mark.parametrize(("text", "seconds"), [("168h", 168 * 3600), ("90s", 90), ("0", 0), ("1h30m", 5400)])
def test_retain_finished_values(text: str, seconds: float) -> None:
    assert parse_retain(text) == seconds


def test_retain_finished_never_and_bad_values() -> None:
    assert parse_retain("never") is None
    for bad in ("7x", "-1h", "", "forever"):
        with pytest.raises(UserError, match=r"^--retain-finished .*: expected a duration such as 168h"):
            parse_retain(bad)


def test_a_child_task_whose_call_is_gone_is_archived_on_its_own() -> None:
    orphan = task("orphan", "FinalAnswer", done=NOW - 100, labels={LABEL_PARENT_TOOLCALL: "gone-1"})
    groups, _ = due_groups(items(orphan), now=NOW, retain=10)
    assert [(g.root, g.keys) for g in groups] == [("orphan", ((Kind.Task, "orphan"),))]


def test_an_archived_resource_leaves_memory_and_a_late_write_of_it_is_refused() -> None:
    import asyncio
    from collections.abc import Sequence

    from gitops_acp.controllers.cold import Facts
    from gitops_acp.controllers.state import State
    from gitops_acp.errors import StaleError
    from gitops_acp.store.status import Change

    committed: list[list[Change]] = []

    async def commit(changes: Sequence[Change], spec_commit: str) -> str | None:
        committed.append(list(changes))
        return "c0ffee"

    told: list[list[tuple[str, str]]] = []

    async def scenario() -> None:
        state = State(commit, clock=lambda: NOW, on_archived=told.append, read_blob=lambda blob: b"")
        done = task("t", "FinalAnswer", done=NOW - 100)
        state.load(done)
        state.load(toolcall("t-1", "t", "Succeeded"))
        # One held cold by the blob of its file (as start-up holds one whose facts were saved).
        state.load_cold((Kind.Task, "cold"), "ab" * 20, Facts("Failed", True, None, None, NOW - 100, True))
        assert (
            await state.archive(
                [(Kind.Task, "t"), (Kind.ToolCall, "t-1"), (Kind.Task, "cold"), (Kind.Task, "unknown")]
            )
            == "c0ffee"
        )
        assert [(c.key, c.archive, c.new_phase) for c in committed[0]] == [
            ((Kind.Task, "t"), True, "Archived"),
            ((Kind.ToolCall, "t-1"), True, "Archived"),
            ((Kind.Task, "cold"), True, "Archived"),
        ]
        # What it knows the blob of is told, with its phase (read from no file: coldfacts.py keeps it).
        assert told == [[("ab" * 20, "Failed")]]
        assert state.observed(Kind.Task, "t") is None
        with pytest.raises(StaleError, match="archived"):
            await state.checkpoint(done)  # a reconcile that read it before: not written back
        assert len(committed) == 1

    asyncio.run(scenario())


def test_a_finished_task_wakes_retention_only_when_it_can_fall_due_first() -> None:
    """No pass over the tip for a task due after the group the run already waits for; one for a
    task whose own TTL is shorter, and for every task while a due group is held back."""
    import asyncio

    from gitops_acp.reactor.retention import Retention

    observed = items(task("old", "FinalAnswer", done=NOW - 100), toolcall("old-1", "old", "Succeeded"))
    busy: set[Key] = set()

    async def archive(keys: list[Key]) -> str | None:
        return "c0ffee"

    async def scenario() -> None:
        retention = Retention(
            retain=3600,
            observed=lambda: list(observed),
            archive=archive,
            busy=lambda key: key in busy,
            clock=lambda: NOW,
            on_archived=lambda roots: None,
        )
        retention.finished(task("first", "FinalAnswer", done=NOW))  # nothing known yet: a pass
        assert retention._wake.is_set()
        retention._wake.clear()
        assert await retention.pass_once() == NOW - 100 + 3600
        retention.finished(task("later", "FinalAnswer", done=NOW))  # due an hour from now: no pass
        assert not retention._wake.is_set()
        retention.finished(task("short", "FinalAnswer", done=NOW, ttl=60))  # its TTL is sooner
        assert retention._wake.is_set()
        retention._wake.clear()
        observed.append(((Kind.Task, "due"), task("due", "FinalAnswer", done=NOW - 7200)))
        busy.add((Kind.Task, "due"))
        assert await retention.pass_once() == NOW - 100 + 3600  # "due" is held: busy
        retention.finished(task("later", "FinalAnswer", done=NOW))
        assert retention._wake.is_set()  # the held group is looked at again

    asyncio.run(scenario())


def test_without_retention_nothing_passes_over_the_tip_until_a_task_with_a_ttl_finishes() -> None:
    """`--retain-finished never` and no TTL in the tip: after the start-up pass, none (not even the
    minute's, ~0.5 s of the loop's thread at 100,000 tasks) until a task that can fall due finishes;
    a TTL in the tip or a group held back keeps the timed passes."""
    import asyncio

    from gitops_acp.reactor.retention import Retention

    observed = items(task("old", "FinalAnswer", done=NOW - 100), toolcall("old-1", "old", "Succeeded"))
    passes: list[float] = []
    archived: list[list[Key]] = []
    busy: set[Key] = set()

    def listing() -> list[tuple[Key, AnyResource]]:
        passes.append(NOW)
        return list(observed)

    async def archive(keys: list[Key]) -> str | None:
        archived.append(keys)
        return "c0ffee"

    async def scenario() -> None:
        retention = Retention(
            retain=None,
            observed=listing,
            archive=archive,
            busy=lambda key: key in busy,
            clock=lambda: NOW,
            on_archived=lambda roots: None,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(retention.run(stop))
        await asyncio.sleep(0.05)
        assert len(passes) == 1
        assert retention._idle
        retention.finished(task("plain", "FinalAnswer", done=NOW))  # cannot fall due: no pass
        assert not retention._wake.is_set()
        observed.append(((Kind.Task, "short"), task("short", "FinalAnswer", done=NOW - 10, ttl=5)))
        busy.add((Kind.Task, "short"))
        retention.finished(observed[-1][1])  # its own TTL: a pass (after the second a burst waits)
        for _ in range(40):
            await asyncio.sleep(0.05)
            if len(passes) == 2:
                break
        assert len(passes) == 2
        assert not archived
        assert not retention._idle  # "short" is due and held back (busy): the timed passes go on
        busy.clear()
        assert await retention.pass_once() is None
        assert archived == [[(Kind.Task, "short")]]
        assert retention._idle
        stop.set()
        await running

    asyncio.run(scenario())
