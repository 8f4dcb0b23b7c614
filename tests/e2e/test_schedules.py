"""TaskSchedules end to end (DESIGN §12): the real `serve`, the stub LLM, slots every second.

The test-only seconds field (`GITOPS_ACP_TEST_CRON_SECONDS=1`, docs/schedules.md) makes a slot
come every second, so a few seconds show many firings:

- SIGKILLs while slots fire, and restarts: every task of the schedule is created exactly once in
  the status branch's history, in the same commit as the schedule's status that covers its slot;
- Allow runs tasks side by side, Forbid never does (skipped slots recorded), Replace cancels;
- suspend: no task while suspended, and none for a slot that passed meanwhile;
- history limits: older finished tasks leave the tip for `archive/` (history keeps them);
- downtime: at most one missed slot runs, within startingDeadlineSeconds; `serve --once` fires
  what is due and does not wait for the next slot;
- `get taskschedules` and `validate`, through the real CLI.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from gitops_acp.resources.meta import rfc3339
from tests.conftest import git
from tests.e2e.conftest import (
    AGENT_NAME,
    API,
    AcpRepo,
    Background,
    Stub,
    assert_status_consistent,
    cli,
    status_files,
    wait_for,
)

pytestmark = pytest.mark.e2e

SECONDS_ENV = "GITOPS_ACP_TEST_CRON_SECONDS"
_CREATED = re.compile(r"^Task/(?P<name>[a-z0-9-]+): - -> (?P<new>\S+)$")


@pytest.fixture(autouse=True)
def _seconds_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process the tests start accepts the test-only seconds field."""
    monkeypatch.setenv(SECONDS_ENV, "1")


def schedule_yaml(name: str, message: str, *, schedule: str = "* * * * * *", extra: str = "") -> str:
    return f"""\
apiVersion: {API}
kind: TaskSchedule
metadata:
  name: {name}
spec:
  schedule: "{schedule}"
  taskTemplate:
    agentRef:
      name: {AGENT_NAME}
    userMessage: "{message}"
{extra}"""


def scheduled(repo: AcpRepo, schedule: str) -> dict[str, dict[str, Any]]:
    """The schedule's tasks at the tip of the status branch, by name."""
    return {
        name: doc
        for (plural, name), doc in status_files(repo).items()
        if plural == "tasks"
        and (doc["metadata"].get("labels") or {}).get("acp.gitops.dev/schedule") == schedule
    }


def creations(repo: AcpRepo, schedule: str) -> list[tuple[str, str]]:
    """(task, commit) of every creation (`Task/<schedule>-N: - -> Pending`) in history, oldest first."""
    out = git(repo.path, "log", "--reverse", "--format=%H%x1f%B%x1e", "acp/status")
    found = []
    for record in out.split("\x1e"):
        if not record.strip():
            continue
        sha, body = record.strip("\n").split("\x1f")
        for line in body.splitlines():
            match = _CREATED.match(line.strip())
            if match and match["name"].startswith(f"{schedule}-"):
                found.append((match["name"], sha))
    return found


def schedule_status(repo: AcpRepo, name: str, rev: str = "acp/status") -> dict[str, Any]:
    document = repo.status("taskschedules", name, rev)
    assert document is not None, f"no status for TaskSchedule {name} at {rev}"
    status: dict[str, Any] = document.get("status") or {}
    return status


