"""The family of status branches as a reader finds them: which exist, and where a resource's are.

`acp/status` (unsharded) and `acp/status-<i>-of-<n>` (DESIGN §7; `store/shards.py` says who writes
which). `gitops-acp history` and `describe` read a resource's checkpoints from the branch whose
tip holds its file; this module is what they need of the family, and imports nothing more
(`shards.py`, which re-exports it, builds dataclasses, and `dataclasses` alone costs a `history`
process ~6 ms: docs/growth.md).
"""

from __future__ import annotations

import re

from gitops_acp.resources import meta
from gitops_acp.store import statustree

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from typing import NamedTuple

    from gitops_acp.store.git import Reader
else:
    from gitops_acp.tuples import NamedTuple

__all__ = ["UNSHARDED", "StatusBranch", "history_order", "layout_of", "status_branches"]

#: The status branch of an unsharded reconciler (and of `--shard 0/1`).
UNSHARDED = "acp/status"
_HEADS = "refs/heads/"
_SHARD_BRANCH = re.compile(r"^acp/status-(?P<index>0|[1-9][0-9]*)-of-(?P<count>[1-9][0-9]*)$")


def layout_of(branch: str) -> tuple[int, int] | None:
    """(index, count) of a status branch of the family (`acp/status` is 0 of 1); None for others."""
    if branch == UNSHARDED:
        return 0, 1
    match = _SHARD_BRANCH.match(branch)
    if match is None or int(match["index"]) >= int(match["count"]):
        return None
    return int(match["index"]), int(match["count"])


class StatusBranch(NamedTuple):
    """A status branch of the family and its tip."""

    name: str  # short, e.g. acp/status-0-of-2
    tip: str
    time: float  # the tip's committer time

    @property
    def shard_count(self) -> int:
        """How many shards the layout that wrote it had (not `count`: a tuple's method)."""
        layout = layout_of(self.name)
        assert layout is not None
        return layout[1]


def status_branches(repo: Reader) -> list[StatusBranch]:
    """Every status branch of the family in `repo`, the newest tip first (ties: by name)."""
    found: list[StatusBranch] = []
    refs = repo.refs(_HEADS + UNSHARDED, _HEADS + UNSHARDED + "-*-of-*")
    for ref, sha in refs.items():
        name = ref.removeprefix(_HEADS)
        if layout_of(name) is not None:
            found.append(StatusBranch(name, sha, repo.commit_time(sha)))
    return sorted(found, key=lambda branch: (-branch.time, branch.name))


def history_order(repo: Reader, *, kind: str, name: str) -> list[str]:
    """Status branches to read a resource's events from, best first.

    Those whose tip holds its file (the newest tip first), then the others (its file may have been
    deleted there: an LLM removed from main); `acp/status` when there is no status branch at all.
    """
    found = status_branches(repo)
    if len(found) <= 1:  # one branch (the usual case) or none: nothing to order, nothing to read
        return [found[0].name] if found else [UNSHARDED]
    holding = [
        branch.name
        for branch in found
        if statustree.read_status_file(repo, branch.tip, meta.Kind(kind), name) is not None
    ]
    return [*holding, *(branch.name for branch in found if branch.name not in holding)] or [UNSHARDED]
