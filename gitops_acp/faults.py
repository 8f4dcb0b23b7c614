"""Crash points for the crash tests: where a real SIGKILL lands in the middle of a commit.

    GITOPS_ACP_CRASH_AT=<point>[:<n>]     SIGKILL this process the n-th time (default 1) it passes <point>
    GITOPS_ACP_CRASH_AT=archive/<point>[:<n>]   the same, counting only passes inside `archive:` commits

Points (store/git/objects.py, store/git/refs.py): `objects-written` (a pack's temporary files
written, nothing renamed), `pack-renamed` (the pack in place, its index not yet), `pack-written`
(pack and index in place, the ref not moved), `lock-taken` (`update-ref --stdin` prepared: the
ref's `.lock` exists; the git process is killed first, as a container's kill takes every
process), `ref-moved` (the ref moved, nobody told yet); after a commit, `packs-rolled-up` (the writer's
last packs written again as one, none of them deleted yet). Unset (always, outside tests),
`reached` is one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Iterator

__all__ = ["POINTS", "SCOPES", "armed", "reached", "scope"]

POINTS = frozenset(
    {"objects-written", "pack-renamed", "pack-written", "lock-taken", "ref-moved", "packs-rolled-up"}
)
SCOPES = frozenset({"archive"})


def _parse(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    point, _colon, nth = text.partition(":")
    where, _slash, bare = point.rpartition("/")
    if bare not in POINTS or (where and where not in SCOPES):
        raise ValueError(
            f"GITOPS_ACP_CRASH_AT={text}: unknown point; expected one of {', '.join(sorted(POINTS))}"
        )
    return point, int(nth or 1)


_TARGET = _parse(os.environ.get("GITOPS_ACP_CRASH_AT"))
_passed: dict[str, int] = {}
_scope = ""  # "archive/" while the status writer writes an `archive:` commit


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Points passed inside are also `<name>/<point>` (the status writer's thread only)."""
    global _scope
    _scope = f"{name}/"
    try:
        yield
    finally:
        _scope = ""


def armed(point: str) -> bool:
    """Whether `point` is the crash point of this process (a caller may then take a slower path)."""
    return _TARGET is not None and _TARGET[0] in (point, _scope + point)


def reached(point: str, *, children: Iterable[int] = ()) -> None:
    """SIGKILL `children`, then this process, if the crash point `point` is armed for this pass."""
    if _TARGET is None or _TARGET[0] not in (point, _scope + point):
        return
    point = _TARGET[0]
    _passed[point] = _passed.get(point, 0) + 1
    if _passed[point] != _TARGET[1]:
        return
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # gone before we are: its lock file stays behind, as after a real kill
    os.kill(os.getpid(), signal.SIGKILL)
