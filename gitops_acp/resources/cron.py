"""When a TaskSchedule fires: cron expressions in a time zone, and which slot is due now.

    spec.schedule + spec.timeZone ──► Cron ──► next_after(t)       the timer the controller asks for
                                          └──► due(now, earliest)   the one slot to run now, if any

Cron expressions are parsed by croniter (a maintained library; standard 5 fields, and the macros
`@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`), evaluated in the
schedule's IANA time zone (default UTC) and turned into epoch seconds, so everything after this
module compares plain numbers. Two points where the wall clock is not a line (docs/schedules.md):

- clocks go forward: a slot in the skipped hour runs at the first instant after it (03:00 for a
  02:30 slot in Europe/Paris), once;
- clocks go back: a slot whose wall time comes round again in the repeated hour runs once, at its
  first occurrence (a daily 02:30 job runs once, not twice), while `*/15` still runs every 15
  minutes of real time (each of its slots has a wall time of its own).

Tests only: with `GITOPS_ACP_TEST_CRON_SECONDS=1` in the environment a 6-field expression is
accepted, its first field the seconds (`*/2 * * * * *`: every two seconds), so end-to-end tests can
see many slots in a few seconds. Users never set it; without it a 6-field expression is an error.

Pure: no I/O but that environment variable; the clock is always passed in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

__all__ = ["TEST_SECONDS_ENV", "Cron", "Due", "check_schedule", "check_time_zone", "parse", "zone"]

#: Set to 1 (tests only) to accept a 6-field expression whose first field is the seconds.
TEST_SECONDS_ENV = "GITOPS_ACP_TEST_CRON_SECONDS"
_MACROS = frozenset({"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"})
#: A slot is looked for at most this far back or ahead (croniter's own bound is 50 years).
_MAX_YEARS = 5


def _seconds_allowed() -> bool:
    return os.environ.get(TEST_SECONDS_ENV, "").strip() in ("1", "true", "yes")


def check_schedule(expression: str) -> str | None:
    """Return why `expression` is not a cron expression this program runs, or None when it is."""
    text = expression.strip()
    if not text:
        return 'empty schedule: use 5 cron fields, e.g. "0 9 * * *" (daily at 9:00)'
    if text.startswith("@"):
        if text in _MACROS:
            return None
        return f'unknown schedule macro "{text}": use one of {", ".join(sorted(_MACROS))} or 5 cron fields'
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        return "a time zone in the schedule is not supported: set spec.timeZone instead"
    fields = text.split()
    seconds = len(fields) == 6 and _seconds_allowed()
    if len(fields) != 5 and not seconds:
        return (
            f'schedule "{text}" has {len(fields)} fields: use 5 (minute hour day-of-month month '
            'day-of-week), e.g. "*/15 * * * *"'
        )
    try:
        it = croniter(text, datetime(2026, 1, 1, tzinfo=UTC), second_at_beginning=seconds)
    except (CroniterError, ValueError, KeyError) as exc:
        return f'invalid schedule "{text}": {exc}'
    try:
        it.get_next(float)
    except CroniterError:  # e.g. "0 0 30 2 *": a valid expression of a day that never comes
        return f'schedule "{text}" never fires: no date matches it'
    return None


def zone(name: str | None) -> tzinfo:
    """The time zone called `name` (None or empty: UTC); ValueError when there is none."""
    if not name:
        return UTC
    problem = check_time_zone(name)
    if problem is not None:
        raise ValueError(problem)
    return ZoneInfo(name)


def check_time_zone(name: str) -> str | None:
    """Return why `name` is not an IANA time zone, or None when it is."""
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        return f'unknown time zone "{name}": use an IANA name such as "Europe/Paris" or "UTC"'
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f'unknown time zone "{name}": use an IANA name such as "Europe/Paris" or "UTC"'
    return None


def parse(expression: str, time_zone: str | None = None) -> Cron:
    """A `Cron` for a schedule and a time zone; ValueError naming the problem."""
    problem = check_schedule(expression)
    if problem is not None:
        raise ValueError(problem)
    text = expression.strip()
    return Cron(text, zone(time_zone), seconds=len(text.split()) == 6)


@dataclass(frozen=True)
class Due:
    """What a schedule should do at `now` (see `Cron.due`)."""

    run: float | None  # the one slot to run now (the most recent one not run yet), or None
    missed: float | None  # the most recent slot not run and now too late for (startingDeadlineSeconds)
    next: float  # the first slot after now: when to look again


@dataclass(frozen=True)
class Cron:
    """A parsed schedule in its time zone; times in and out are epoch seconds."""

    expression: str
    tz: tzinfo
    seconds: bool = False  # the test-only 6-field form (see the module docstring)

    def _iter(self, start: datetime, *, backwards: bool = False) -> croniter:
        return croniter(
            self.expression,
            start,
            is_prev=backwards,
            second_at_beginning=self.seconds,
            max_years_between_matches=_MAX_YEARS,
        )

    def _local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, tz=UTC).astimezone(self.tz)

    def _repeat(self, slot: datetime) -> bool:
        """Whether `slot` is the second pass of a wall time the previous slot already had (clocks back)."""
        first = slot.replace(fold=0)
        if first.utcoffset() == slot.utcoffset():
            return False  # not in a repeated hour (or its first pass)
        earlier = first.astimezone(UTC).timestamp()
        following = self._iter(self._local(earlier)).get_next(datetime)
        return bool(abs(following.timestamp() - slot.timestamp()) < 1e-6 and self._is_slot(earlier))

    def _is_slot(self, ts: float) -> bool:
        nxt = self._iter(self._local(ts - 1.0)).get_next(datetime)
        return bool(abs(nxt.timestamp() - ts) < 1e-6)

    def next_after(self, ts: float) -> float:
        """The first slot strictly after `ts`."""
        it = self._iter(self._local(ts))
        while True:
            slot = it.get_next(datetime)
            if slot.timestamp() > ts and not self._repeat(slot):
                return float(slot.timestamp())

    def latest_until(self, ts: float) -> float | None:
        """The last slot at or before `ts` (None if there is none within croniter's bound)."""
        # croniter walks back from a start it excludes: start just after `ts` to include it.
        it = self._iter(self._local(ts + (0.001 if self.seconds else 1.0)), backwards=True)
        for _ in range(3):
            try:
                slot = it.get_prev(datetime)
            except CroniterError:
                return None
            if slot.timestamp() <= ts and not self._repeat(slot):
                return float(slot.timestamp())
        return None

    def due(self, *, now: float, earliest: float, deadline: float | None = None) -> Due:
        """Which slot runs at `now`, like a CronJob: the most recent one after `earliest`, at most one.

        `earliest`: slots at or before it are done with (the creation of the schedule, its last
        run or skip). `deadline` (startingDeadlineSeconds): a slot older than that at `now` is not
        run any more; it is reported as `missed` so it can be recorded and logged once.
        """
        latest = self.latest_until(now)
        nxt = self.next_after(now)
        if latest is None or latest <= earliest:
            return Due(run=None, missed=None, next=nxt)
        if deadline is not None and now - latest > deadline:
            return Due(run=None, missed=latest, next=nxt)
        return Due(run=latest, missed=None, next=nxt)

    def slot_id(self, slot: float) -> int:
        """The number in a slot's task name: its unix minute (its unix second in the test-only form)."""
        return int(slot) if self.seconds else int(slot // 60)

    def describe(self, slot: float) -> str:
        """A slot in the schedule's own zone, for messages: `2026-03-29 09:00:00+02:00`."""
        return self._local(slot).isoformat(sep=" ", timespec="seconds")
