"""Objects as the readers show them: merged from `main` and the status branches, reading only what
is shown (DESIGN §9). Used by `get`, `describe` (cli/views.py re-exports these) and the HTTP API.

With shards (docs/scale.md) the status side is every status branch merged (`store/shards.py`):
each object from the branch that holds it, the newest tip's copy when several do. Every declared
resource is shown with its status from the tip of the status branch (a resource committed a
moment ago shows up at once, with empty status), plus the resources that exist only on the status
branch (tool calls, delegated tasks).

`lookup` reads through any `Reader` (a `ReadOnlyRepo`: no GitPython) and works on plain dicts; the
pydantic models (to parse a file of `main`) are imported only by the functions that parse one,
when they do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitops_acp.resources.meta import (
    ANNOTATION_SOURCE,
    ARCHIVE_ROOT,
    FANNED_OUT,
    LABEL_PARENT_TOOLCALL,
    LABEL_SCHEDULE,
    Kind,
)
from gitops_acp.store import shards, yamlio
from gitops_acp.store.statustree import archived_names, read_status_file, read_tip, status_names

if TYPE_CHECKING:  # imported where used: pydantic and GitPython only when a reader needs them
    from gitops_acp.resources.lifecycle import Key
    from gitops_acp.resources.loader import Loaded
    from gitops_acp.store.desired import DesiredReader
    from gitops_acp.store.git import GitRepo, Reader

__all__ = ["STATUS_ONLY", "Found", "Listing", "Snapshot", "listing", "lookup", "snapshot", "status_of"]


@dataclass(frozen=True)
class Snapshot:
    """Declared and observed resources of one repository, merged by (kind, name)."""

    objects: dict[tuple[Kind, str], dict[str, Any]]
    status_commit: str | None
    main_commit: str | None
    branches: dict[tuple[Kind, str], str] = field(default_factory=dict)  # where each status came from

    def branch_of(self, key: tuple[Kind, str]) -> str:
        """The status branch holding the object's status (its events are there)."""
        return self.branches.get(key, shards.UNSHARDED)

    def of_kind(self, kind: Kind) -> list[dict[str, Any]]:
        """Documents of one kind, sorted by name."""
        return [
            doc for (k, name), doc in sorted(self.objects.items(), key=lambda item: item[0][1]) if k == kind
        ]


def snapshot(repo: GitRepo, *, branch: str = "main", status_branch: str = "acp/status") -> Snapshot:
    """Read `main` and the tip of the status branch (every shard's, by default) once and merge them."""
    from gitops_acp.resources.models import to_document
    from gitops_acp.store.desired import DesiredReader

    main_commit = repo.resolve(f"refs/heads/{branch}")
    desired = DesiredReader(repo).read(main_commit)
    where: dict[Key, str] = {}
    if status_branch == shards.UNSHARDED:
        merged = shards.read_merged(repo)
        status_commit, documents, where = merged.tip, merged.documents, merged.branches
    else:
        status_commit, documents = read_tip(repo, status_branch)
    objects: dict[tuple[Kind, str], dict[str, Any]] = {}
    branches = {(Kind(kind_text), name): source for (kind_text, name), source in where.items()}
    for key, loaded in desired.resources.items():
        objects[key] = to_document(loaded.resource)
    for (kind_text, name), document in documents.items():
        key = (Kind(kind_text), name)
        objects[key] = _merged(objects[key], document) if key in objects else document
    return Snapshot(objects=objects, status_commit=status_commit, main_commit=main_commit, branches=branches)


@dataclass(frozen=True)
class Found:
    """One object as `get KIND NAME` and `describe` show it, and the status branch it came from."""

    document: dict[str, Any]
    branch: str
    archived: bool = False  # its status file is in `archive/` (DESIGN §9)


def lookup(repo: Reader, kind: Kind, name: str, *, branch: str = "main") -> Found | None:
    """One object merged from `main` and the status branches, reading only what it shows.

    The same object `snapshot` would give, without reading every resource: the status file at
    each status branch's tip (one read each; the newest tip's copy wins, as in `snapshot`; if no
    tip holds it in `status/`, its archived copy, DESIGN §9), and on
    `main` only the file its `acp.gitops.dev/source` annotation names. Only an object with no
    status yet, or a declared kind whose status carries no source, needs the whole of `main`
    read. A source file that no longer declares it (removed from main) leaves the status copy as
    it is: its spec as last reconciled. Only what it parses of `main` needs the pydantic models:
    an object whose status is all there is to show (a tool call, a delegated task, a task whose
    file left `main`) is read without them.
    """
    observed, holder, archived = status_of(repo, kind, name)
    main_commit = repo.resolve(f"refs/heads/{branch}")
    annotations = ((observed or {}).get("metadata") or {}).get("annotations") or {}
    source = annotations.get(ANNOTATION_SOURCE)
    declared: Loaded | None = None
    if main_commit is not None and source:
        data = repo.read_file(main_commit, source)
        if data is not None:
            from gitops_acp.resources.loader import load_file

            found = [
                loaded
                for loaded in load_file(source, data).loaded
                if (Kind(loaded.resource.kind), loaded.resource.metadata.name) == (kind, name)
            ]
            declared = found[0] if found else None
    elif main_commit is not None and (observed is None or not _only_on_status(kind, observed)):
        declared = _declared_on_main(repo, main_commit).get((kind, name))
    if declared is None and observed is None:
        return None
    return Found(_shown(declared, observed), holder, archived)


