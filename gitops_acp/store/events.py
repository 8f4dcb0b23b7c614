"""Checkpoint events: one per resource per commit of a status branch (DESIGN §11).

An event is `{commit, time, kind, name, from, to}`: the commit that recorded a checkpoint, its
committer time, the resource, and its phase before and after (a Task's or ToolCall's phase, else
the condition an LLM, Agent, ... shows; the word the commit line uses). `gitops-acp events`, the
Manager's live `EventHub` (reactor/events.py) and `GET /v1/events` all derive events here, from the
commits themselves, so a live stream and a replay from history are the same events.

How a commit becomes events, cheaply: one `git log --first-parent --raw` over the range names, for
each commit, the files it changed against its first parent (the cost is the change, never the size
of the tip: DESIGN §9), and its message carries each resource's move (`<Kind>/<name>: <old> ->
<new>`, DESIGN §1). Per resource changed:

- created (no status file before): `from` is null;
- deleted (its file left the status branch: the resource left `main`): `to` is null;
- archived (its file moved from `status/` to `archive/` by an `archive:` commit): `to` is
  `"Archived"` (it is still found by `get`, `describe`, `history`);
- a file moved as it is (the one-time fan-out of old layouts, `layout:` commits) is no event.

Phases come from the commit's line for that resource; a status file changed by a commit that has
no such line (someone else's commit on the branch) has its phases read from the two files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gitops_acp.errors import StoreError
from gitops_acp.resources.meta import (
    ANNOTATION_FIRST_CHECKPOINT,
    ARCHIVE_ROOT,
    FANNED_OUT,
    PLURALS,
    STATUS_ROOT,
    Kind,
    legacy_status_path,
    parse_rfc3339,
    parse_status_path,
    status_path,
)
from gitops_acp.store import yamlio
from gitops_acp.store.git import ReadOnlyRepo, process
from gitops_acp.store.statustree import DEFAULT_BRANCH, branch_ref, read_status_file

if TYPE_CHECKING:
    from gitops_acp.store.git import Reader

__all__ = [
    "ARCHIVED",
    "Event",
    "UnknownCommitError",
    "commits",
    "follow",
    "format_time",
    "group",
    "read",
    "resolve_commit",
]

ARCHIVED = "Archived"  # `to` of a resource an `archive:` commit moved out of the tip

_ZERO = "0" * 40
_LINE = re.compile(r"^([A-Za-z]+)/([a-z0-9][-a-z0-9]*): (.+?) -> (.+)$")
_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_FIELDS = "%x1e%H %ct%n%B"  # a record separator, then "<sha> <time>", then the message


class UnknownCommitError(StoreError):
    """The commit to resume after is not on the status branch (a typo, or history was replaced)."""


@dataclass(frozen=True)
class Event:
    """One resource's checkpoint in one commit of a status branch."""

    commit: str  # the checkpoint commit (full sha): the SSE id, what `--since` and Last-Event-ID take
    time: float  # its committer time, seconds since the epoch (git keeps whole seconds)
    kind: str  # Task, ToolCall, LLM, ...
    name: str
    old: str | None  # the phase before; None: the resource had no status file (created)
    new: str | None  # the phase after; None: its file was deleted; "Archived": moved to archive/

    def to_json(self) -> dict[str, Any]:
        """The event as the API and `events -o json` give it: `{commit, time, kind, name, from, to}`."""
        return {
            "commit": self.commit,
            "time": format_time(self.time),
            "kind": self.kind,
            "name": self.name,
            "from": self.old,
            "to": self.new,
        }