def test_sigkills_while_slots_fire_never_make_a_slot_twice(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.rules({"match": "^tick$", "content": "tock", "delayMs": 300})
    acp_repo.commit({"schedules/tick.yaml": schedule_yaml("tick", "tick")}, "Add the tick schedule")
    runs = 3
    spans: list[tuple[int, int]] = []  # (first, end) indexes into creations() made by each serve run
    for run in range(runs):
        before = len(creations(acp_repo, "tick")) if acp_repo.has_status_branch() else 0
        background = serve_bg(acp_repo)
        # Kill at a different moment of each run: right after a firing, or between two.
        wait_for(
            lambda before=before: (
                acp_repo.has_status_branch() and len(creations(acp_repo, "tick")) >= before + 2
            ),
            timeout=60,
            interval=0.02,
            what="two more firings",
        )
        time.sleep(0.13 * run)
        background.kill()
        assert background.proc.returncode == -signal.SIGKILL, background.stderr()
        spans.append((before, len(creations(acp_repo, "tick"))))
    # Then SIGKILLs inside a commit (faults.py): objects written but the ref not moved, the ref's
    # lock taken, the ref moved with nobody told; whichever checkpoint (a firing or a task's) it is.
    for point in ("pack-written:3", "lock-taken:4", "ref-moved:5"):
        monkeypatch.setenv("GITOPS_ACP_CRASH_AT", point)
        background = serve_bg(acp_repo)
        assert background.wait(timeout=60) == -signal.SIGKILL, background.stderr()
    monkeypatch.delenv("GITOPS_ACP_CRASH_AT")
    before = len(creations(acp_repo, "tick"))
    background = serve_bg(acp_repo)
    wait_for(
        lambda: len(creations(acp_repo, "tick")) >= before + 2, timeout=60, what="firings after the crashes"
    )
    background.signal(signal.SIGTERM)
    assert background.wait(timeout=30) == 0, background.stderr()
    spans.append((before, len(creations(acp_repo, "tick"))))

    made = creations(acp_repo, "tick")
    names = [name for name, _ in made]
    assert len(names) >= 2 * runs + 2
    assert len(names) == len(set(names)), f"a slot made twice: {names}"
    slots = [int(name.rsplit("-", 1)[1]) for name in names]
    assert slots == sorted(slots), "tasks were created out of slot order"
    # While a serve ran, every slot got its task: one a second, none left out. (Across a restart
    # the slots of the downtime are missed, and only the most recent one runs.)
    for first, end in spans:
        ran = slots[first:end]
        assert ran == list(range(ran[0], ran[0] + len(ran))), f"a slot left out while serving: {ran}"
    # Each task was created in the commit that moved the schedule past its slot: both or neither.
    for name, sha in made:
        status = schedule_status(acp_repo, "tick", sha)
        assert status["lastScheduleTime"] == rfc3339(int(name.rsplit("-", 1)[1]))
        body = git(acp_repo.path, "log", "-1", "--format=%B", sha)
        assert "ACP-Resource: TaskSchedule/tick" in body
    # And nothing at the tip names a task that does not exist, or misses one that runs.
    tip = scheduled(acp_repo, "tick")
    assert set(tip) <= set(names)
    active = {ref["name"] for ref in schedule_status(acp_repo, "tick").get("active") or []}
    assert active <= set(tip)
    assert_status_consistent(acp_repo)


def history_of(repo: AcpRepo, schedule: str) -> list[dict[str, Any]]:
    """The schedule's status at every commit that wrote it, oldest first."""
    path = f"status/taskschedules/{schedule}.yaml"
    shas = git(repo.path, "log", "--reverse", "--format=%H", "acp/status", "--", path).split()
    return [
        schedule_status(repo, schedule, sha) for sha in shas if repo.status("taskschedules", schedule, sha)
    ]


POLICIES = {"allow": "Allow", "forbid": "Forbid", "replace": "Replace"}


def test_allow_overlaps_forbid_skips_replace_cancels(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    # Each answer takes 2.5 s: three slots come while a task runs.
    stub.rules(*({"match": f"^{word}$", "content": f"{word} done", "delayMs": 2500} for word in POLICIES))
    limits = "  successfulTasksHistoryLimit: 20\n  failedTasksHistoryLimit: 20\n"
    acp_repo.commit(
        {
            f"schedules/{word}.yaml": schedule_yaml(
                word, word, extra=f"  concurrencyPolicy: {policy}\n{limits}"
            )
            for word, policy in POLICIES.items()
        },
        "Add one schedule per concurrency policy",
    )
    background = serve_bg(acp_repo)

    def replaced() -> list[str]:
        log = git(acp_repo.path, "log", "--format=%B", "acp/status") if acp_repo.has_status_branch() else ""
        return re.findall(r"Task/(replace-\d+): \S+ -> Cancelled", log)

    def seen_everything() -> bool:
        if not acp_repo.has_status_branch():
            return False
        allow = [len(s.get("active") or []) for s in history_of(acp_repo, "allow")]
        forbid = schedule_status(acp_repo, "forbid") if acp_repo.status("taskschedules", "forbid") else {}
        finished_forbid = any(
            d["status"]["phase"] == "FinalAnswer" for d in scheduled(acp_repo, "forbid").values()
        )
        return bool(
            allow and max(allow) >= 2 and forbid.get("lastSkippedTime") and finished_forbid and replaced()
        )

    wait_for(seen_everything, timeout=60, interval=0.2, what="overlap, a skip and a replacement")
    background.signal(signal.SIGTERM)
    assert background.wait(timeout=30) == 0, background.stderr()

    # Allow: several tasks unfinished at once, all of them run to their answer or still running.
    assert max(len(s.get("active") or []) for s in history_of(acp_repo, "allow")) >= 2
    # Forbid: never two at once, and the skipped slots are said.
    forbid_history = history_of(acp_repo, "forbid")
    assert max(len(s.get("active") or []) for s in forbid_history) == 1
    assert any("concurrencyPolicy Forbid" in (s.get("statusDetail") or "") for s in forbid_history)
    assert "skipped: concurrencyPolicy Forbid" in background.stderr()
    # Replace: the running task is cancelled in the commit that creates its successor.
    victim = replaced()[-1]
    commit = git(
        acp_repo.path, "log", "-1", "--format=%H", "--grep", f"Task/{victim}: .* -> Cancelled", "acp/status"
    )
    body = git(acp_repo.path, "log", "-1", "--format=%B", commit)
    successor = re.search(r"Task/(replace-\d+): - -> Pending", body)
    assert successor is not None, body
    cancelled = acp_repo.status("tasks", victim, commit)
    assert cancelled is not None
    assert cancelled["status"]["statusDetail"] == (
        f"replaced by task {successor[1]} (TaskSchedule replace, concurrencyPolicy Replace)"
    )
    assert all(len(s.get("active") or []) <= 1 for s in history_of(acp_repo, "replace"))


def test_suspend_stops_firing_and_a_resume_does_not_run_passed_slots(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    acp_repo.commit(
        {"schedules/nap.yaml": schedule_yaml("nap", "nap", extra="  suspend: true\n")},
        "Add a suspended schedule",
    )
    background = serve_bg(acp_repo)
    wait_for(
        lambda: (
            acp_repo.has_status_branch()
            and acp_repo.status("taskschedules", "nap") is not None
            and schedule_status(acp_repo, "nap").get("suspended")
        ),
        timeout=60,
        what="the suspension recorded",
    )
    time.sleep(2.2)  # slots pass while suspended
    assert creations(acp_repo, "nap") == []
    acp_repo.commit({"schedules/nap.yaml": schedule_yaml("nap", "nap")}, "Resume")
    wait_for(lambda: creations(acp_repo, "nap"), timeout=60, what="a firing after the resume")
    background.signal(signal.SIGTERM)
    assert background.wait(timeout=30) == 0, background.stderr()
    resumed = next(
        s for s in history_of(acp_repo, "nap") if (s.get("statusDetail") or "").startswith("Resumed")
    )
    assert "passed while suspended, skipped" in resumed["statusDetail"]
    first = int(creations(acp_repo, "nap")[0][0].rsplit("-", 1)[1])
    assert rfc3339(first) > resumed["lastSkippedTime"]  # the first task is for a slot after the resume


def test_history_limits_archive_older_tasks_and_get_shows_the_schedule(
    acp_repo: AcpRepo, stub: Stub, serve_bg: Callable[..., Background]
) -> None:
    acp_repo.commit(
        {
            "schedules/tidy.yaml": schedule_yaml(
                "tidy", "tidy", extra="  successfulTasksHistoryLimit: 2\n  timeZone: Europe/Paris\n"
            )
        },
        "Add a schedule keeping two successes",
    )
    background = serve_bg(acp_repo)

    def archived() -> list[str]:
        if not acp_repo.has_status_branch():
            return []
        listing = git(acp_repo.path, "ls-tree", "-r", "--name-only", "acp/status", "--", "archive/tasks/")
        return [line.rsplit("/", 1)[1].removesuffix(".yaml") for line in listing.splitlines()]

    wait_for(lambda: len(archived()) >= 3, timeout=60, what="three tasks archived")
    background.signal(signal.SIGTERM)
    assert background.wait(timeout=30) == 0, background.stderr()

    finished = [n for n, d in scheduled(acp_repo, "tidy").items() if d["status"]["phase"] == "FinalAnswer"]
    assert len(finished) <= 2
    made = [name for name, _ in creations(acp_repo, "tidy")]
    assert set(archived()) <= set(made)
    # The archived ones are the oldest, and still found by name (DESIGN §9).
    assert sorted(archived()) == sorted(made)[: len(archived())]
    shown = cli("--repo", str(acp_repo.path), "get", "task", archived()[0])
    assert shown.returncode == 0, shown.stderr
    assert "FinalAnswer" in shown.stdout

    table = cli("--repo", str(acp_repo.path), "get", "taskschedules")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    assert re.match(r"^tidy\s+\* \* \* \* \* \*\s+Europe/Paris\s+false\s+[01]\s+\d+s\s+\d+s$", row), row
    wide = cli("--repo", str(acp_repo.path), "get", "ts", "tidy", "-o", "wide")
    assert "NEXT SCHEDULE" in wide.stdout
    assert "Allow" in wide.stdout


def test_validate_names_a_bad_schedule_and_time_zone_with_file_and_line(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "bad.yaml").write_text(
        schedule_yaml("bad", "hi", schedule="0 9 * * * *", extra="  timeZone: Europe/Pariss\n")
    )
    monkeypatch.delenv(SECONDS_ENV)  # as a user runs it: the seconds field is for tests only
    result = cli("--repo", str(tmp_path), "validate")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        'schedules/bad.yaml:6: TaskSchedule "bad": spec.schedule: schedule "0 9 * * * *" has 6'
    )
    assert lines[1] == (
        'schedules/bad.yaml:11: TaskSchedule "bad": spec.timeZone: unknown time zone "Europe/Pariss": '
        'use an IANA name such as "Europe/Paris" or "UTC"'
    )
    assert lines[2].startswith("2 error(s)")


def test_serve_once_fires_what_is_due_and_does_not_wait_for_the_next_slot(
    acp_repo: AcpRepo, stub: Stub, serve_once: Callable[..., Any]
) -> None:
    # The task takes longer than a slot: the slots that come while it runs are the next run's
    # (else its end would wake the schedule into the next slot, and so on: --once would never end).
    stub.rules({"match": "^once$", "delayMs": 1500})
    acp_repo.commit({"schedules/once.yaml": schedule_yaml("once", "once")}, "Add a schedule")
    first = serve_once(acp_repo, timeout=60)  # the schedule starts now: nothing is due yet
    assert first.returncode == 0, first.stderr
    assert creations(acp_repo, "once") == []
    assert schedule_status(acp_repo, "once")["nextScheduleTime"]
    time.sleep(2.5)  # down for two slots or more: the most recent one runs, once
    second = serve_once(acp_repo, timeout=60)
    assert second.returncode == 0, second.stderr
    (made,) = creations(acp_repo, "once")
    assert acp_repo.phase(made[0]) == "FinalAnswer"


def test_after_downtime_one_missed_slot_runs_within_its_starting_deadline(
    acp_repo: AcpRepo, stub: Stub, serve_once: Callable[..., Any]
) -> None:
    # Three schedules, the same downtime: `strict` (every 10 s, 1 s of grace) misses its slot,
    # `lenient` (8 s of grace) runs it, `every2` (no deadline) runs only the newest of its misses.
    acp_repo.commit(
        {
            "schedules/strict.yaml": schedule_yaml(
                "strict", "strict", schedule="*/10 * * * * *", extra="  startingDeadlineSeconds: 1\n"
            ),
            "schedules/lenient.yaml": schedule_yaml(
                "lenient", "lenient", schedule="*/10 * * * * *", extra="  startingDeadlineSeconds: 8\n"
            ),
            "schedules/every2.yaml": schedule_yaml("every2", "every2", schedule="*/2 * * * * *"),
        },
        "Add three schedules",
    )
    first = serve_once(acp_repo, timeout=60)  # they start now; then serve is down
    assert first.returncode == 0, first.stderr
    slot = (int(time.time()) // 10 + 1) * 10
    time.sleep(max(0.0, slot + 1.5 - time.time()))  # down over `slot`, back 1.5 s after it
    second = serve_once(acp_repo, timeout=60)
    assert second.returncode == 0, second.stderr

    assert creations(acp_repo, "strict") == []
    strict = schedule_status(acp_repo, "strict")
    assert strict["lastSkippedTime"] == rfc3339(slot)
    assert "more than startingDeadlineSeconds 1: not run" in strict["statusDetail"]
    assert "more than startingDeadlineSeconds 1: not run" in second.stderr
    ((lenient, _),) = creations(acp_repo, "lenient")
    assert lenient == f"lenient-{slot}"
    assert acp_repo.phase(lenient) == "FinalAnswer"
    ((every2, _),) = creations(acp_repo, "every2")  # one task for the five or more slots missed
    assert int(every2.rsplit("-", 1)[1]) >= slot
