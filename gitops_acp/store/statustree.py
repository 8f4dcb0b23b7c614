"""The status branch's tip as a tree: how the writer keeps it in memory, and how readers read it.

    <tip> ── root ─┬─ status/ ── llms/ ── <name>.yaml                   (DESIGN §1, §9)
                   │          └─ tasks/ ── a/ ── b/ ── c/ ── <name>.yaml  (a, b, c: sha256(name))
                   ├─ archive/ ── tasks/ ── a/ ── b/ ── c/ ── <name>.yaml (archived: the last copy)
                   └─ bookmarks/ ── 2026-12/ ── 07T20                  (the last commit of that hour)

Tasks and tool calls are fanned out (`meta.fanout`) so a commit rewrites a handful of small trees
whatever the tip holds. Archived resources (`archive/`, written by `archive:` commits) keep their
last status file, so `get task NAME` still finds one; the writer and start-up never read them,
only the trees on a path being changed.

Bookmarks let a reader start a walk of the history near a resource instead of at the tip: the
first commit of each hour (UTC, by commit time) records the commit before it, the last one of an
earlier hour, as `bookmarks/<YYYY-MM>/<DD>T<HH>` (its sha and a newline). `history` of an
archived resource starts at the first bookmark holding its archived file, so its walk covers the
resource's life and retention, not everything committed since (docs/growth.md).

The writer (store/status.py) holds the tip as a `TreeEditor`; `read_tip` is the same model read
once, for the command line. Before the fan-out, tasks and tool calls sat flat in
`status/<plural>/`: `StatusTree.legacy` finds such files so the writer moves them (one commit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gitops_acp.errors import StoreError
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import (
    ARCHIVE_ROOT,
    FANNED_OUT,
    PLURALS,
    STATUS_ROOT,
    Kind,
    legacy_status_path,
    names_under,
    parse_status_path,
    status_path,
)

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:  # at run time only where used: reading one file loads neither GitPython nor PyYAML
    from typing import Any, NamedTuple

    from gitops_acp.store.git import GitRepo, Reader, TreeEditor
else:
    from gitops_acp.tuples import NamedTuple

__all__ = [
    "BOOKMARKS_ROOT",
    "DEFAULT_BRANCH",
    "FILE_MODE",
    "STATUS_DIR",
    "Found",
    "StatusTree",
    "archived_names",
    "bookmark_path",
    "branch_ref",
    "live_paths",
    "read_status_file",
    "read_status_files",
    "read_tip",
    "status_names",
]

DEFAULT_BRANCH = "refs/heads/acp/status"
STATUS_DIR = STATUS_ROOT
FILE_MODE = "100644"
BOOKMARKS_ROOT = "bookmarks"


def bookmark_path(timestamp: float) -> str:
    """Where the bookmark of the hour (UTC) holding `timestamp` is: `bookmarks/2026-12/07T20`."""
    from time import gmtime  # a built-in module: nothing to load

    t = gmtime(timestamp)
    return f"{BOOKMARKS_ROOT}/{t.tm_year:04d}-{t.tm_mon:02d}/{t.tm_mday:02d}T{t.tm_hour:02d}"


def branch_ref(branch: str) -> str:
    """The full ref name of a branch given short (`acp/status`) or full."""
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


class StatusTree:
    """The status branch's tip, edited in place by the writer and rewritten only where it changed.

    Not a dataclass (nor is `Found`, a named tuple): `history` imports this module, and importing
    `dataclasses` would cost it ~6 ms (docs/growth.md).
    """

    def __init__(self, tip: str | None, tree: TreeEditor, tip_time: float | None = None) -> None:
        self.tip = tip
        self.tree = tree
        self.tip_time = tip_time  # the tip's commit time (read by the writer): the next bookmark's hour

    @classmethod
    def load(cls, repo: GitRepo, tip: str | None) -> StatusTree:
        """The tip `tip` (None: an empty branch); its levels are read when first used."""
        from gitops_acp.store.git import TreeEditor  # here: see the imports

        root = repo.tree_of(tip) if tip is not None else None
        return cls(tip, TreeEditor(repo.read_tree, root))

    def documents(
        self,
        repo: GitRepo,
        blobs: dict[Key, str] | None = None,
        *,
        known: Callable[[Key, str], bool] | None = None,
    ) -> dict[Key, dict[str, Any]]:
        """Read and parse every status file under `status/` (never `archive/`), keyed (kind, name);
        each file's blob sha goes into `blobs` if given. A file `known(key, blob)` says the caller
        knows already is not read: only its blob goes into `blobs`.

        The tip as committed (call it with no edits pending): one `git ls-tree -r status/`, then
        the files; the editor reads its levels only when a checkpoint needs them.
        """
        from gitops_acp.store import yamlio

        docs: dict[Key, dict[str, Any]] = {}
        if self.tip is None:
            return docs
        ours: dict[str, tuple[Key, str]] = {}
        for path, sha in repo.list_tree(self.tip, STATUS_ROOT).items():
            found = parse_status_path(path)
            if found is None:  # anything else on the branch is carried over, not ours to read
                continue
            if known is not None and known(found, sha):
                if blobs is not None:
                    blobs[found] = sha
                continue
            ours[path] = (found, sha)
        try:
            contents = repo.read_blobs([sha for _, sha in ours.values()])
        except StoreError as exc:
            raise StoreError(f"{STATUS_ROOT}/ at {self.tip[:12]}: {exc}") from exc
        for path, (found, sha) in ours.items():
            try:
                docs[found] = yamlio.load(contents[sha])
            except StoreError as exc:
                raise StoreError(f"{path} at {self.tip[:12]}: {exc}") from exc
            if blobs is not None:
                blobs[found] = sha
        return docs

    def legacy(self) -> list[tuple[Kind, str, str, str]]:
        """Tasks and tool calls still in the flat layout: (kind, name, mode, sha) each."""
        found: list[tuple[Kind, str, str, str]] = []
        for kind in sorted(FANNED_OUT):
            for filename, (mode, sha) in self.tree.listdir(f"{STATUS_ROOT}/{PLURALS[kind]}").items():
                name = filename.removesuffix(".yaml")
                if filename.endswith(".yaml") and parse_status_path(legacy_status_path(kind, name)):
                    found.append((kind, name, mode, sha))
        return found


def read_tip(repo: GitRepo, branch: str = DEFAULT_BRANCH) -> tuple[str | None, dict[Key, dict[str, Any]]]:
    """Return the status branch's tip and every status document there, keyed (kind, name)."""
    tip = repo.resolve(branch_ref(branch))
    tree = StatusTree.load(repo, tip)
    return tip, tree.documents(repo)


