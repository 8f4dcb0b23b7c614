"""Names shared by every layer: API versions, kinds, phases, labels, paths, durations and timestamps.

This module is the vocabulary of the resource schema without the schema itself, so the CLI, the
store and the controllers can agree on a kind's plural or a phase's spelling without importing
pydantic models. Everything here is pure: no I/O, no git.
"""

from __future__ import annotations

import math
import re
import time
from enum import StrEnum

from gitops_acp.errors import UserError

try:  # CPython's own SHA-256 (the same digest): hashlib loads OpenSSL, ~2 ms of a ~50 ms `history`
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # another Python, or 3.12+ (`_sha2`)
    from hashlib import sha256 as _sha256

__all__ = [
    "ACCEPTED_API_VERSIONS",
    "ANNOTATION_FIRST_CHECKPOINT",
    "ANNOTATION_SCHEDULED_TIME",
    "ANNOTATION_SOURCE",
    "ANNOTATION_SPEC_COMMIT",
    "API_GROUPS",
    "API_VERSION",
    "ARCHIVE_ROOT",
    "FANNED_OUT",
    "FANOUT_LEVELS",
    "LABEL_PARENT_TOOLCALL",
    "LABEL_SCHEDULE",
    "LABEL_TASK",
    "LABEL_TOOLCALL_REQUEST",
    "NAME_MAX_LENGTH",
    "NAME_RE",
    "PLURALS",
    "STATUS_ROOT",
    "TERMINAL_TASK_PHASES",
    "TERMINAL_TOOLCALL_PHASES",
    "Condition",
    "Kind",
    "TaskPhase",
    "ToolCallPhase",
    "ToolType",
    "check_name",
    "fanout",
    "legacy_status_path",
    "names_under",
    "parse_duration",
    "parse_rfc3339",
    "parse_status_path",
    "resolve_kind",
    "rfc3339",
    "status_path",
]

# The apiVersion this project writes. The two HumanLayer groups are read unchanged so ACP and
# KubeChain manifests work as they are; everything we write (status files) uses ours.
API_VERSION = "acp.gitops.dev/v1alpha1"
ACCEPTED_API_VERSIONS = frozenset(
    {API_VERSION, "acp.humanlayer.dev/v1alpha1", "kubechain.humanlayer.dev/v1alpha1"}
)
# Groups we recognise, so `acp.humanlayer.dev/v1beta1` is an error instead of a silently ignored file.
API_GROUPS = frozenset(version.split("/", 1)[0] for version in ACCEPTED_API_VERSIONS)


# Enum members are named like their values (`Kind.MCPServer`, `TaskPhase.ReadyForLLM`), so code
# reads like the YAML and the phase names people see in `get` are the ones they grep for.


class Kind(StrEnum):
    """The resource kinds; the values are the `kind:` strings of the YAML."""

    LLM = "LLM"
    Agent = "Agent"
    MCPServer = "MCPServer"
    ContactChannel = "ContactChannel"
    Task = "Task"
    TaskSchedule = "TaskSchedule"
    ToolCall = "ToolCall"
    Source = "Source"


# Plurals name the status directories (`status/<plural>/`) and are accepted on the command line.
PLURALS: dict[Kind, str] = {
    Kind.LLM: "llms",
    Kind.Agent: "agents",
    Kind.MCPServer: "mcpservers",
    Kind.ContactChannel: "contactchannels",
    Kind.Task: "tasks",
    Kind.TaskSchedule: "taskschedules",
    Kind.ToolCall: "toolcalls",
    Kind.Source: "sources",
}
_KINDS_BY_PLURAL = {plural: kind for kind, plural in PLURALS.items()}
_SHORT_NAMES: dict[Kind, tuple[str, ...]] = {
    Kind.MCPServer: ("mcp",),
    Kind.ContactChannel: ("cc",),
    Kind.ToolCall: ("tc",),
    Kind.TaskSchedule: ("ts", "schedule", "schedules"),
}
_KIND_WORDS: dict[str, Kind] = {
    **{kind.value.lower(): kind for kind in Kind},
    **_KINDS_BY_PLURAL,
    **{short: kind for kind, shorts in _SHORT_NAMES.items() for short in shorts},
}


