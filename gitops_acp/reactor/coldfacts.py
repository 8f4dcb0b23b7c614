"""Finished tasks' facts kept across restarts: start-up reads no file of a finished task it knew.

    serve ── every SAVE_EVERY s (if anything landed), at a clean stop ────► <lock dir>/cold-facts-<branch>
                                                                            blob sha → Facts, finished only
    start ── ls-tree of status/ ──► a file whose blob is there: Cold(blob, facts), not read
                                ──► any other: read and parsed, as before
    get --phase P ── a file whose blob is there in another phase: not read (`phases`)
    archive commit ── (blob, phase) of each one archived, appended ──► <lock dir>/archived-phases-<branch>
    get --all --phase P ── an archived file whose blob is there in another phase: not read

Start-up loads the status branch's tip. A finished Task or ToolCall is held cold (cold.py), as its
blob and a few facts, but to know that it is finished and what the facts are, every file was read
and parsed: ~0.3 ms a file (cat-file, PyYAML, pydantic), 32 s for a restart with 110,000 files in
the tip (`--retain-finished never`, or a long retention at thousands of tasks a day).

The facts of a finished resource are a function of its status file's content, so they are kept
by the file's blob sha. An entry whose blob is no longer in the tip matches nothing; a blob that is
not there (finished since the last save, a file changed by hand, another version's file) is read
as before. The file may be old, partial, missing, another version's or left by a killed process:
start-up is only faster with it, never different. It is saved every SAVE_EVERY seconds while
checkpoints land, at a clean stop, and at once after a start that read READ_BEFORE_SAVING finished
files or more (the first start of a version, a start after a kill). Only the process holding the branch's
ServeLock writes it (to a temporary file, then renamed), next to that lock (`recovery.lock_dir`:
in the git dir, which git ignores; beside the mirror with a remote).

Archived resources leave the reconciler's memory and so the facts file; their phases go to a file
of their own, appended to at each archive commit and never read by the reconciler (its memory does
not grow with the archive), for `get --all --phase` and the HTTP API's lists of archived ones: an
archived file is the last status file's blob, and a blob's phase never changes. A line a kill cut
short is not used; a missing file means every archived file is read, as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

from gitops_acp import __version__

# `get --phase` reads the phases (`phases`) without the models, and without logging, pathlib and
# urllib (~17 ms of imports the command would pay whether or not it asks): imported where used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from gitops_acp.controllers.cold import Facts

__all__ = [
    "READ_BEFORE_SAVING",
    "SAVE_EVERY",
    "append_archived",
    "archived_path_for",
    "archived_phases",
    "load",
    "other_phase",
    "path_for",
    "phases",
    "save",
    "saved_phases",
]

#: Seconds between saves while serving (only when a checkpoint landed since the last one). A kill
#: loses what finished since: those files are read at the next start, as all were before.
SAVE_EVERY = 300.0
#: Finished files a start read (no facts saved for them: the first start of this version, or after
#: a kill) from which it saves at once, not SAVE_EVERY later: a kill meanwhile would read them again.
READ_BEFORE_SAVING = 1_000
# The first line: another format, or another version's facts (cold.py may change what they
# say), and the file is not used.
_HEADER = f"gitops-acp cold facts 1 {__version__}\n".encode()
_ARCHIVED_HEADER = b"gitops-acp archived phases 1\n"  # blob -> phase: a fact of the content, any version's
_NONE = "-"  # never a resource name (a DNS-1123 label starts with a letter or digit), nor a number


def path_for(lock_dir: Path, branch: str) -> Path:
    """The file of `branch`'s facts, in the directory of its ServeLock."""
    return _file_for(lock_dir, "cold-facts", branch)


def archived_path_for(lock_dir: Path, branch: str) -> Path:
    """The file of the phases of what was archived from `branch`, in the directory of its ServeLock."""
    return _file_for(lock_dir, "archived-phases", branch)


def _file_for(lock_dir: Path, prefix: str, branch: str) -> Path:
    from urllib.parse import quote

    return lock_dir / f"{prefix}-{quote(branch, safe='')}"


def append_archived(path: Path, entries: Iterable[tuple[str, str]]) -> None:
    """Add the (blob sha in hex, phase) of resources just archived to `path` (never fails: logged).

    Appended, never rewritten: one write of a few KB per archive commit, whatever the archive
    holds. A file of another format is started again; a last line a kill cut short is ended first
    (and is not used: `archived_phases`).
    """
    lines = "".join(f"{blob}\t{phase}\n" for blob, phase in entries).encode()
    if not lines:
        return
    try:
        with open(path, "ab+") as out:
            out.seek(0)
            head = out.read(len(_ARCHIVED_HEADER))
            if head != _ARCHIVED_HEADER:
                out.truncate(0)
                lines = _ARCHIVED_HEADER + lines
            else:
                out.seek(-1, os.SEEK_END)
                if out.read(1) != b"\n":
                    lines = b"\n" + lines
            out.write(lines)
    except OSError as exc:
        _warn("%s: not written (%s): get --all --phase reads these archived files", path, exc)