@dataclass(frozen=True)
class Listing:
    """One page of a kind's objects, and the name the next page starts after (None: the last)."""

    documents: list[dict[str, Any]]
    next_after: str | None


def listing(
    repo: GitRepo,
    kind: Kind,
    accept: Callable[[dict[str, Any]], bool],
    *,
    limit: int | None = None,
    after: str | None = None,
    archived: bool = False,
    branch: str = "main",
    desired: DesiredReader | None = None,
    named: Callable[[str], bool] | None = None,
) -> Listing:
    """The objects of `kind` by name, those `accept` keeps, `limit` of them after name `after`.

    What `snapshot` would show for the kind, reading only what the page needs: the status files'
    names from each status branch's trees (one `git ls-tree` of `status/<plural>` each), then the
    files themselves in name order until the page is full. Declared objects come from `main`
    (parsed whole: it is people's repository). Archived objects (DESIGN §9) are left out, also a
    Task still declared on main whose task was archived (one lookup each of those with no live
    status), unless `archived`: then `archive/<plural>` is listed too. A long-lived caller (the
    HTTP API) passes its own `desired` reader, which parses only what changed on `main` since its
    last read. `named` keeps names before anything of theirs is read: a name search reads no file
    of a name it does not keep.
    """
    from gitops_acp.store.desired import DesiredReader

    declared: dict[str, Loaded] = {}
    if kind not in STATUS_ONLY:
        main_commit = repo.resolve(f"refs/heads/{branch}")
        reader = desired if desired is not None else DesiredReader(repo)
        resources = reader.read(main_commit).resources if main_commit else {}
        declared = {name: loaded for (k, name), loaded in resources.items() if k == kind}
    blobs: dict[str, str] = {}  # name -> its status file's blob
    found = shards.status_branches(repo)
    for candidate in reversed(found):  # the oldest first: a newer tip's copy replaces it
        blobs.update(status_names(repo, candidate.tip, kind))
    hidden: set[str] = set()  # declared on main, archived: shown only with `archived`
    if kind in FANNED_OUT and archived:  # the whole archive: one ls-tree of it per branch
        for candidate in found:
            for name, sha in status_names(repo, candidate.tip, kind, root=ARCHIVE_ROOT).items():
                blobs.setdefault(name, sha)
    elif kind in FANNED_OUT:  # only whether the declared ones without a live status are archived
        unseen = [name for name in declared if name not in blobs and (named is None or named(name))]
        for candidate in found:
            hidden |= archived_names(repo, candidate.name, kind, unseen)
    names = sorted((set(declared) - hidden) | set(blobs))
    chosen: list[dict[str, Any]] = []
    for name in names:
        if (after is not None and name <= after) or (named is not None and not named(name)):
            continue
        blob = blobs.get(name)
        document = _shown(declared.get(name), yamlio.load(repo.read_blob(blob)) if blob else None)
        if not accept(document):
            continue
        if limit is not None and len(chosen) == limit:
            return Listing(chosen, str(chosen[-1]["metadata"]["name"]))
        chosen.append(document)
    return Listing(chosen, None)


def _declared_on_main(repo: Reader, commit: str) -> dict[Key, Loaded]:
    """Every resource declared in `commit` of `main` (the whole of it parsed: what `DesiredReader`,
    on a `GitRepo`, is for)."""
    from gitops_acp.store.desired import DesiredReader
    from gitops_acp.store.git import GitRepo

    if isinstance(repo, GitRepo):
        return dict(DesiredReader(repo).read(commit).resources)
    with GitRepo.open(repo.git_dir) as opened:
        return dict(DesiredReader(opened).read(commit).resources)


def status_of(repo: Reader, kind: Kind, name: str) -> tuple[dict[str, Any] | None, str, bool]:
    """The status document, its branch and whether it is archived: a live copy on any branch
    (the newest tip first) before an archived one."""
    branches = shards.status_branches(repo)
    for archived in (False, True):
        for candidate in branches:
            held = read_status_file(repo, candidate.tip, kind, name, archived=archived)
            if held is not None and held.archived == archived:
                return yamlio.load(held.data), candidate.name, archived
    return None, shards.UNSHARDED, False


def _shown(declared: Loaded | None, observed: dict[str, Any] | None) -> dict[str, Any]:
    """What get and describe show of one object: declared and observed merged, or whichever exists."""
    if declared is None:
        assert observed is not None
        return observed
    from gitops_acp.resources.models import to_document

    document = to_document(declared.resource)
    return _merged(document, observed) if observed is not None else document


def _merged(declared: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    """The spec as declared now, the status (and its annotations) as last reconciled."""
    metadata = {**declared.get("metadata", {})}
    annotations = (observed.get("metadata") or {}).get("annotations")
    if annotations:
        metadata["annotations"] = annotations
    return {**declared, "metadata": metadata, "status": observed.get("status")}


#: Kinds only the reconciler creates: their status is all there is, `main` is never read for them.
STATUS_ONLY: frozenset[Kind] = frozenset({Kind.ToolCall, Kind.Source})


def _only_on_status(kind: Kind, observed: dict[str, Any]) -> bool:
    """Objects only the reconciler creates (tool calls, delegated tasks, a schedule's tasks): never
    looked for on `main`."""
    labels = (observed.get("metadata") or {}).get("labels") or {}
    return kind in STATUS_ONLY or LABEL_PARENT_TOOLCALL in labels or LABEL_SCHEDULE in labels