def resolve_kind(text: str) -> Kind:
    """Return the kind a person meant by `text`: singular, plural or short name, any case."""
    kind = _KIND_WORDS.get(text.strip().lower())
    if kind is None:
        accepted = ", ".join(
            "/".join((kind.value.lower(), PLURALS[kind], *_SHORT_NAMES.get(kind, ()))) for kind in Kind
        )
        raise UserError(f"unknown kind {text!r}: use one of {accepted}")
    return kind


# The kinds the reconciler creates by the thousand live fanned out (DESIGN §9): a checkpoint
# rewrites the trees on its file's path, and a flat `status/tasks/` of 100,000 entries is a 5 MB
# tree rewritten on every commit. Three levels of 16 keep every tree on the path small (24 entries
# per leaf at 100,000) so a commit costs the same at any size. The kinds people write stay flat.
FANNED_OUT = frozenset({Kind.Task, Kind.ToolCall})
FANOUT_LEVELS = 3
STATUS_ROOT = "status"
ARCHIVE_ROOT = "archive"


def fanout(name: str) -> str:
    """The directories a fanned-out resource's file sits in: the first hex digits of sha256(name).

    With plain git: `h=$(printf %s NAME | sha256sum)`, then `${h:0:1}/${h:1:1}/${h:2:1}`.
    """
    digest = _sha256(name.encode("utf-8")).hexdigest()
    return "/".join(digest[:FANOUT_LEVELS])


def status_path(kind: Kind, name: str, *, root: str = STATUS_ROOT) -> str:
    """Return the path of a resource's file on the status branch (`root="archive"`: once archived).

    `status/llms/<name>.yaml` for the kinds people write, `status/tasks/a/b/c/<name>.yaml` for
    tasks and tool calls (see `fanout`).
    """
    if kind in FANNED_OUT:
        return f"{root}/{PLURALS[kind]}/{fanout(name)}/{name}.yaml"
    return f"{root}/{PLURALS[kind]}/{name}.yaml"


def legacy_status_path(kind: Kind, name: str) -> str:
    """Where the file was before the fan-out: `status/<plural>/<name>.yaml` (older history)."""
    return f"{STATUS_ROOT}/{PLURALS[kind]}/{name}.yaml"