def format_time(ts: float) -> str:
    """Commit times as RFC 3339 in UTC, whole seconds as git keeps them: `2026-12-05T07:25:11Z`."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_commit(repo: Reader, text: str) -> str | None:
    """The full sha of commit `text` (a sha or an abbreviation of one), or None if there is none."""
    if not _HEX.fullmatch(text):
        return None
    args = ("rev-parse", "--verify", "--quiet", f"{text}^{{commit}}")
    proc = process.in_repo(repo.git_dir, *args, check=False)
    sha = proc.stdout.decode("ascii", "replace").strip()
    return sha if proc.returncode == 0 and len(sha) == 40 else None


def read(
    repo: Reader,
    *,
    branch: str = DEFAULT_BRANCH,
    after: str | None = None,
    until: str | None = None,
    n: int | None = None,
    kind: Kind | None = None,
    name: str | None = None,
    trusted: bool = False,
) -> list[Event]:
    """Return the events of the commits of `branch` after commit `after`, oldest first.

    `until`: a commit of the branch to stop at (included; default: the branch's tip). `n`: only
    the newest `n` commits of the range (that touch what is asked for). `kind`: that kind's events
    only; with `name`, one resource's (its commits found by path, bounded like `history`).
    Raises UnknownCommitError if `after` is not a commit of the branch (up to `until`).
    `trusted`: `after` is a full sha known to be an ancestor of `until` (the live hub's own
    cursor): one git process instead of three.
    """
    short = branch.removeprefix("refs/heads/")
    tip = until if until is not None else repo.resolve(branch_ref(branch))
    if tip is None:
        if after is not None:
            raise UnknownCommitError(f"commit {after} is not on {short}: the branch does not exist")
        return []
    excluded: list[str] = []
    if after is not None:
        full = after if trusted else resolve_commit(repo, after)
        if full is None or not (trusted or _is_ancestor(repo, full, tip)):
            raise UnknownCommitError(f"commit {after} is not on {short}")
        if full == tip:
            return []
        excluded = [f"^{full}"]
    if kind is not None and name is not None:
        found = [_derive(repo, *record) for record in _resource_log(repo, tip, excluded, n, kind, name)]
        return [event for events in found for event in events if event.kind == kind and event.name == name]
    if kind is not None:
        paths = [f"{STATUS_ROOT}/{PLURALS[kind]}/", f"{ARCHIVE_ROOT}/{PLURALS[kind]}/"]
    else:
        paths = [f"{STATUS_ROOT}/", f"{ARCHIVE_ROOT}/"]
    found = [_derive(repo, *record) for record in _log(repo, tip, excluded, paths, n=n)]
    return [event for events in found for event in events if kind is None or event.kind == kind]


_Record = tuple[str, float, str, list[tuple[str, str | None, str | None]]]  # sha, time, message, changes


def _log(
    repo: Reader,
    tip: str,
    excluded: list[str],
    paths: list[str],
    *,
    n: int | None,
    since: float | None = None,
) -> list[_Record]:
    """The commits of `tip` (not in `excluded`) touching `paths`, oldest first, with their changes
    there (one `git log --first-parent --raw`)."""
    args = ["log", "-z", "--first-parent", "--reverse", "--no-renames", "--raw", "--no-abbrev"]
    args += [f"--format={_FIELDS}"]
    args += [f"-n{max(n, 0)}"] if n is not None else []
    args += [f"--since={int(since)}"] if since is not None else []
    args += ["--end-of-options", tip, *excluded, "--", *paths]
    out = _git(repo, *args).stdout
    return [_parse_record(record) for record in out.split(b"\x1e")[1:]]


def _resource_log(
    repo: Reader, tip: str, excluded: list[str], n: int | None, kind: Kind, name: str
) -> list[_Record]:
    """One resource's commits, oldest first: one `git log` per path, as `history` reads them.

    git uses the commit-graph's changed-path Bloom filters only for a single pathspec (history.py):
    so the fanned-out path, then the flat path of old layouts only where it can have history
    (before the commit that moved the file, or when the fanned-out path has none), then the
    archive path only when the resource is archived at `tip`. A commit found by two paths (the
    fan-out's move, the archive commit) is one record with both changes.
    """
    since, archived = (None, True) if excluded else _first_checkpoint(repo, tip, kind, name)
    records = _log(repo, tip, excluded, [status_path(kind, name)], n=n, since=since)
    if kind in FANNED_OUT and (n is None or len(records) < n):
        flat = legacy_status_path(kind, name)
        # From the commit that moved the file (its removal of the flat file is part of that move).
        start = records[0][0] if records else tip
        if not records or repo.read_file(f"{start}^", flat) is not None:
            records = _merged(_log(repo, start, excluded, [flat], n=n, since=since), records)
    if archived:
        archive = status_path(kind, name, root=ARCHIVE_ROOT)
        records = _merged(records, _log(repo, tip, excluded, [archive], n=n))
    return records[-n:] if n is not None else records


def _merged(first: list[_Record], then: list[_Record]) -> list[_Record]:
    """`first` then `then` (both oldest first, `then` not older), a commit in both merged once."""
    merged = {record[0]: record for record in first}
    for sha, when, message, changes in then:
        if sha in merged:
            merged[sha] = (sha, when, message, merged[sha][3] + changes)
        else:
            merged[sha] = (sha, when, message, changes)
    return list(merged.values())


def _git(repo: Reader, *args: str) -> process.Finished:
    return process.in_repo(repo.git_dir, *args)


def _is_ancestor(repo: Reader, ancestor: str, descendant: str) -> bool:
    proc = process.in_repo(repo.git_dir, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    if proc.returncode not in (0, 1):
        raise StoreError(f"git merge-base failed in {repo.git_dir}: {process.tail(proc)}")
    return proc.returncode == 0


def _first_checkpoint(repo: Reader, tip: str, kind: Kind, name: str) -> tuple[float | None, bool]:
    """When the resource's history began (its first-checkpoint annotation, a minute early, as
    `history` bounds its walk; None: walk it all) and whether it is archived at `tip`."""
    found = read_status_file(repo, tip, kind, name)
    if found is None:
        return None, False
    try:
        annotations = (yamlio.load(found.data).get("metadata") or {}).get("annotations") or {}
        return parse_rfc3339(str(annotations[ANNOTATION_FIRST_CHECKPOINT])) - 60.0, found.archived
    except (KeyError, ValueError, AttributeError, StoreError):
        return None, found.archived


@dataclass
class _Files:
    """One resource's files in one commit and its first parent (blob shas; None: absent)."""

    before: str | None = None  # under status/
    after: str | None = None  # under status/
    archived: str | None = None  # added under archive/


def _parse_record(record: bytes) -> _Record:
    """One `git log --raw -z` record: "<sha> <time>\\n<message>\\0", then its changes."""
    head, _nul, raw = record.partition(b"\0")
    first, _nl, message_bytes = head.partition(b"\n")
    sha_bytes, _space, ct = first.partition(b" ")
    changes: list[tuple[str, str | None, str | None]] = []
    fields = raw.lstrip(b"\n").split(b"\0")
    for meta, path_bytes in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        _old_mode, _new_mode, old_sha, new_sha, _status = meta[1:].decode("ascii").split(" ")
        path = path_bytes.decode("utf-8", "surrogateescape")
        changes.append((path, old_sha if old_sha != _ZERO else None, new_sha if new_sha != _ZERO else None))
    return sha_bytes.decode("ascii"), float(ct), message_bytes.decode("utf-8", "replace"), changes


def _derive(
    repo: Reader, sha: str, when: float, message: str, changes: Iterable[tuple[str, str | None, str | None]]
) -> list[Event]:
    """The events of commit `sha`, given the files it changed: (path, blob before, blob after)."""
    files: dict[tuple[Kind, str], _Files] = {}
    for path, old_sha, new_sha in changes:
        key = parse_status_path(path)
        if key is None:
            continue
        entry = files.setdefault(key, _Files())
        if path.startswith(f"{STATUS_ROOT}/"):
            entry.before = old_sha or entry.before
            entry.after = new_sha or entry.after
        elif new_sha is not None:
            entry.archived = new_sha
    moves = _moves(message)
    order = {key: i for i, key in enumerate(moves)}
    events: list[Event] = []
    ranked = sorted(files.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    for (kind, name), entry in ranked:
        if entry.before == entry.after and entry.archived is None:
            continue  # moved as it is (the fan-out of an old layout): nothing happened to it
        words = moves.get((kind, name))
        if words is None:  # not written by the reconciler: read the phases from the files
            words = (_phase(repo, entry.before), _phase(repo, entry.after))
        old = words[0] if entry.before is not None else None
        if entry.after is not None:
            new: str | None = words[1]
        elif entry.archived is not None:
            new = ARCHIVED
        else:
            new = None
        events.append(Event(sha, when, str(kind), name, old, new))
    return events


def follow(
    repo: ReadOnlyRepo, *, after: str | None, until: str, max_commits: int = 256, max_resources: int = 24
) -> list[Event] | None:
    """`read(after=..., until=...)` through the repository's persistent `git cat-file` alone.

    The live hub's path (reactor/events.py): a wake-up covers a few new commits, and diffing their
    trees object by object (only where the shas differ: the few trees on the changed paths) costs
    a fraction of a millisecond each, where a `git log` is a new process every time (~5 ms). None
    when `after` is not among the first-parent ancestors of `until` within `max_commits`, or the
    commits' lines name more than `max_resources` resources (~0.2 ms each this way: one `git log`
    is cheaper then); the caller then uses `read`, which also says whether `after` is on the branch.
    """
    chain: list[tuple[str, _Commit]] = []
    sha: str | None = until
    lines = 0
    while sha != after:
        if sha is None:  # the branch's first commit: `after` was not on the way
            return None
        commit = _read_commit(repo, sha)
        lines += sum(1 for line in commit.message.splitlines() if _LINE.match(line))
        if len(chain) >= max_commits or lines > max_resources:
            return None
        chain.append((sha, commit))
        sha = commit.parent
    return _follow_chain(repo, chain)


def _follow_chain(repo: ReadOnlyRepo, chain: list[tuple[str, _Commit]]) -> list[Event]:
    found: list[Event] = []
    parent_tree: str | None = None
    for i, (sha, commit) in enumerate(reversed(chain)):
        if i == 0:
            parent_tree = _read_commit(repo, commit.parent).tree if commit.parent else None
        changes: list[tuple[str, str | None, str | None]] = []
        _diff_trees(repo, parent_tree, commit.tree, "", changes)
        found.extend(_derive(repo, sha, commit.time, commit.message, changes))
        parent_tree = commit.tree
    return found


@dataclass(frozen=True)
class _Commit:
    tree: str
    parent: str | None  # the first parent
    time: float
    message: str


def _read_commit(repo: ReadOnlyRepo, sha: str) -> _Commit:
    found = repo.cat(sha)
    if found is None or found[1] != "commit":
        raise StoreError(f"no commit {sha} in {repo.git_dir}")
    head, _blank, message = found[2].partition(b"\n\n")
    tree, parent, when = "", None, 0.0
    for line in head.split(b"\n"):
        key, _space, value = line.partition(b" ")
        if key == b"tree":
            tree = value.decode("ascii")
        elif key == b"parent" and parent is None:
            parent = value.decode("ascii")
        elif key == b"committer":
            when = float(value.rsplit(b" ", 2)[1])
    return _Commit(tree, parent, when, message.decode("utf-8", "replace"))


_ROOTS = frozenset({STATUS_ROOT, ARCHIVE_ROOT})
_TREE_MODE = "40000"


def _diff_trees(
    repo: ReadOnlyRepo,
    old: str | None,
    new: str | None,
    prefix: str,
    out: list[tuple[str, str | None, str | None]],
) -> None:
    """Append (path, blob before, blob after) for each file that differs under `status/` and
    `archive/`, descending only into subtrees whose shas differ."""
    if old == new:
        return
    before, after = _tree(repo, old), _tree(repo, new)
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a == b or (not prefix and name not in _ROOTS):
            continue
        a_tree = a is not None and a[0] == _TREE_MODE
        b_tree = b is not None and b[0] == _TREE_MODE
        if a_tree or b_tree:
            _diff_trees(
                repo, a[1] if a and a_tree else None, b[1] if b and b_tree else None, f"{prefix}{name}/", out
            )
        a_blob = a[1] if a is not None and not a_tree else None
        b_blob = b[1] if b is not None and not b_tree else None
        if a_blob != b_blob:
            out.append((prefix + name, a_blob, b_blob))


def _tree(repo: ReadOnlyRepo, sha: str | None) -> dict[str, tuple[str, str]]:
    if sha is None:
        return {}
    found = repo.cat(sha)
    if found is None or found[1] != "tree":
        raise StoreError(f"no tree {sha} in {repo.git_dir}")
    from gitops_acp.store.git.objectreader import parse_tree

    return parse_tree(found[2])


def _moves(message: str) -> dict[tuple[Kind, str], tuple[str, str]]:
    """Each resource's "<Kind>/<name>: <old> -> <new>" line of a commit message, in message order."""
    moves: dict[tuple[Kind, str], tuple[str, str]] = {}
    for line in message.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        try:
            kind = Kind(match[1])
        except ValueError:
            continue
        moves.setdefault((kind, match[2]), (match[3].strip(), match[4].strip()))
    return moves


def _phase(repo: Reader, blob: str | None) -> str:
    """The word a commit line would use for the resource in blob `blob` (`-`: none, or unreadable)."""
    if blob is None:
        return "-"
    try:
        status = yamlio.load(repo.read_blob(blob)).get("status")
    except (StoreError, AttributeError):
        return "-"
    if not isinstance(status, dict):
        return "-"
    return str(status.get("phase") or status.get("status") or "-")


def commits(events: Iterable[Event]) -> list[str]:
    """The distinct commits of `events`, in order."""
    return list(dict.fromkeys(event.commit for event in events))


def group(events: Sequence[Event]) -> list[tuple[str, list[Event]]]:
    """`events` grouped by commit, in order: what one SSE id covers."""
    grouped: dict[str, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.commit, []).append(event)
    return list(grouped.items())