def archived_phases(path: Path) -> dict[str, str]:
    """The phase of each archived resource's file by its blob (hex), as `append_archived` kept them;
    empty if the file is missing or of another format. A line that is not whole is left out."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    if not data.startswith(_ARCHIVED_HEADER):
        return {}
    found: dict[str, str] = {}
    intern = sys.intern
    for line in data[len(_ARCHIVED_HEADER) :].decode(errors="replace").split("\n")[:-1]:  # whole lines
        blob, tab, phase = line.partition("\t")
        if len(blob) == 40 and tab and phase and "\t" not in phase:
            found[blob] = intern(phase)
    return found


def load(path: Path) -> dict[bytes, Facts]:
    """The facts saved at `path` by blob sha (20 bytes); empty if there are none it can use."""
    from gitops_acp.controllers.cold import Facts

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        _warn("%s: not read (%s): finished tasks' files are read instead", path, exc)
        return {}
    if not data.startswith(_HEADER):
        return {}  # another format or version: its facts may not be what this one says
    facts: dict[bytes, Facts] = {}
    intern = sys.intern
    try:
        for line in data[len(_HEADER) :].decode().splitlines():
            sha, phase, owner, ttl, finished, settled = line.split("\t")
            facts[bytes.fromhex(sha)] = Facts(
                intern(phase),
                True,
                None if owner == _NONE else owner,
                None if ttl == _NONE else float(ttl),
                None if finished == _NONE else float(finished),
                {"1": True, "0": False}[settled],
            )
    except (ValueError, KeyError):
        _warn("%s: unreadable, not used: finished tasks' files are read instead", path)
        return {}
    return facts


def phases(path: Path) -> dict[str, str]:
    """The phase of each finished resource whose facts are saved at `path`, by its status file's
    blob (hex, as `git ls-tree` names it); empty if there are none it can use. For a reader that
    filters by phase (`get --phase`): a file whose blob is here need not be read to know its
    phase. Parsed without the models (no pydantic) and without building Facts."""
    try:
        data = path.read_bytes()
    except OSError:  # missing or unreadable: every file is read, as without saved facts
        return {}
    if not data.startswith(_HEADER):
        return {}
    found: dict[str, str] = {}
    intern = sys.intern
    for line in data[len(_HEADER) :].decode(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) != 6 or len(fields[0]) != 40 or not fields[1]:
            return {}  # broken (`load` says so): not used at all, as `load` does
        found[fields[0]] = intern(fields[1])
    return found


def saved_phases(common_dir: Path, branches: Iterable[str]) -> dict[str, str]:
    """The phases a serve of the repository whose git dir is `common_dir` saved for each of its
    status `branches` (`phases`, and `archived_phases`), together: a blob's phase is the same on
    every branch."""
    from gitops_acp.store.recovery import lock_dir  # here: `get --phase` imports it only if asked

    folder = lock_dir(common_dir)
    saved: dict[str, str] = {}
    for branch in branches:
        saved |= archived_phases(archived_path_for(folder, branch))
        saved |= phases(path_for(folder, branch))
    return saved


def other_phase(saved: Callable[[], dict[str, str]], wanted: str) -> Callable[[str], bool]:
    """A list's `skip` (`readers.listing`) for a phase filter: whether a status file's blob is
    saved in another phase than `wanted`; `saved` is read when first asked (a list asks only
    once its filter refuses files)."""
    known: dict[str, str] | None = None

    def skip(blob: str) -> bool:
        nonlocal known
        if known is None:
            known = saved()
        phase = known.get(blob)
        return phase is not None and phase != wanted

    return skip


def _warn(message: str, *args: object) -> None:
    import logging

    logging.getLogger("gitops_acp").warning(message, *args)


def save(path: Path, entries: Iterable[tuple[bytes, Facts]]) -> int:
    """Write the facts of finished resources (blob sha, facts) to `path`; return how many."""
    lines = [
        f"{sha.hex()}\t{facts.phase}\t{facts.owner or _NONE}\t"
        f"{_number(facts.ttl)}\t{_number(facts.finished_at)}\t{int(facts.settled)}\n"
        for sha, facts in entries
        if facts.terminal
    ]
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as out:
            out.write(_HEADER)
            out.write("".join(lines).encode())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return len(lines)


def _number(value: float | None) -> str:
    return _NONE if value is None else repr(value)  # repr: the same float read back
