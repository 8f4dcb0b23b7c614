"""The `TaskSchedule` kind: a Task made from a template at each slot of a cron schedule (DESIGN §12).

Modelled on Kubernetes' CronJob (same field names where they apply: `schedule`, `timeZone`,
`concurrencyPolicy`, `startingDeadlineSeconds`, `suspend`, the two history limits; `taskTemplate`
for `jobTemplate`). Each firing creates Task `<schedule>-<unix minute of the slot>` on the status
branch, so a schedule's name is at most 52 characters (as a CronJob's: its Jobs append 11).
The cron expression and the time zone are checked here, so `validate` reports them with their line.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from gitops_acp.resources import cron
from gitops_acp.resources.common import (
    Int,
    LocalObjectReference,
    Message,
    Resource,
    SpecModel,
    StatusModel,
)
from gitops_acp.resources.kinds.task import TaskSpec
from gitops_acp.resources.meta import Condition

__all__ = [
    "SCHEDULE_NAME_MAX_LENGTH",
    "ConcurrencyPolicy",
    "TaskSchedule",
    "TaskScheduleSpec",
    "TaskScheduleStatus",
    "TaskTemplate",
]

#: 63 less the longest suffix a task of the schedule gets (`-<unix second>`, 11 characters).
SCHEDULE_NAME_MAX_LENGTH = 52


class ConcurrencyPolicy(StrEnum):
    """What a slot does while an earlier task of the schedule is unfinished (CronJob's names)."""

    Allow = "Allow"  # run both
    Forbid = "Forbid"  # skip the new slot (recorded in status.lastSkippedTime)
    Replace = "Replace"  # cancel the unfinished task(s), then run the new one


class TaskTemplate(SpecModel):
    """The Task each firing creates: a Task's spec, plus labels for it."""

    agent_ref: LocalObjectReference
    """The Agent that runs each task."""
    user_message: str | None = None
    """The question each task asks."""
    context_window: list[Message] = Field(default_factory=list)
    """A starting conversation instead of userMessage."""
    contact_channel_ref: LocalObjectReference | None = None
    """A channel that also receives each final answer."""
    response_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("responseUrl", "responseURL", "response_url"),
        serialization_alias="responseUrl",
    )
    """A URL each final answer is POSTed to."""
    ttl_seconds_after_finished: Int | None = Field(default=None, ge=0)
    """As a Task's: how long a finished task stays in the status branch's tip (DESIGN §9)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels put on each task (beside `acp.gitops.dev/schedule`)."""

    @model_validator(mode="after")
    def _one_input(self) -> TaskTemplate:
        self.task_spec()  # the Task's own rules (exactly one of userMessage or contextWindow), its words
        return self

    def task_spec(self) -> TaskSpec:
        """The spec of a task made from this template."""
        return TaskSpec(
            agent_ref=self.agent_ref,
            user_message=self.user_message,
            context_window=list(self.context_window),
            contact_channel_ref=self.contact_channel_ref,
            response_url=self.response_url,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
        )


class TaskScheduleSpec(SpecModel):
    """When to create a task, from which template, and what to do when slots meet."""

    schedule: str
    """5-field cron (minute hour day-of-month month day-of-week) or a macro such as `@daily`."""
    time_zone: str | None = None
    """An IANA time zone (`Europe/Paris`) the schedule is read in; default UTC."""
    task_template: TaskTemplate
    """The Task each firing creates."""
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.Allow
    """Allow, Forbid or Replace (see ConcurrencyPolicy)."""
    starting_deadline_seconds: Int | None = Field(default=None, ge=0)
    """A slot missed (downtime, suspension ended) runs only if at most this late; unset: however late."""
    suspend: bool = False
    """true: no new tasks (those running go on); slots passed while suspended are not run later."""
    successful_tasks_history_limit: Int = Field(default=3, ge=0)
    """Finished tasks (FinalAnswer) kept in the status branch's tip; older ones are archived."""
    failed_tasks_history_limit: Int = Field(default=1, ge=0)
    """Failed or Cancelled tasks kept in the tip; older ones are archived."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        problem = cron.check_schedule(schedule)
        if problem is not None:
            raise ValueError(problem)
        return schedule.strip()

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, time_zone: str | None) -> str | None:
        if time_zone is not None:
            problem = cron.check_time_zone(time_zone)
            if problem is not None:
                raise ValueError(problem)
        return time_zone

    def cron(self) -> cron.Cron:
        """The schedule parsed in its time zone."""
        return cron.parse(self.schedule, self.time_zone)


class TaskScheduleStatus(StatusModel):
    """What the schedule did: its last firing, its unfinished tasks, its last success."""

    status: Condition | None = None
    """Ready (scheduling), Pending (suspended) or Error."""
    status_detail: str | None = None
    """What happened last, in words (a slot skipped and why, the next slot)."""
    last_schedule_time: str | None = None
    """The slot of the last task created (RFC 3339), as a CronJob's."""
    active: list[LocalObjectReference] = Field(default_factory=list)
    """The schedule's unfinished tasks."""
    last_successful_time: str | None = None
    """When the newest task that reached FinalAnswer finished."""
    next_schedule_time: str | None = None
    """The next slot (unset while suspended)."""
    last_skipped_time: str | None = None
    """The last slot not run: Forbid with a task unfinished, past startingDeadlineSeconds, or suspended."""
    suspended: bool = False
    """Whether the reconciler applied `suspend: true` (slots passed meanwhile are skipped on resume)."""


class TaskSchedule(Resource):
    """A `TaskSchedule` resource."""

    kind: Literal["TaskSchedule"] = "TaskSchedule"
    spec: TaskScheduleSpec
    status: TaskScheduleStatus | None = None

    @field_validator("metadata")
    @classmethod
    def _short_name(cls, metadata: object) -> object:
        name = getattr(metadata, "name", "")
        if len(name) > SCHEDULE_NAME_MAX_LENGTH:
            raise ValueError(
                f'TaskSchedule name "{name[:20]}..." is {len(name)} characters long: at most '
                f"{SCHEDULE_NAME_MAX_LENGTH} (its tasks are named <schedule>-<unix minute of the slot>)"
            )
        return metadata