def parse_status_path(path: str) -> tuple[Kind, str] | None:
    """Return `(kind, name)` for a path laid out by `status_path` (either root, or the legacy flat
    layout of tasks and tool calls), or None for any other path."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] not in (STATUS_ROOT, ARCHIVE_ROOT) or not parts[-1].endswith(".yaml"):
        return None
    kind = _KINDS_BY_PLURAL.get(parts[1])
    name = parts[-1].removesuffix(".yaml")
    if kind is None or check_name(name) is not None:
        return None
    if path == status_path(kind, name, root=parts[0]):
        return kind, name
    if parts[0] == STATUS_ROOT and path == legacy_status_path(kind, name):
        return kind, name
    return None


def names_under(listed: dict[str, str], kind: Kind, root: str = STATUS_ROOT) -> dict[str, str]:
    """Name -> sha of every path in `listed` (path -> sha) that `parse_status_path` reads as a
    file of `kind` under `root`: its answer for each path, without splitting every path and
    building its layout again (a list of 100,000 tasks checks 100,000 paths: ~0.2 s of ~0.55)."""
    prefix = f"{root}/{PLURALS[kind]}/"
    start = len(prefix)
    fanned = kind in FANNED_OUT
    names: dict[str, str] = {}
    for path, sha in listed.items():
        if fanned and path.startswith(prefix) and path.endswith(".yaml"):
            rest = path[start:-5]  # a/b/c/<name>
            if len(rest) > 6 and rest[1] == "/" and rest[3] == "/" and rest[5] == "/":
                name = rest[6:]
                if len(name) <= NAME_MAX_LENGTH and NAME_RE.match(name):
                    digest = _sha256(name.encode("utf-8")).hexdigest()  # as `fanout`
                    if digest[0] == rest[0] and digest[1] == rest[2] and digest[2] == rest[4]:
                        names[name] = sha
                        continue
        found = parse_status_path(path)  # the flat layout of old tips, and whatever is not ours
        if found is not None and found[0] == kind:
            names[found[1]] = sha
    return names


# A DNS-1123 label, as Kubernetes requires of these names. Names become file names, branch names
# (`acp/approvals/<name>`) and parts of tool names (`<server>__<tool>`, unambiguous because names
# never contain `_`), so the rule is load-bearing, not cosmetic.
NAME_MAX_LENGTH = 63
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_name(name: str) -> str | None:
    """Return why `name` is not a valid resource name, or None when it is."""
    if len(name) > NAME_MAX_LENGTH:
        return f'name "{name[:20]}..." is {len(name)} characters long: at most {NAME_MAX_LENGTH} are allowed'
    if not NAME_RE.match(name):
        return (
            f'name "{name}" is not a DNS-1123 label: use lowercase letters, digits and "-", '
            f"starting and ending with a letter or digit, at most {NAME_MAX_LENGTH} characters"
        )
    return None


# Go's duration units (what ACP users know from Kubernetes), plus `d` for approval timeouts.
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# Patterns, not compiled ones: `re` compiles them on first use and keeps them (a reader never does).
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)"
_DURATION_RE = rf"(?:{_DURATION_PART})+"
_DURATION_HELP = 'use seconds or a duration such as "30s", "5m", "1h30m", "250ms"'


def parse_duration(value: str | int | float) -> float:
    """Return a duration in seconds from a number of seconds or a string like "1h30m" or "250ms"."""
    # bool is an int subclass; `timeout: true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid duration: expected a string or a number, got {type(value).__name__}")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            if not re.fullmatch(_DURATION_RE, text):
                raise ValueError(f"invalid duration {value!r}: {_DURATION_HELP}") from None
            seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in re.findall(_DURATION_PART, text))
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds, not negative")
    return seconds


def rfc3339(ts: float) -> str:
    """Format epoch seconds the way status files carry times: `2026-11-22T10:00:00.123456Z`.

    The text of `datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")`, made with
    `time.gmtime` and the microseconds rounded as `datetime` rounds them (half to even, from
    `math.modf`): two thirds of its cost, on every checkpoint, and no `datetime` to import for
    `history` (tests/test_resources.py compares the two).
    """
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    moment = time.gmtime(whole)
    if moment.tm_year < 1000:  # strftime's %Y does not pad such years: keep its exact text
        from datetime import UTC, datetime

        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031  (faster than an f-string here)
        moment.tm_year,
        moment.tm_mon,
        moment.tm_mday,
        moment.tm_hour,
        moment.tm_min,
        moment.tm_sec,
        micros,
    )


def parse_rfc3339(text: str) -> float:
    """Parse a time written by `rfc3339` (or any ISO 8601 time with a zone) to epoch seconds.

    `rfc3339`'s own form is read by hand: `history` reads one such time and nothing else that
    needs `datetime`, whose import is ~1 ms of its ~50 (DESIGN §9). Anything else goes to
    `datetime.fromisoformat`, which gives the same number for that form too (tests/test_resources.py).
    """
    fast = _parse_own_form(text)
    if fast is not None:
        return fast
    from datetime import datetime

    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.timestamp()


def _parse_own_form(text: str) -> float | None:
    """`2026-11-22T10:00:00.123456Z` or `2026-11-22T10:00:00Z` as epoch seconds; None otherwise."""
    if len(text) not in (20, 27) or text[-1] != "Z":
        return None
    if text[4:20:3] != ("--T::." if len(text) == 27 else "--T::Z"):  # the separators, at 4, 7, ... 19
        return None
    parts = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19], text[20:26] or "0")
    if not all(part.isascii() and part.isdigit() for part in parts):
        return None
    year, month, day, hour, minute, second, micros = map(int, parts)
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return (seconds * 1_000_000 + micros) / 1_000_000  # as `timedelta.total_seconds` rounds


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


class TaskPhase(StrEnum):
    """Where a Task is in its loop (ACP's names; only the phases this reconciler sets)."""

    Pending = "Pending"  # waiting for a dependency (agent, LLM) to exist or be ready
    ReadyForLLM = "ReadyForLLM"  # the context window is ready to be sent to the model
    ToolCallsPending = "ToolCallsPending"  # waiting for this turn's ToolCalls to finish
    FinalAnswer = "FinalAnswer"  # the model answered without tools: `output` holds the answer
    Failed = "Failed"  # a permanent error: `error` says which
    ErrorBackoff = "ErrorBackoff"  # a retryable LLM error: retried at `nextAttemptTime`
    Cancelled = "Cancelled"  # removed from main, or its limits were exceeded: `statusDetail` says which


TERMINAL_TASK_PHASES = frozenset({TaskPhase.FinalAnswer, TaskPhase.Failed, TaskPhase.Cancelled})


class ToolCallPhase(StrEnum):
    """Where one tool invocation is (ACP's names, plus `Running` which ACP declared but never set)."""

    Pending = "Pending"  # recorded, not started
    Running = "Running"  # committed before the tool is invoked: intent before effect
    Succeeded = "Succeeded"  # the tool returned; `result` holds its output
    Failed = "Failed"  # the tool failed or was interrupted; `error` holds why
    AwaitingHumanInput = "AwaitingHumanInput"  # a question to a human is open
    AwaitingSubAgent = "AwaitingSubAgent"  # a delegated child task is running
    AwaitingHumanApproval = "AwaitingHumanApproval"  # an approval branch / pull request is open
    ReadyToExecuteApprovedTool = "ReadyToExecuteApprovedTool"  # approved, not yet started
    ToolCallRejected = "ToolCallRejected"  # a human said no; `result` is "Rejected: <comment>"
    ErrorRequestingHumanApproval = "ErrorRequestingHumanApproval"  # the approval could not be requested
    ErrorRequestingHumanInput = "ErrorRequestingHumanInput"  # the question could not be asked


TERMINAL_TOOLCALL_PHASES = frozenset(
    {
        ToolCallPhase.Succeeded,
        ToolCallPhase.Failed,
        ToolCallPhase.ToolCallRejected,
        ToolCallPhase.ErrorRequestingHumanApproval,
        ToolCallPhase.ErrorRequestingHumanInput,
    }
)


class ToolType(StrEnum):
    """Which executor a tool call goes to; decided by the tool's name when the call is recorded."""

    MCP = "MCP"  # `<mcpserver>__<tool>`
    HumanContact = "HumanContact"  # `<channel>__human_contact`
    DelegateToAgent = "DelegateToAgent"  # `delegate_to_agent__<agent>`


class Condition(StrEnum):
    """The coarse `status` field every kind shares with ACP (`kubectl get`'s STATUS column)."""

    Ready = "Ready"
    Error = "Error"
    Pending = "Pending"
    Succeeded = "Succeeded"


# Labels and annotations the reconciler puts on the objects it writes. Ours, not ACP's
# `acp.humanlayer.dev/...`, because these objects only ever exist on our status branch.
LABEL_TASK = "acp.gitops.dev/task"  # on a ToolCall: the Task that requested it
LABEL_TOOLCALL_REQUEST = "acp.gitops.dev/toolcallrequest"  # on a ToolCall: the LLM response it came from
LABEL_PARENT_TOOLCALL = "acp.gitops.dev/parent-toolcall"  # on a delegated child Task: its ToolCall
LABEL_SCHEDULE = "acp.gitops.dev/schedule"  # on a Task a TaskSchedule created: the schedule
ANNOTATION_SCHEDULED_TIME = "acp.gitops.dev/scheduled-time"  # on such a Task: the slot it ran for
ANNOTATION_SOURCE = "acp.gitops.dev/source"  # the file on main that declared the resource
ANNOTATION_SPEC_COMMIT = "acp.gitops.dev/spec-commit"  # the commit of main that was reconciled
# When the resource's first checkpoint was made: its history starts there, so `history` and
# `describe` look no further back than that (a bounded walk, however old the branch is).
ANNOTATION_FIRST_CHECKPOINT = "acp.gitops.dev/first-checkpoint"
