"""Shards: which reconciler process owns a task, which status branch it writes, and how readers merge.

DESIGN §7: N replicas, each owning a shard of the tasks (a hash of the name) and its own status
branch, coordinating only through the repository (each moves its own ref, nothing else):

    main ──► tasks/a.yaml ─ sha256("a") % 2 = 0 ──► serve --shard 0/2 ──► acp/status-0-of-2
         ──► tasks/b.yaml ─ sha256("b") % 2 = 1 ──► serve --shard 1/2 ──► acp/status-1-of-2
         ──► LLM, Agent, MCPServer, ContactChannel ──► every shard (each writes its own copy)

Everything a task creates (tool calls, delegated child tasks, approval and question branches) lives
with its root task on the owning shard. Unsharded (`N = 1`) is today's single `acp/status`.

The read side (`gitops-acp get`, `describe`, `history`): every status branch of the family
(`acp/status`, `acp/status-<i>-of-<n>`) is read; a resource present on several (it ran under an
older layout, or it is an LLM every shard reconciles) is taken from the branch whose tip commit is
the newest: the live layout. docs/scale.md says how to run shards and change their number.
Which branches of the family exist, and which hold a resource, is `store/statusbranches.py`
(re-exported here): what `history` needs, without this module's dataclasses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gitops_acp.errors import UserError
from gitops_acp.resources import lifecycle, meta
from gitops_acp.resources.lifecycle import Key
from gitops_acp.store import statustree
from gitops_acp.store.statusbranches import UNSHARDED, StatusBranch, history_order, layout_of, status_branches

if TYPE_CHECKING:
    from gitops_acp.store.git import GitRepo

__all__ = [
    "UNSHARDED",
    "Merged",
    "Shard",
    "StatusBranch",
    "from_hostname",
    "history_order",
    "layout_of",
    "parse",
    "read_merged",
    "retired_tasks",
    "shard_of",
    "status_branches",
    "task_phases",
]

_ORDINAL = re.compile(r"-(?P<ordinal>0|[1-9][0-9]*)$")


def shard_of(name: str, count: int) -> int:
    """The shard that owns task `name` among `count`: stable across processes and Python versions."""
    import hashlib  # here: loading OpenSSL is ~3 ms of every reader's start-up, which never needs it

    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """One shard of a layout of `count` shards (the default, 0 of 1, is unsharded)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UserError(f"--shard {self.index}/{self.count}: expected I/N with N >= 1 and 0 <= I < N")

    @property
    def sharded(self) -> bool:
        """Whether there is more than one shard."""
        return self.count > 1

    @property
    def branch(self) -> str:
        """The status branch this shard writes: `acp/status-<i>-of-<n>`, or `acp/status` unsharded."""
        return f"acp/status-{self.index}-of-{self.count}" if self.sharded else UNSHARDED

    def owns(self, task: str) -> bool:
        """Whether the task declared on `main` as `task` is this shard's."""
        return not self.sharded or shard_of(task, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str, *, hostname: str | None) -> Shard:
    """`I/N`, or `auto/N` (I from the trailing `-<ordinal>` of `hostname`, as a StatefulSet names pods)."""
    index_text, slash, count_text = text.partition("/")
    if not slash or not count_text.isdigit():
        raise UserError(f"--shard {text}: expected I/N (e.g. 0/2) or auto/N")
    count = int(count_text)
    if index_text == "auto":
        index = from_hostname(hostname, flag=text)
        if count >= 1 and index >= count:
            raise UserError(
                f"--shard {text}: the host name {hostname!r} makes it shard {index}, not below {count}"
            )
        return Shard(index, count)
    if not index_text.isdigit():
        raise UserError(f"--shard {text}: expected I/N (e.g. 0/2) or auto/N")
    return Shard(int(index_text), count)


def from_hostname(hostname: str | None, *, flag: str) -> int:
    """The ordinal at the end of a StatefulSet pod's host name (`acp-2` → 2)."""
    match = _ORDINAL.search(hostname or "")
    if match is None:
        raise UserError(
            f"--shard {flag}: the host name {hostname or '(unset)'!r} does not end in -<ordinal> "
            "(as a StatefulSet pod's does, e.g. acp-2): pass the index, e.g. --shard 0/N"
        )
    return int(match["ordinal"])


def task_phases(repo: GitRepo, branch: StatusBranch) -> dict[str, str]:
    """Every Task on `branch` and its phase there (`-` when it has none yet), by name."""
    from gitops_acp.store import yamlio

    phases: dict[str, str] = {}
    for name, sha in sorted(statustree.status_names(repo, branch.tip, meta.Kind.Task).items()):
        document: Mapping[str, Any] = yamlio.load(repo.read_blob(sha))
        observed = document.get("status") or {}
        phases[name] = str(observed.get("phase") or "-")
    return phases


@dataclass(frozen=True)
class Merged:
    """The status branches' views merged (what `get` and `describe` show)."""

    tip: str | None  # the newest tip
    documents: dict[Key, dict[str, Any]]  # (kind, name) → status document
    branches: dict[Key, str]  # (kind, name) → the branch its document came from


def read_merged(repo: GitRepo) -> Merged:
    """Every status document of every status branch; on several branches, the newest tip's copy.

    Unsharded (only `acp/status`), this is `read_tip` of `acp/status`.
    """
    found = status_branches(repo)
    if len(found) <= 1:
        name = found[0].name if found else UNSHARDED
        tip, only = statustree.read_tip(repo, name)
        return Merged(tip, only, dict.fromkeys(only, name))
    documents: dict[Key, dict[str, Any]] = {}
    branches: dict[Key, str] = {}
    for branch in reversed(found):  # the oldest first: a newer tip's copy replaces it
        _tip, docs = statustree.read_tip(repo, branch.name)
        documents.update(docs)
        branches.update(dict.fromkeys(docs, branch.name))
    return Merged(found[0].tip, documents, branches)


def retired_tasks(repo: GitRepo, shard: Shard, status_branch: str) -> set[str]:
    """Refuse to start while another layout has unfinished tasks; return the tasks it finished.

    Another layout is a status branch of the family written with another number of shards
    (`acp/status` when sharded, `acp/status-<i>-of-<m>` with m != N). Its unfinished task would
    be run again here, tools included, from the start: a person finishes or cancels it under
    that layout first. Its finished tasks stay there (readers show them) and are not re-run.
    Other shards of this layout are skipped: their tasks are simply not ours. A custom
    `--status-branch` is a deployment of its own, outside the family: nothing to check.
    """
    if status_branch != shard.branch:
        return set()
    finished: set[str] = set()
    for branch in status_branches(repo):
        if branch.shard_count == shard.count:
            continue
        layout = f"{branch.shard_count} shards" if branch.shard_count > 1 else "unsharded"
        for name, phase in task_phases(repo, branch).items():
            if not lifecycle.task_finished(phase):
                raise UserError(
                    f'Task "{name}" is unfinished ({phase}) on {branch.name} (the {layout} layout): '
                    f"serve --shard {shard} would run it again; finish or cancel it under that "
                    "layout first (docs/scale.md)"
                )
            finished.add(name)
        finished |= set(statustree.status_names(repo, branch.tip, meta.Kind.Task, root=meta.ARCHIVE_ROOT))
    return finished
