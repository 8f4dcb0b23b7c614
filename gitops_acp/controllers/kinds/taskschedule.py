"""TaskSchedule controller: a Task at each slot of a cron schedule, like a Kubernetes CronJob (DESIGN §12).

    reconcile ──► the schedule's tasks (status branch, label acp.gitops.dev/schedule)
              ──► active[], lastSuccessfulTime from them
              ──► suspended? ── record it, no timer
              ──► the due slot: the most recent one after max(creation, lastScheduleTime,
                  lastSkippedTime), within startingDeadlineSeconds ── at most one
                    Forbid and a task unfinished ──► skipped (lastSkippedTime, statusDetail, a log line)
                    Replace ──► the unfinished tasks cancelled in the same commit
                    ──► ONE checkpoint: the schedule's status AND task `<schedule>-<unix minute>`
              ──► finished tasks beyond the history limits archived (DESIGN §9: history kept)
              ──► Result(requeue_after = next slot - now): the queue wakes it; nothing polls

Durability: the new task and the `lastScheduleTime` that covers its slot are one commit, so a kill
leaves both or neither, and a restart (which reconciles every schedule once: recovery) derives the
same due slot from the same committed status. The task's name is the slot's, so even a repeated
attempt finds it and creates nothing. The timer is not kept anywhere: it is re-derived from the
committed status and the spec at every reconcile, so a restart loses no wake-up.

A TaskSchedule removed from main fires no more; its status file is deleted (as `kubectl delete`
removes the object) and the tasks it made run to their end and are archived by retention.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gitops_acp.controllers.base import DONE, Context, Key, Result, forget, parse_rfc3339, rfc3339
from gitops_acp.controllers.cold import Cold, facts_of, finished_at
from gitops_acp.controllers.kinds.task import cancelled_tree
from gitops_acp.resources import lifecycle
from gitops_acp.resources.cron import Cron
from gitops_acp.resources.meta import (
    ANNOTATION_FIRST_CHECKPOINT,
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_SOURCE,
    LABEL_SCHEDULE,
    Condition,
    Kind,
    TaskPhase,
)
from gitops_acp.resources.models import (
    AnyResource,
    ConcurrencyPolicy,
    LocalObjectReference,
    ObjectMeta,
    Task,
    TaskSchedule,
    TaskScheduleStatus,
    TaskStatus,
)

__all__ = ["TaskScheduleController", "scheduled_task_name", "tasks_of"]

log = logging.getLogger("gitops_acp")

#: Seconds before Replace looks again at a task whose checkpoint is being committed.
_BUSY_RETRY = 0.05


def scheduled_task_name(schedule: str, cron: Cron, slot: float) -> str:
    """`<schedule>-<unix minute of the slot>` (`-<unix second>` in the test-only seconds form)."""
    return f"{schedule}-{cron.slot_id(slot)}"


def tasks_of(schedule: str, ctx: Context) -> list[Task]:
    """The tasks a schedule made that are in the status branch's tip, oldest slot first.

    Found by name first (`<schedule>-<digits>`, from the keys alone), so only the schedule's own
    tasks are read: finished tasks are held cold (controllers/cold.py) and stay so.
    """
    prefix = schedule + "-"
    found: list[Task] = []
    for kind, name in ctx.state.observed_keys():
        if kind != Kind.Task or not name.startswith(prefix) or not name[len(prefix) :].isdigit():
            continue
        obj = ctx.state.observed(kind, name)
        if (
            isinstance(obj, Task)
            and obj.metadata.labels.get(LABEL_SCHEDULE) == schedule
            and ANNOTATION_SOURCE not in obj.metadata.annotations
        ):
            found.append(obj)
    return sorted(found, key=_slot_of)


def _slot_of(task: Task) -> tuple[float, str]:
    text = task.metadata.annotations.get(ANNOTATION_SCHEDULED_TIME)
    try:
        return (parse_rfc3339(text) if text else 0.0, task.metadata.name)
    except ValueError:
        return (0.0, task.metadata.name)


class TaskScheduleController:
    """Creates a schedule's tasks on time, once per slot."""

    kind = Kind.TaskSchedule

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        # Its tasks wake it through their label (the reactor), not as declared dependencies.
        return ()

    async def reconcile(self, name: str, ctx: Context) -> Result:
        loaded = ctx.state.desired(Kind.TaskSchedule, name)
        if loaded is None:
            return await forget(Kind.TaskSchedule, name, ctx)
        assert isinstance(loaded.resource, TaskSchedule)
        schedule = loaded.resource
        observed = ctx.state.observed(Kind.TaskSchedule, name)
        previous = observed.status if isinstance(observed, TaskSchedule) else None
        status = previous or TaskScheduleStatus()
        tasks = tasks_of(name, ctx)
        status = _bookkeeping(status, tasks)
        if schedule.spec.suspend:
            result = await self._suspend(schedule, status, ctx)
        else:
            created = _created(observed, ctx)
            result = await self._fire(schedule, status, tasks, created, ctx)
        await _prune(schedule, ctx)
        return result

    # -- steps ----------------------------------------------------------------------------------

    async def _suspend(self, schedule: TaskSchedule, status: TaskScheduleStatus, ctx: Context) -> Result:
        """`suspend: true`: no new tasks and no timer; running tasks go on."""
        status = status.model_copy(
            update={
                "suspended": True,
                "status": Condition.Pending,
                "status_detail": "Suspended: no new tasks until spec.suspend is false",
                "next_schedule_time": None,
            }
        )
        await ctx.state.checkpoint(schedule.model_copy(update={"status": status}))
        return DONE

    async def _fire(
        self,
        schedule: TaskSchedule,
        status: TaskScheduleStatus,
        tasks: list[Task],
        created: float,
        ctx: Context,
    ) -> Result:
        """Run the due slot, if any (at most one), and ask to be woken at the next one."""
        name = schedule.metadata.name
        spec = schedule.spec
        cron = spec.cron()
        now = ctx.now()
        if ctx.settings.fire_until is not None:  # `serve --once`: only what was due when it began
            now = min(now, ctx.settings.fire_until)
        earliest = max(created, _time(status.last_schedule_time), _time(status.last_skipped_time))
        update: dict[str, object] = {"status": Condition.Ready, "suspended": False}
        if status.suspended:  # resumed: slots that passed while suspended are not run (docs/schedules.md)
            latest = cron.latest_until(now)
            if latest is not None and latest > earliest:
                update["last_skipped_time"] = rfc3339(latest)
                update["status_detail"] = (
                    f"Resumed: slot {cron.describe(latest)} passed while suspended, skipped"
                )
                log.info(
                    "TaskSchedule/%s: resumed; slot %s passed while suspended, skipped",
                    name,
                    cron.describe(latest),
                )
                earliest = latest
        due = cron.due(now=now, earliest=earliest, deadline=spec.starting_deadline_seconds)
        objects: list[AnyResource] = []
        created_task: str | None = None
        if due.missed is not None:
            late = now - due.missed
            detail = (
                f"slot {cron.describe(due.missed)} missed by {late:.0f}s, more than startingDeadlineSeconds "
                f"{spec.starting_deadline_seconds}: not run"
            )
            log.warning("TaskSchedule/%s: %s", name, detail)
            update["last_skipped_time"] = rfc3339(due.missed)
            update["status_detail"] = detail
        if due.run is not None:
            slot = due.run
            unfinished = [task for task in tasks if not lifecycle.terminal(task)]
            task_name = scheduled_task_name(name, cron, slot)
            if spec.concurrency_policy == ConcurrencyPolicy.Forbid and unfinished:
                running = ", ".join(task.metadata.name for task in unfinished)
                detail = (
                    f"slot {cron.describe(slot)} skipped: concurrencyPolicy Forbid and task {running} "
                    "is unfinished"
                )
                log.info("TaskSchedule/%s: %s", name, detail)
                update["last_skipped_time"] = rfc3339(slot)
                update["status_detail"] = detail
            else:
                if spec.concurrency_policy == ConcurrencyPolicy.Replace:
                    reason = f"replaced by task {task_name} (TaskSchedule {name}, concurrencyPolicy Replace)"
                    for task in unfinished:
                        objects += cancelled_tree(task, ctx, reason)
                    if any(ctx.state.busy((Kind(o.kind), o.metadata.name)) for o in objects):
                        # A checkpoint of one of them is being committed: cancel what it commits
                        # (its tool calls included), not the state before it. Nothing was written.
                        return Result(requeue_after=_BUSY_RETRY, progress=True)
                    unfinished = []
                if ctx.state.observed(Kind.Task, task_name) is None:
                    objects.insert(0, _new_task(schedule, task_name, slot, cron))
                    created_task = task_name
                active = sorted({t.metadata.name for t in unfinished} | {task_name})
                update["last_schedule_time"] = rfc3339(slot)
                update["active"] = [LocalObjectReference(name=n) for n in active]
                update["status_detail"] = f"Created task {task_name} for slot {cron.describe(slot)}"
        update["next_schedule_time"] = rfc3339(due.next)
        new_status = status.model_copy(update=update)
        # One commit: the schedule's status (this slot is done with) and the task (and what Replace
        # cancels). A kill leaves both or neither.
        await ctx.state.checkpoint(schedule.model_copy(update={"status": new_status}), *objects)
        if created_task is not None:
            log.info("TaskSchedule/%s: created task %s", name, created_task)
        for obj in objects:
            ctx.state.wake(Kind(obj.kind), obj.metadata.name)
        wake = due.next - ctx.now()
        if wake <= 0 and ctx.settings.fire_until is not None:
            return Result(progress=False)  # `serve --once`: that slot is the next run's
        return Result(requeue_after=max(wake, 0.0), progress=False)


