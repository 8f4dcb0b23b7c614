"""TaskSchedule: slot computation (time zones, DST, deadlines, missed slots) with an injected clock,
and the controller's transitions over the real State (one commit per firing, policies, suspend,
history limits)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gitops_acp.controllers.base import Settings
from gitops_acp.controllers.kinds.task import TaskController
from gitops_acp.controllers.kinds.taskschedule import TaskScheduleController, scheduled_task_name
from gitops_acp.resources import cron
from gitops_acp.resources.loader import load_file
from gitops_acp.resources.meta import (
    ANNOTATION_SCHEDULED_TIME,
    LABEL_SCHEDULE,
    Kind,
    TaskPhase,
    parse_rfc3339,
    rfc3339,
)
from gitops_acp.resources.models import Task, TaskSchedule, TaskStatus
from tests.fakes import FakeContext, FakeLLM, final, ready

PARIS = ZoneInfo("Europe/Paris")


def at(*args: int, tz=UTC, fold: int = 0) -> float:
    return datetime(*args, tzinfo=tz, fold=fold).timestamp()


def local(ts: float, tz=PARIS) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).astimezone(tz).isoformat()


# -- slots ----------------------------------------------------------------------------------------


def test_daily_at_nine_in_paris_follows_the_wall_clock_across_a_dst_change() -> None:
    c = cron.parse("0 9 * * *", "Europe/Paris")
    t = at(2026, 3, 27, 12)
    slots = []
    for _ in range(3):
        t = c.next_after(t)
        slots.append(local(t))
    # 9:00 every day, in winter (+01:00) then in summer (+02:00): 23 hours apart across the change.
    assert slots == [
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",
        "2026-03-30T09:00:00+02:00",
    ]


def test_a_slot_in_the_skipped_hour_runs_once_right_after_it() -> None:
    c = cron.parse("30 2 * * *", "Europe/Paris")  # 02:30 does not exist on 2026-03-29
    t = c.next_after(at(2026, 3, 28, 12))
    assert local(t) == "2026-03-29T03:00:00+02:00"
    assert local(c.next_after(t)) == "2026-03-30T02:30:00+02:00"


def test_a_wall_time_repeated_when_clocks_go_back_runs_once() -> None:
    daily = cron.parse("30 2 * * *", "Europe/Paris")
    first = daily.next_after(at(2026, 10, 24, 12))
    assert local(first) == "2026-10-25T02:30:00+02:00"
    assert local(daily.next_after(first)) == "2026-10-26T02:30:00+01:00"  # not 02:30+01:00 the same night
    # Every 15 minutes stays every 15 minutes of real time through the repeated hour.
    quarter = cron.parse("*/15 * * * *", "Europe/Paris")
    t = at(2026, 10, 25, 1, 50, tz=PARIS)
    seen = []
    for _ in range(9):
        t = quarter.next_after(t)
        seen.append(local(t)[11:])
    assert seen == [
        "02:00:00+02:00",
        "02:15:00+02:00",
        "02:30:00+02:00",
        "02:45:00+02:00",
        "02:00:00+01:00",
        "02:15:00+01:00",
        "02:30:00+01:00",
        "02:45:00+01:00",
        "03:00:00+01:00",
    ]
    # The latest slot before a moment in the repeated hour is found the same way.
    assert local(daily.latest_until(at(2026, 10, 25, 2, 40, tz=PARIS, fold=1))) == "2026-10-25T02:30:00+02:00"


def test_due_runs_the_most_recent_missed_slot_only() -> None:
    c = cron.parse("*/15 * * * *")
    earliest = at(2026, 12, 5, 8, 0)  # last run at 08:00; down until 09:05
    due = c.due(now=at(2026, 12, 5, 9, 5), earliest=earliest)
    assert due.run == at(2026, 12, 5, 9, 0)  # one slot, the newest: not the four missed before it
    assert due.missed is None
    assert due.next == at(2026, 12, 5, 9, 15)


def test_due_within_and_past_the_starting_deadline() -> None:
    c = cron.parse("0 * * * *")
    earliest = at(2026, 12, 5, 6, 0)
    inside = c.due(now=at(2026, 12, 5, 9, 1), earliest=earliest, deadline=120)
    assert inside.run == at(2026, 12, 5, 9, 0)
    late = c.due(now=at(2026, 12, 5, 9, 3), earliest=earliest, deadline=120)
    assert late.run is None
    assert late.missed == at(2026, 12, 5, 9, 0)
    assert late.next == at(2026, 12, 5, 10, 0)


def test_due_nothing_before_the_first_slot_after_earliest() -> None:
    c = cron.parse("0 9 * * *", "Europe/Paris")
    now = at(2026, 12, 5, 8, 59, tz=PARIS)
    due = c.due(now=now, earliest=now - 10)
    assert (due.run, due.missed) == (None, None)
    assert local(due.next) == "2026-12-05T09:00:00+01:00"
    # A slot exactly at `earliest` is done with (it ran or was skipped).
    slot = at(2026, 12, 5, 9, 0, tz=PARIS)
    assert c.due(now=slot + 5, earliest=slot).run is None


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("61 * * * *", "out of range"),
        ("* * * *", "has 4 fields: use 5"),
        ("*/2 * * * * *", "has 6 fields: use 5"),
        ("@every 5m", "unknown schedule macro"),
        ("TZ=Europe/Paris 0 9 * * *", "set spec.timeZone instead"),
        ("", "empty schedule"),
        ("0 0 30 2 *", "never fires: no date matches it"),
    ],
)
def test_bad_schedules_are_refused(schedule: str, problem: str) -> None:
    assert problem in (cron.check_schedule(schedule) or "")


def test_macros_and_names_are_accepted() -> None:
    for schedule in ("@daily", "@hourly", "0 9 * * MON-FRI", "*/15 * * * *", "0 0 1 JAN *"):
        assert cron.check_schedule(schedule) is None, schedule


def test_the_seconds_field_is_for_tests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cron.check_schedule("*/2 * * * * *") is not None
    monkeypatch.setenv(cron.TEST_SECONDS_ENV, "1")
    assert cron.check_schedule("*/2 * * * * *") is None
    c = cron.parse("*/2 * * * * *")
    assert c.seconds
    assert c.next_after(1_800_000_001.0) == 1_800_000_002.0
    assert c.slot_id(1_800_000_002.0) == 1_800_000_002


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", " Europe/Paris", ""])
def test_bad_time_zones_are_refused(zone: str) -> None:
    assert "unknown time zone" in (cron.check_time_zone(zone) or "")


# -- the model, as `validate` reads it ------------------------------------------------------------


def test_schedule_errors_point_at_their_line() -> None:
    text = """\
