"""What the phases mean: the one `Key`, and the pure predicates every layer asks of a resource.

The reactor (the terminal-phase guard on checkpoints, `serve --once`'s "anything unfinished?"), the
controllers (is every tool call of this turn done?) and the store (may another shard layout start?)
ask the same questions; they are answered here once, from the phase names in `resources/meta.py`,
with no I/O.
"""

from __future__ import annotations

from gitops_acp.resources.meta import TERMINAL_TASK_PHASES, TERMINAL_TOOLCALL_PHASES, Kind, TaskPhase

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Key", "phase_of", "reopens", "task_finished", "terminal", "unfinished"]

#: A resource's identity everywhere: (kind, name).
Key = tuple[Kind, str]


def _phase(obj: Any) -> Any:
    status = getattr(obj, "status", None)
    return getattr(status, "phase", None) if status is not None else None


def terminal(obj: Any) -> bool:
    """Whether a Task or ToolCall has ended (nothing may move it on); False for every other kind."""
    if obj is None:
        return False
    if obj.kind == Kind.Task:
        return _phase(obj) in TERMINAL_TASK_PHASES
    if obj.kind == Kind.ToolCall:
        return _phase(obj) in TERMINAL_TOOLCALL_PHASES
    return False


def reopens(old: Any, new: Any) -> bool:
    """Whether `new` is a follow-up reopening a Task that answered (DESIGN §12): FinalAnswer ->
    ReadyForLLM with one more follow-up counted. The only way out of a terminal phase."""
    if old is None or new is None or old.kind != Kind.Task or new.kind != Kind.Task:
        return False
    if _phase(old) != TaskPhase.FinalAnswer or _phase(new) != TaskPhase.ReadyForLLM:
        return False
    return bool(new.status.follow_ups_applied > old.status.follow_ups_applied)


def unfinished(obj: Any) -> bool:
    """Whether a resource's phase is not a terminal one (resources without phases count as unfinished)."""
    phase = _phase(obj)
    return phase not in TERMINAL_TOOLCALL_PHASES and phase not in TERMINAL_TASK_PHASES


def task_finished(phase: str) -> bool:
    """Whether a task phase, as written in a status file, is terminal."""
    return phase in TERMINAL_TASK_PHASES


def phase_of(obj: Any) -> str:
    """The word a commit subject uses for a resource's state: its phase, else its condition, else `-`."""
    status = getattr(obj, "status", None) if obj is not None else None
    if status is None:
        return "-"
    phase = getattr(status, "phase", None)
    if phase:
        return str(phase)
    condition = getattr(status, "status", None)
    return str(condition) if condition else "-"