# -- helpers ----------------------------------------------------------------------------------


def _time(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return parse_rfc3339(text)
    except ValueError:
        return 0.0


def _created(observed: AnyResource | None, ctx: Context) -> float:
    """When the schedule began (its first checkpoint): slots before it never run, as a CronJob's
    before its creationTimestamp. No status yet: now."""
    first = observed.metadata.annotations.get(ANNOTATION_FIRST_CHECKPOINT) if observed is not None else None
    return _time(first) if first else ctx.now()


def _bookkeeping(status: TaskScheduleStatus, tasks: list[Task]) -> TaskScheduleStatus:
    """active[] from the tasks unfinished now; lastSuccessfulTime from the newest FinalAnswer; the
    tasks that left active[] since, in statusDetail."""
    active = [LocalObjectReference(name=t.metadata.name) for t in tasks if not lifecycle.terminal(t)]
    last_success = status.last_successful_time
    for task in tasks:
        done = task.status.completion_time if task.status is not None else None
        succeeded = task.status is not None and task.status.phase == TaskPhase.FinalAnswer
        if succeeded and done and (last_success is None or _time(done) > _time(last_success)):
            last_success = done
    update: dict[str, object] = {"active": active, "last_successful_time": last_success}
    was_active = {ref.name for ref in status.active}
    ended = [t for t in tasks if t.metadata.name in was_active and lifecycle.terminal(t)]
    if ended:
        update["status_detail"] = "; ".join(
            f"Task {t.metadata.name} ended: {lifecycle.phase_of(t)}" for t in ended
        )
    return status.model_copy(update=update)


def _new_task(schedule: TaskSchedule, name: str, slot: float, cron: Cron) -> Task:
    """The task of one slot, from the template, labelled with the schedule (status branch only),
    Pending until its controller takes it (its creation reads `Task/<name>: - -> Pending`)."""
    template = schedule.spec.task_template
    labels = {**template.labels, LABEL_SCHEDULE: schedule.metadata.name}
    return Task(
        api_version=schedule.api_version,
        kind="Task",
        metadata=ObjectMeta(name=name, labels=labels, annotations={ANNOTATION_SCHEDULED_TIME: rfc3339(slot)}),
        spec=template.task_spec(),
        status=TaskStatus(
            phase=TaskPhase.Pending,
            status=Condition.Pending,
            status_detail=f"Created by TaskSchedule {schedule.metadata.name} for slot {cron.describe(slot)}",
        ),
    )


async def _prune(schedule: TaskSchedule, ctx: Context) -> None:
    """Archive the schedule's finished tasks beyond its history limits (newest kept), with their
    tool calls and sub-agent tasks, in one `archive:` commit: out of the tip, never out of history."""
    tasks = [t for t in tasks_of(schedule.metadata.name, ctx) if lifecycle.terminal(t)]
    succeeded = [t for t in tasks if t.status is not None and t.status.phase == TaskPhase.FinalAnswer]
    failed = [t for t in tasks if t not in succeeded]
    spec = schedule.spec
    extra = _beyond(succeeded, spec.successful_tasks_history_limit) + _beyond(
        failed, spec.failed_tasks_history_limit
    )
    if not extra:
        return
    made = _made_by_tasks(ctx)
    keys: list[Key] = []
    for task in extra:
        closure = _closure(task, made)
        if closure is not None:
            keys += closure
    if keys:
        await ctx.state.archive(keys)
        log.info(
            "TaskSchedule/%s: archived %d task(s) beyond its history limits: %s",
            schedule.metadata.name,
            len(extra),
            ", ".join(t.metadata.name for t in extra),
        )


def _beyond(tasks: list[Task], limit: int) -> list[Task]:
    """The oldest tasks past the newest `limit` (tasks are oldest first)."""
    return tasks[: max(len(tasks) - limit, 0)]


def _made_by_tasks(ctx: Context) -> dict[str, list[tuple[Key, bool]]]:
    """What each task and tool call made, as (key, finished): a task's tool calls, a tool call's
    child tasks. Read from the facts of cold resources: nothing is parsed."""
    made: dict[str, list[tuple[Key, bool]]] = {}
    for key, held in ctx.state.observed_entries():
        facts = held.facts if isinstance(held, Cold) else facts_of(held)
        if facts is not None and facts.owner:
            made.setdefault(facts.owner, []).append((key, facts.terminal))
    return made


def _closure(root: Task, made: dict[str, list[tuple[Key, bool]]]) -> list[Key] | None:
    """The task, its tool calls and their child tasks, recursively; None while any is unfinished or
    the answer is still being delivered to responseUrl (retention waits the same way)."""
    if not lifecycle.terminal(root) or finished_at(root) is None:
        return None
    keys: list[Key] = [(Kind.Task, root.metadata.name)]
    stack = [root.metadata.name]
    while stack:
        owner = stack.pop()
        for key, finished in made.get(owner, ()):
            if not finished:
                return None
            keys.append(key)
            stack.append(key[1])
    return keys