apiVersion: acp.gitops.dev/v1alpha1
kind: TaskSchedule
metadata:
  name: nightly
spec:
  schedule: "0 25 * * *"
  timeZone: Europe/Pariss
  concurrencyPolicy: Sometimes
  taskTemplate:
    agentRef: {name: helper}
"""
    errors = [str(e) for e in load_file("schedules/nightly.yaml", text.encode()).errors]
    assert errors[0].startswith('schedules/nightly.yaml:6: TaskSchedule "nightly": spec.schedule: invalid')
    assert errors[1].startswith('schedules/nightly.yaml:7: TaskSchedule "nightly": spec.timeZone: unknown')
    assert errors[2].startswith('schedules/nightly.yaml:8: TaskSchedule "nightly": spec.concurrencyPolicy')
    assert "Allow" in errors[2]
    assert errors[3].startswith('schedules/nightly.yaml:9: TaskSchedule "nightly": spec.taskTemplate: ')
    assert "one of userMessage or contextWindow must be provided" in errors[3]


def test_a_schedule_name_leaves_room_for_the_slot() -> None:
    name = "s" * 53
    text = f"""\
apiVersion: acp.gitops.dev/v1alpha1
kind: TaskSchedule
metadata:
  name: {name}
spec:
  schedule: "@daily"
  taskTemplate: {{agentRef: {{name: a}}, userMessage: hi}}
"""
    errors = [str(e) for e in load_file("s.yaml", text.encode()).errors]
    assert len(errors) == 1
    assert "at most 52" in errors[0]


# -- the controller -------------------------------------------------------------------------------

LLM_YAML = """
apiVersion: acp.gitops.dev/v1alpha1
kind: LLM
metadata: {name: gpt}
spec:
  provider: openai
  apiKeyFrom: {secretKeyRef: {name: openai, key: API_KEY}}
  parameters: {model: gpt-test, baseUrl: "http://127.0.0.1:9/v1"}
