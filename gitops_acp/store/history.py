"""A resource's events: the checkpoint commits on the status branch that touched its file.

`gitops-acp describe` and `gitops-acp history` show these. The status writer puts the phase move
of every resource in the commit message (the subject for one resource, a body line each for a
group commit), and the file at that commit holds the detail. Reads are always bounded with
`git log -n`: a path-limited log over a whole long history is slow (GIT-NOTES "History").
"""

from __future__ import annotations

from gitops_acp.errors import StoreError
from gitops_acp.resources.meta import (
    ANNOTATION_FIRST_CHECKPOINT,
    ARCHIVE_ROOT,
    FANNED_OUT,
    Kind,
    legacy_status_path,
    parse_rfc3339,
    status_path,
)
from gitops_acp.store import statusfields
from gitops_acp.store.statustree import (
    BOOKMARKS_ROOT,
    DEFAULT_BRANCH,
    bookmark_path,
    read_status_file,
    read_status_files,
)

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    from gitops_acp.store.git import CommitInfo, Reader
    from gitops_acp.store.statustree import Found
else:
    from gitops_acp.tuples import NamedTuple

__all__ = ["Event", "events"]

_PROBES = 8  # bookmarks looked at in one round trip to git (`_archived_start`)


class Event(NamedTuple):
    """One checkpoint of one resource (a named tuple: `dataclasses` costs `history` ~6 ms to import)."""

    sha: str  # the checkpoint commit
    timestamp: float  # its committer time, seconds since the epoch
    old_phase: str  # "-" when the message does not say
    new_phase: str
    detail: str  # status.statusDetail at that commit (plus status.error); "deleted"/"archived" if it went


def events(repo: Reader, *, branch: str = DEFAULT_BRANCH, kind: str, name: str, n: int = 20) -> list[Event]:
    """Return the newest `n` checkpoints of resource (kind, name) on `branch`, newest first.

    Its file's path, and for tasks and tool calls also the flat path they had before the fan-out
    (DESIGN §9), so a history begun before an upgrade reads as one. An archived resource's last
    event is the `archive:` commit that moved its file out of `status/`.

    One path per `git log`: git uses the commit-graph's changed-path Bloom filters only for a
    single pathspec, and with them the walk back to the first checkpoint of a task 100,000 tasks
    old takes ~5 ms instead of ~100 (docs/growth.md). The flat path is looked up only where it
    can have history: before the commit that moved the file into the fan-out (its parent still
    has the flat file), or when the fan-out path has none at all (a branch never migrated). The
    files of every commit are read in one round trip to git. An archived resource's walk starts
    at the first hour's bookmark that holds its archived file (`_archived_start`), not at the
    tip: it then covers the resource's life and retention, not every commit made since.
    """
    resource = Kind(kind)
    ref = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    tip = repo.resolve(ref)
    at_tip = read_status_file(repo, tip, resource, name) if tip is not None else None
    since = _first_checkpoint(at_tip)
    start = ref
    if at_tip is not None and at_tip.archived and tip is not None:
        start = _archived_start(repo, tip, resource, name, at_tip.data, since) or ref
    commits = repo.log(start, path=status_path(resource, name), n=n, since=since, trailers=False)
    if resource in FANNED_OUT and len(commits) < n:
        flat = legacy_status_path(resource, name)
        before = f"{commits[-1].sha}^" if commits else ref
        # Only the commit that fanned the branch out (`layout: ...`, store/status.py) moved a file
        # that already had a history: a file whose oldest commit is any other was made here.
        moved = bool(commits) and commits[-1].subject.startswith("layout: ")
        if not commits or (moved and repo.read_file(before, flat) is not None):
            commits += repo.log(before, path=flat, n=n - len(commits), since=since, trailers=False)
    files = read_status_files(repo, [commit.sha for commit in commits], resource, name)
    found: list[Event] = []
    for commit, file in zip(commits, files, strict=True):
        old, new = _phases(commit, f"{kind}/{name}: ")
        found.append(Event(commit.sha, commit.timestamp, old, new, _detail(file)))
    return found