class Found(NamedTuple):
    """One status file as read from a tip: its content, and whether it was archived."""

    data: bytes
    archived: bool


def read_status_file(repo: Reader, tip: str, kind: Kind, name: str, *, archived: bool = True) -> Found | None:
    """One resource's file at `tip`: in `status/` (or the flat layout of old tips), else in
    `archive/` when `archived`; None if neither holds it. One round trip to git for all three."""
    return read_status_files(repo, [tip], kind, name, archived=archived)[0]


def live_paths(kind: Kind, name: str) -> list[str]:
    """Where a resource's file may be in `status/`: its path, then (tasks and tool calls) the flat
    layout's of tips written before the fan-out."""
    paths = [status_path(kind, name)]
    if kind in FANNED_OUT:
        paths.append(legacy_status_path(kind, name))
    return paths


def read_status_files(
    repo: Reader, commits: Sequence[str], kind: Kind, name: str, *, archived: bool = True
) -> list[Found | None]:
    """`read_status_file` at each of `commits` (a resource's history): every path it may have at
    every commit asked of git at once, in one round trip."""
    paths = live_paths(kind, name)
    if archived:
        paths.append(status_path(kind, name, root=ARCHIVE_ROOT))
    found: list[Found | None] = []
    for first in repo.read_first_files([(commit, paths) for commit in commits]):
        if first is None:
            found.append(None)
        else:
            found.append(Found(first[1], archived=archived and first[0] == len(paths) - 1))
    return found


def archived_names(repo: Reader, branch: str, kind: Kind, names: list[str]) -> set[str]:
    """Which of `names` are archived on `branch`: one `cat-file --batch-check` for all (none read)."""
    tip = repo.resolve(branch_ref(branch))
    if tip is None or not names or repo.read_tree(tip, f"{ARCHIVE_ROOT}/{PLURALS[kind]}") is None:
        return set()
    paths = {status_path(kind, name, root=ARCHIVE_ROOT): name for name in names}
    return {paths[path] for path in repo.files_present(tip, list(paths))}


def status_names(repo: Reader, tip: str, kind: Kind, *, root: str = STATUS_ROOT) -> dict[str, str]:
    """Every resource of `kind` under `root` at `tip`, name -> blob sha, with one `git ls-tree`.

    Names only, no file read: what a list needs to page through before it reads what it shows.
    """
    return names_under(repo.list_tree(tip, f"{root}/{PLURALS[kind]}"), kind, root)