"""
AGENT_YAML = """
apiVersion: acp.gitops.dev/v1alpha1
kind: Agent
metadata: {name: helper}
spec:
  llmRef: {name: gpt}
  system: You help.
"""
START = at(2026, 12, 5, 8, 58)


def schedule_yaml(extra: str = "", schedule: str = "*/15 * * * *") -> str:
    return f"""
apiVersion: acp.gitops.dev/v1alpha1
kind: TaskSchedule
metadata: {{name: report}}
spec:
  schedule: "{schedule}"
  taskTemplate:
    agentRef: {{name: helper}}
    userMessage: Write the report.
    labels: {{team: ops}}
{extra}"""


def run(coro):
    return asyncio.run(coro)


def make(extra: str = "", **kw) -> FakeContext:
    ctx = FakeContext("\n---\n".join([LLM_YAML, AGENT_YAML, schedule_yaml(extra, **kw)]), now=START)
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.Agent, "helper")
    return ctx


def reconcile(ctx: FakeContext):
    return run(TaskScheduleController().reconcile("report", ctx))


def sched(ctx: FakeContext) -> TaskSchedule:
    obj = ctx.observed(Kind.TaskSchedule, "report")
    assert isinstance(obj, TaskSchedule)
    return obj


def tasks(ctx: FakeContext) -> list[str]:
    return sorted(o.metadata.name for o in ctx.state.observed_all(Kind.Task))


def finish(ctx: FakeContext, name: str, phase: TaskPhase = TaskPhase.FinalAnswer) -> None:
    task = ctx.observed(Kind.Task, name)
    assert isinstance(task, Task)
    status = TaskStatus(phase=phase, completion_time=rfc3339(ctx.clock_value), output="done")
    ctx.observe(task.model_copy(update={"status": status}))


def test_first_reconcile_records_the_next_slot_and_asks_to_be_woken_then() -> None:
    ctx = make()
    result = reconcile(ctx)
    status = sched(ctx).status
    assert status is not None
    assert status.next_schedule_time == rfc3339(at(2026, 12, 5, 9, 0))
    assert status.last_schedule_time is None
    assert tasks(ctx) == []
    assert result.requeue_after == pytest.approx(120.0)
    assert result.progress is False  # a schedule's timer does not keep `serve --once` running
    # Nothing changed: a second reconcile commits nothing.
    before = len(ctx.checkpoints)
    reconcile(ctx)
    assert len(ctx.checkpoints) == before


def test_a_slot_creates_its_task_and_the_status_in_one_commit() -> None:
    ctx = make()
    reconcile(ctx)
    ctx.clock_value = at(2026, 12, 5, 9, 0, 1)
    result = reconcile(ctx)
    name = f"report-{int(at(2026, 12, 5, 9, 0) // 60)}"
    assert scheduled_task_name("report", cron.parse("*/15 * * * *"), at(2026, 12, 5, 9, 0)) == name
    commit = ctx.checkpoints[-1]
    assert [(o.kind, o.metadata.name) for o in commit] == [("TaskSchedule", "report"), ("Task", name)]
    task = commit[1]
    assert isinstance(task, Task)
    assert task.metadata.labels == {"team": "ops", LABEL_SCHEDULE: "report"}
    assert task.metadata.annotations[ANNOTATION_SCHEDULED_TIME] == rfc3339(at(2026, 12, 5, 9, 0))
    assert task.spec.user_message == "Write the report."
    status = sched(ctx).status
    assert status is not None
    assert status.last_schedule_time == rfc3339(at(2026, 12, 5, 9, 0))
    assert [ref.name for ref in status.active] == [name]
    assert status.next_schedule_time == rfc3339(at(2026, 12, 5, 9, 15))
    assert result.requeue_after == pytest.approx(15 * 60 - 1)
    assert (Kind.Task, name) in ctx.woken
    # Woken again within the same slot (a restart): nothing new.
    before = len(ctx.checkpoints)
    reconcile(ctx)
    assert len(ctx.checkpoints) == before
    assert tasks(ctx) == [name]


def test_the_task_runs_although_it_is_not_on_main() -> None:
    ctx = make()
    ctx.llm = FakeLLM([final("Report written.")])  # type: ignore[assignment]
    reconcile(ctx)
    ctx.clock_value = at(2026, 12, 5, 9, 0, 1)
    reconcile(ctx)
    (name,) = tasks(ctx)
    run(TaskController().reconcile(name, ctx))
    task = ctx.observed(Kind.Task, name)
    assert isinstance(task, Task)
    assert task.status is not None
    assert task.status.phase == TaskPhase.FinalAnswer  # not Cancelled as "removed from main"
    ctx.clock_value += 5
    reconcile(ctx)  # its end wakes the schedule: active[] and lastSuccessfulTime follow
    status = sched(ctx).status
    assert status is not None
    assert status.active == []
    assert status.last_successful_time == task.status.completion_time
    assert status.status_detail == f"Task {name} ended: FinalAnswer"


def test_after_downtime_only_the_most_recent_slot_runs() -> None:
    ctx = make()
    reconcile(ctx)
    ctx.clock_value = at(2026, 12, 5, 10, 7)  # 09:00 .. 10:00 missed: five slots
    reconcile(ctx)
    assert tasks(ctx) == [f"report-{int(at(2026, 12, 5, 10, 0) // 60)}"]


def test_once_fires_only_the_slots_due_when_the_run_began() -> None:
    # `serve --once` began at 09:00:30: the 09:00 slot runs; 09:15, which comes while the run is
    # still busy (its task wakes the schedule), is left for the next run, and asks for no timer.
    ctx = FakeContext(
        "\n---\n".join([LLM_YAML, AGENT_YAML, schedule_yaml()]),
        now=START,
        settings=Settings(fire_until=at(2026, 12, 5, 9, 0, 30)),
    )
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.Agent, "helper")
    reconcile(ctx)
    ctx.clock_value = at(2026, 12, 5, 9, 0, 1)
    reconcile(ctx)
    first = f"report-{int(at(2026, 12, 5, 9, 0) // 60)}"
    assert tasks(ctx) == [first]
    ctx.clock_value = at(2026, 12, 5, 9, 15, 2)
    result = reconcile(ctx)
    assert tasks(ctx) == [first]
    status = sched(ctx).status
    assert status is not None
    assert status.next_schedule_time == rfc3339(at(2026, 12, 5, 9, 15))
    assert result.requeue_after is None
    assert result.progress is False


def test_past_the_starting_deadline_a_missed_slot_is_recorded_not_run() -> None:
    ctx = make("  startingDeadlineSeconds: 60\n")
    reconcile(ctx)
    ctx.clock_value = at(2026, 12, 5, 9, 2)
    result = reconcile(ctx)
    assert tasks(ctx) == []
    status = sched(ctx).status
    assert status is not None
    assert status.last_skipped_time == rfc3339(at(2026, 12, 5, 9, 0))
    assert "more than startingDeadlineSeconds 60" in (status.status_detail or "")
    assert result.requeue_after == pytest.approx(13 * 60)
    ctx.clock_value = at(2026, 12, 5, 9, 15, 30)  # within the deadline of the next slot
    reconcile(ctx)
    assert tasks(ctx) == [f"report-{int(at(2026, 12, 5, 9, 15) // 60)}"]


def fire(ctx: FakeContext, *hm: int) -> None:
    ctx.clock_value = at(2026, 12, 5, *hm, 1)
    reconcile(ctx)


def test_forbid_skips_a_slot_while_a_task_is_unfinished() -> None:
    ctx = make("  concurrencyPolicy: Forbid\n")
    reconcile(ctx)
    fire(ctx, 9, 0)
    first = f"report-{int(at(2026, 12, 5, 9, 0) // 60)}"
    fire(ctx, 9, 15)
    assert tasks(ctx) == [first]
    status = sched(ctx).status
    assert status is not None
    assert status.last_skipped_time == rfc3339(at(2026, 12, 5, 9, 15))
    assert f"concurrencyPolicy Forbid and task {first} is unfinished" in (status.status_detail or "")
    finish(ctx, first)
    ctx.clock_value += 30
    reconcile(ctx)  # the end of the task does not run the skipped slot late
    assert tasks(ctx) == [first]
    fire(ctx, 9, 30)
    assert len(tasks(ctx)) == 2


def test_allow_runs_both() -> None:
    ctx = make()
    reconcile(ctx)
    fire(ctx, 9, 0)
    fire(ctx, 9, 15)
    assert len(tasks(ctx)) == 2
    status = sched(ctx).status
    assert status is not None
    assert len(status.active) == 2


def test_replace_cancels_the_unfinished_task_in_the_commit_that_starts_the_new_one() -> None:
    ctx = make("  concurrencyPolicy: Replace\n")
    reconcile(ctx)
    fire(ctx, 9, 0)
    first = f"report-{int(at(2026, 12, 5, 9, 0) // 60)}"
    second = f"report-{int(at(2026, 12, 5, 9, 15) // 60)}"
    fire(ctx, 9, 15)
    names = [(o.kind, o.metadata.name) for o in ctx.checkpoints[-1]]
    assert names == [("TaskSchedule", "report"), ("Task", second), ("Task", first)]
    old = ctx.observed(Kind.Task, first)
    assert isinstance(old, Task)
    assert old.status is not None
    assert old.status.phase == TaskPhase.Cancelled
    assert (
        old.status.status_detail
        == f"replaced by task {second} (TaskSchedule report, concurrencyPolicy Replace)"
    )
    status = sched(ctx).status
    assert status is not None
    assert [ref.name for ref in status.active] == [second]


def test_suspend_stops_firing_and_slots_passed_meanwhile_are_not_run_later() -> None:
    ctx = make("  suspend: true\n")
    result = reconcile(ctx)
    assert result.requeue_after is None  # no timer while suspended
    status = sched(ctx).status
    assert status is not None
    assert status.suspended
    assert status.next_schedule_time is None
    fire(ctx, 9, 0)
    assert tasks(ctx) == []
    ctx.declare(schedule_yaml("  suspend: false\n"))  # resumed at 09:07
    ctx.clock_value = at(2026, 12, 5, 9, 7)
    reconcile(ctx)
    assert tasks(ctx) == []  # 09:00 passed while suspended
    status = sched(ctx).status
    assert status is not None
    assert not status.suspended
    assert status.last_skipped_time == rfc3339(at(2026, 12, 5, 9, 0))
    fire(ctx, 9, 15)
    assert tasks(ctx) == [f"report-{int(at(2026, 12, 5, 9, 15) // 60)}"]


def test_history_limits_archive_the_oldest_finished_tasks() -> None:
    ctx = make("  successfulTasksHistoryLimit: 2\n  failedTasksHistoryLimit: 1\n")
    reconcile(ctx)
    made = []
    for i, phase in enumerate([TaskPhase.FinalAnswer] * 3 + [TaskPhase.Failed] * 2):
        fire(ctx, 9 + i // 4, (i * 15) % 60)
        name = f"report-{int(parse_rfc3339(sched(ctx).status.last_schedule_time or '') // 60)}"  # type: ignore[union-attr]
        made.append(name)
        finish(ctx, name, phase)
    reconcile(ctx)
    ok, failed = made[:3], made[3:]
    # The oldest success and the oldest failure left the tip (archived: history keeps them).
    assert (Kind.Task, ok[0]) in ctx.removed
    assert (Kind.Task, failed[0]) in ctx.removed
    assert tasks(ctx) == sorted([ok[1], ok[2], failed[1]])


def test_a_schedule_removed_from_main_fires_no_more_and_its_tasks_go_on() -> None:
    ctx = make()
    reconcile(ctx)
    fire(ctx, 9, 0)
    (name,) = tasks(ctx)
    ctx.undeclare(Kind.TaskSchedule, "report")
    ctx.clock_value = at(2026, 12, 5, 9, 16)
    result = reconcile(ctx)
    assert result.requeue_after is None
    assert (Kind.TaskSchedule, "report") in ctx.removed
    assert tasks(ctx) == [name]
    task = ctx.observed(Kind.Task, name)
    assert isinstance(task, Task)
    assert task.status is not None
    assert task.status.phase == TaskPhase.Pending  # not cancelled


# -- `get taskschedules` ---------------------------------------------------------------------------


def test_get_columns_are_a_cronjobs() -> None:
    from gitops_acp.cli import views

    now = at(2026, 12, 5, 9, 0)
    doc = {
        "metadata": {
            "name": "report",
            "annotations": {"acp.gitops.dev/first-checkpoint": rfc3339(now - 3 * 86400)},
        },
        "spec": {"schedule": "*/15 * * * *", "timeZone": "Europe/Paris", "suspend": False},
        "status": {"active": [{"name": "report-1"}], "lastScheduleTime": rfc3339(now - 45)},
    }
    rows = views.table_rows(Kind.TaskSchedule, [doc], wide=False)
    assert rows[0] == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"]
    assert rows[1][:5] == ["report", "*/15 * * * *", "Europe/Paris", "false", "1"]
    never = {"metadata": {"name": "new"}, "spec": {"schedule": "@daily"}}
    assert views.table_rows(Kind.TaskSchedule, [never], wide=False)[1] == [
        "new",
        "@daily",
        "<none>",
        "false",
        "0",
        "<none>",
        "",
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400, "3d"),
        (3 * 86400 + 7200, "3d2h"),
        (40 * 86400, "40d"),
    ],
)
def test_ages_read_like_kubectls(seconds: int, shown: str) -> None:
    from gitops_acp.cli.views import _ago

    now = 1_800_000_000.0
    assert _ago(rfc3339(now - seconds), now) == shown


def test_a_schedule_fires_on_the_shard_its_name_hashes_to() -> None:
    from gitops_acp.reactor.ownership import Ownership
    from gitops_acp.store.shards import Shard, shard_of

    ctx = make()
    state = ctx.state.desired_state
    owner = shard_of("report", 2)
    for index in range(2):
        kept = Ownership(Shard(index, 2)).mine(state)
        assert ((Kind.TaskSchedule, "report") in kept.resources) == (index == owner)
        assert (Kind.Agent, "helper") in kept.resources  # agents and LLMs are every shard's


class GatedContext(FakeContext):
    """A status writer that holds back commits of one resource until let go (a slow group commit)."""

    held: str | None = None
    gate: asyncio.Event | None = None

    async def _record(self, changes, spec_commit):  # type: ignore[no-untyped-def]
        if self.gate is not None and any(change.name == self.held for change in changes):
            await self.gate.wait()
        return await super()._record(changes, spec_commit)


def test_replace_waits_for_a_checkpoint_in_flight_then_cancels_what_it_committed() -> None:
    ctx = GatedContext(
        "\n---\n".join([LLM_YAML, AGENT_YAML, schedule_yaml("  concurrencyPolicy: Replace\n")]), now=START
    )
    ready(ctx, Kind.LLM, "gpt")
    ready(ctx, Kind.Agent, "helper")
    reconcile(ctx)
    fire(ctx, 9, 0)
    (first,) = tasks(ctx)

    async def scenario() -> None:
        ctx.held, ctx.gate = first, asyncio.Event()
        task = ctx.observed(Kind.Task, first)
        assert isinstance(task, Task)
        moved = task.model_copy(update={"status": TaskStatus(phase=TaskPhase.ReadyForLLM, turns=1)})
        landing = asyncio.ensure_future(ctx.state.checkpoint(moved))
        await asyncio.sleep(0)
        ctx.clock_value = at(2026, 12, 5, 9, 15, 1)
        result = await TaskScheduleController().reconcile("report", ctx)
        assert result.requeue_after == pytest.approx(0.05)  # nothing written while it is in flight
        assert tasks(ctx) == [first]
        ctx.gate.set()
        await landing
        await TaskScheduleController().reconcile("report", ctx)

    run(scenario())
    cancelled = ctx.observed(Kind.Task, first)
    assert isinstance(cancelled, Task)
    assert cancelled.status is not None
    assert cancelled.status.phase == TaskPhase.Cancelled
    assert cancelled.status.turns == 1  # built on the checkpoint that was in flight
    assert len(tasks(ctx)) == 2


def test_the_examples_in_the_docs_validate() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "schedules.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    schedules = [b for b in blocks if "kind: TaskSchedule" in b]
    assert len(schedules) >= 3
    for block in schedules:
        result = load_file("example.yaml", block.encode())
        assert [str(e) for e in result.errors] == []
        assert [loaded.resource.kind for loaded in result.loaded] == ["TaskSchedule"]