def _archived_start(
    repo: Reader, tip: str, kind: Kind, name: str, data: bytes, since: float | None
) -> str | None:
    """Where a walk of an archived resource's history may start: the first bookmark whose commit
    holds its archived file as the tip does (None: none does yet, or no bookmarks; start at the tip).

    Bookmarks (statustree.py) are the last commits of past hours, in time order. From the first
    holding the file, the walk covers the resource's life and its retention, not every commit
    since. It is exact: a bookmark names the parent of the commit that wrote it, so an ancestor
    of the tip; the first holding the file already holds its archive commit; and after that
    nothing writes the resource's `status/` file again (an archived Task never runs again, DESIGN
    §9; a second life would be archived as a new file, which earlier bookmarks do not hold). A
    bookmark that is not a commit, or no bookmark, and the walk starts at the tip as before.
    """
    months = repo.read_tree(tip, BOOKMARKS_ROOT)
    if not months:
        return None
    first = bookmark_path(since).split("/", 1)[1] if since is not None else ""
    marks: list[str] = []  # the bookmarks' paths, oldest first, from the resource's first hour on
    for month in sorted(months):
        if month < first[:7] or months[month][0] != "40000":
            continue
        hours = repo.read_tree(tip, f"{BOOKMARKS_ROOT}/{month}") or {}
        marks += [f"{BOOKMARKS_ROOT}/{month}/{h}" for h in sorted(hours) if f"{month}/{h}" >= first]
    path = status_path(kind, name, root=ARCHIVE_ROOT)
    # Holding the file is monotone in time (the archive only grows): search for the first that
    # does, up to _PROBES bookmarks a round and two round trips to git a round (their commits,
    # then the file at each), ~4 rounds for a year of hours.
    start, low, high = None, 0, len(marks)  # the first holding it is in [low, high), or none
    try:
        while low < high:
            step = max(1, (high - low) // (_PROBES + 1))
            probes = list(range(low + step - 1, high, step))[:_PROBES] if high - low > _PROBES else []
            probes = probes or list(range(low, high))
            read = repo.read_first_files([(tip, [marks[i]]) for i in probes])
            commits = [found[1].decode("ascii").strip() if found else "" for found in read]
            if not all(len(commit) == 40 for commit in commits):
                return None  # a bookmark that is not one: walk from the tip, as without any
            held = repo.read_first_files([(commit, [path]) for commit in commits])
            hits = [j for j, found in enumerate(held) if found is not None and found[1] == data]
            if not hits:
                low = probes[-1] + 1
                continue
            j = hits[0]
            start, high = commits[j], probes[j]
            low = probes[j - 1] + 1 if j else low
    except (StoreError, UnicodeDecodeError):
        return None
    return start


def _first_checkpoint(found: Found | None) -> float | None:
    """When the resource's history began, from its status file at the tip (None: walk it all).

    A minute earlier than recorded: commit times are whole seconds from the same clock, and the
    minute absorbs a clock stepped back a little. Without the annotation (status files written
    before it existed, a resource deleted from the tip) the whole history is walked, as before.
    """
    if found is None:
        return None
    fast = statusfields.strings(found.data, ("metadata", "annotations", ANNOTATION_FIRST_CHECKPOINT))
    try:
        if fast is not None:  # read without PyYAML: the same answer (store/statusfields.py)
            if fast[0] is None:
                return None
            return parse_rfc3339(fast[0]) - 60.0
        from gitops_acp.store import yamlio

        annotations = (yamlio.load(found.data).get("metadata") or {}).get("annotations") or {}
        return parse_rfc3339(str(annotations[ANNOTATION_FIRST_CHECKPOINT])) - 60.0
    except (KeyError, ValueError, AttributeError, StoreError):
        return None


def _phases(commit: CommitInfo, prefix: str) -> tuple[str, str]:
    """Find "<Kind>/<name>: <old> -> <new>" for this resource in the subject or the body."""
    for line in [commit.subject, *commit.body.splitlines()]:
        if line.startswith(prefix):
            old, arrow, new = line[len(prefix) :].partition(" -> ")
            if arrow:
                return old.strip() or "-", new.strip() or "-"
    return "-", "-"


def _detail(found: Found | None) -> str:
    """What a checkpoint says of the resource: its status detail (and error) in the file it left."""
    if found is None:
        return "deleted"
    if found.archived:
        return "archived"
    fast = statusfields.strings(found.data, ("status", "statusDetail"), ("status", "error"))
    if fast is not None:  # read without PyYAML: the same answer (store/statusfields.py)
        detail, error = fast
    else:
        from gitops_acp.store import yamlio

        try:
            doc = yamlio.load(found.data)
        except StoreError as exc:
            return f"unreadable: {exc}"
        status: Any = doc.get("status")
        if not isinstance(status, dict):
            return ""
        detail, error = status.get("statusDetail"), status.get("error")
    parts = [str(detail)] if detail else []
    if error:
        parts.append(f"error: {error}")
    return "; ".join(parts)
