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

import bisect
import heapq
import itertools
from collections.abc import Callable, Iterator

from gitops_acp.errors import StoreError
from gitops_acp.resources.meta import (
    ANNOTATION_SOURCE,
    ARCHIVE_ROOT,
    FANNED_OUT,
    LABEL_PARENT_TOOLCALL,
    LABEL_SCHEDULE,
    PLURALS,
    STATUS_ROOT,
    Kind,
    parse_status_path,
    status_path,
)
from gitops_acp.store import statusbranches, statusfields, yamlio
from gitops_acp.store.statustree import archived_names, live_paths, read_status_file, read_tip, status_names

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:  # imported where used: pydantic and GitPython only when a reader needs them
    from typing import Any, NamedTuple

    from gitops_acp.resources.lifecycle import Key
    from gitops_acp.resources.loader import Loaded
    from gitops_acp.store.desired import DesiredReader
    from gitops_acp.store.git import GitRepo, Reader
else:
    from gitops_acp.tuples import NamedTuple

__all__ = [
    "STATUS_ONLY",
    "Found",
    "Listing",
    "Snapshot",
    "SortedNames",
    "StatusNames",
    "listing",
    "lookup",
    "snapshot",
    "status_of",
]


# Named tuples, not dataclasses: `dataclasses` (and the `inspect` it loads) cost `get` and
# `describe` of one object ~8 ms of their ~85 (DESIGN §9: within 100 ms).


class Snapshot(NamedTuple):
    """Declared and observed resources of one repository, merged by (kind, name)."""

    objects: dict[tuple[Kind, str], dict[str, Any]]
    status_commit: str | None
    main_commit: str | None
    branches: dict[tuple[Kind, str], str]  # where each status came from

    def branch_of(self, key: tuple[Kind, str]) -> str:
        """The status branch holding the object's status (its events are there)."""
        return self.branches.get(key, statusbranches.UNSHARDED)

    def of_kind(self, kind: Kind) -> list[dict[str, Any]]:
        """Documents of one kind, sorted by name."""
        return [
            doc for (k, name), doc in sorted(self.objects.items(), key=lambda item: item[0][1]) if k == kind
        ]


def snapshot(repo: GitRepo, *, branch: str = "main", status_branch: str = "acp/status") -> Snapshot:
    """Read `main` and the tip of the status branch (every shard's, by default) once and merge them."""
    from gitops_acp.resources.models import to_document
    from gitops_acp.store import shards
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


class Found(NamedTuple):
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
        if data is not None and observed is not None and _as_reconciled(data, kind, name, observed):
            return Found(observed, holder, archived)
        if data is not None:
            declared = _declared_in(source, data, kind, name)
    elif main_commit is not None and (observed is None or not _only_on_status(kind, observed)):
        declared = _declared_on_main(repo, main_commit).get((kind, name))
    if declared is None and observed is None:
        return None
    return Found(_shown(declared, observed), holder, archived)


class Listing(NamedTuple):
    """One page of a kind's objects, and the name the next page starts after (None: the last)."""

    documents: list[dict[str, Any]]
    next_after: str | None


def listing(
    repo: Reader,
    kind: Kind,
    accept: Callable[[dict[str, Any]], bool],
    *,
    limit: int | None = None,
    after: str | None = None,
    archived: bool = False,
    branch: str = "main",
    desired: DesiredReader | None = None,
    named: Callable[[str], bool] | None = None,
    names: StatusNames | None = None,
    skip: Callable[[str], bool] | None = None,
) -> Listing:
    """The objects of `kind` by name, those `accept` keeps, `limit` of them after name `after`.

    What `snapshot` would show for the kind, reading only what the page needs: the status files'
    names of each status branch (`StatusNames`), then the files themselves in name order until
    the page is full. Declared objects come from `main` (parsed whole: it is people's
    repository). Archived objects (DESIGN §9) are left out, also a Task still declared on main
    whose task was archived (one lookup each of those with no live status), unless `archived`:
    then the names in `archive/<plural>` are listed too. A long-lived caller (the HTTP API) passes
    its own `desired` reader, which parses only what changed on `main` since its last read, and
    its own `names`, brought to each new tip by what changed. `named` keeps names before anything
    of theirs is read: a name search reads no file of a name it does not keep. `skip` is asked
    about the blob of each status file before it is read, once `accept` has refused _FIRST_CHUNK
    files (a filter that keeps most has no use for it): a name whose shown file it skips is left
    out unread (`--phase`, from the phases the reconciler saved by blob: the caller knows `accept`
    would refuse it; names kept without blobs are listed again with theirs for that).
    """
    declared: dict[str, Loaded] | dict[str, tuple[str, bytes]] = {}
    if kind not in STATUS_ONLY:
        main_commit = repo.resolve(f"refs/heads/{branch}")
        light = _declared_files(repo, main_commit, kind) if desired is None and main_commit else None
        if light is not None:
            declared = light
        else:
            from gitops_acp.store.desired import DesiredReader

            reader = desired if desired is not None else DesiredReader(repo)
            resources = reader.read(main_commit).resources if main_commit else {}
            declared = {name: loaded for (k, name), loaded in resources.items() if k == kind}
    index = names if names is not None else StatusNames(blobs=True)
    found = statusbranches.status_branches(repo)  # the newest tip first: its copy is the one shown
    live = [(candidate.tip, index.at(repo, candidate.name, candidate.tip, kind)) for candidate in found]
    sources = [(tip, held, False) for tip, held in live]
    roots = [(candidate.name, STATUS_ROOT) for candidate in found]  # each source's branch and root
    hidden: set[str] = set()  # declared on main, archived: shown only with `archived`
    if kind in FANNED_OUT and archived:  # the whole archive's names, after the live copies
        sources += [
            (candidate.tip, index.at(repo, candidate.name, candidate.tip, kind, root=ARCHIVE_ROOT), True)
            for candidate in found
        ]
        roots += [(candidate.name, ARCHIVE_ROOT) for candidate in found]
    elif kind in FANNED_OUT:  # only whether the declared ones without a live status are archived
        unseen = [
            name
            for name in declared
            if not any(name in held for _, held in live) and (named is None or named(name))
        ]
        for candidate in found:
            hidden |= archived_names(repo, candidate.name, kind, unseen)
    shown = sorted(name for name in declared if name not in hidden)
    streams = [held.after(after) for _, held, _ in sources]
    streams.append(shown[bisect.bisect_right(shown, after) :] if after is not None else shown)
    merged = (name for name, _ in itertools.groupby(heapq.merge(*streams)))  # each name once
    if named is not None:
        merged = (name for name in merged if named(name))
    chosen: list[dict[str, Any]] = []
    refused = 0  # files read that `accept` refused
    with_blobs = False  # the live sources' names with their blobs, for `skip`
    chunk = _FIRST_CHUNK
    while True:
        # A page of `limit` ends at the first accepted object past it (then there is a next page):
        # no more than that while `accept` keeps what it reads, as many again as it refused
        # (up to the chunk) once it refuses: a filter that keeps few reads on in big chunks.
        size = chunk if limit is None else min(chunk, max(limit + 1 - len(chosen), refused))
        ahead = list(itertools.islice(merged, size))
        if not ahead:
            return Listing(chosen, None)
        if skip is not None and refused >= _FIRST_CHUNK:
            if not with_blobs:  # names kept without their blobs (the HTTP API's): for this list only
                sources, with_blobs = _with_blobs(repo, kind, sources, roots), True
            unread = len(ahead)
            ahead = [name for name in ahead if not _skipped(name, sources, skip)]
            refused += unread - len(ahead)  # refused without reading
        files = _status_files(repo, kind, sources, ahead)  # the chunk's files in one round trip
        for name in ahead:
            data = files.get(name)
            observed = yamlio.load(data) if data is not None else None
            document = _shown_declared(declared[name], kind, name, observed) if name in declared else None
            if document is None:  # not declared, or not validly (as DesiredReader leaves it out)
                if observed is None:
                    continue
                document = observed
            if not accept(document):
                refused += 1
                continue
            if limit is not None and len(chosen) == limit:
                return Listing(chosen, str(chosen[-1]["metadata"]["name"]))
            chosen.append(document)
        chunk = min(2 * chunk, _MAX_CHUNK)


#: Names whose status files a list reads in one round trip to git: the first chunk as many as the
#: page needs (at most this), doubling up to _MAX_CHUNK while `accept` passes over what it reads.
#: One file at a time, `get tasks --all` over 100,000 archived tasks spent a quarter of its 26 s
#: in round trips.
_FIRST_CHUNK = 64
_MAX_CHUNK = 1024


def _declared_files(repo: Reader, commit: str, kind: Kind) -> dict[str, tuple[str, bytes]] | None:
    """The names of `kind` declared on `main` at `commit`, each with its file (path, content),
    read without the models (`manifests.load_manifests`); None where only the whole of `main`
    parsed with them can tell (a name declared twice, in a file whose YAML broke).

    `get tasks` with 2,000 Task files on `main` (`bench_growth.py`, between batches) spent ~0.3 s
    checking every one of them against the models, and ~0.15 s importing them, for a page of 100.
    The files of what a page shows are parsed with the models then (`_shown_declared`), and most
    are not: a file that declares its object as its status copy holds it shows that copy.
    """
    from gitops_acp.resources import manifests

    files = {path: blob for path, blob in repo.list_tree(commit).items() if path.endswith((".yaml", ".yml"))}
    contents = repo.read_blobs(sorted(set(files.values())))
    found: dict[str, tuple[str, bytes]] = {}
    in_error: set[str] = set()  # declared in a file whose YAML broke: an error on every file
    for path, blob in files.items():
        data = contents[blob]
        documents, broken = manifests.load_manifests(data)
        if broken and not any(marker in data for marker in manifests.MARKERS):
            continue  # someone else's broken file (as `load_file` leaves it)
        for document in documents:
            if not isinstance(document, dict) or document.get("kind") != kind.value:
                continue
            if not manifests.in_our_group(document):
                continue  # someone else's manifest
            name = manifests.name_of(document)
            if name is None:
                continue  # no name to show it by: an error of its file, nothing declared
            if broken:
                in_error.add(name)
            elif name in found:
                return None  # declared twice: which (if either) counts is the assembly's to say
            else:
                found[name] = (path, data)
    return None if in_error & found.keys() else found


def _shown_declared(
    declared: Loaded | tuple[str, bytes], kind: Kind, name: str, observed: dict[str, Any] | None
) -> dict[str, Any] | None:
    """`_shown` of a declared object, from its `Loaded` or from its file (None: the file does not
    declare it validly). A file that declares it as its status copy holds it shows that copy
    (`_as_reconciled`), without the models."""
    if not isinstance(declared, tuple):
        return _shown(declared, observed)
    path, data = declared
    if observed is not None and _as_reconciled(data, kind, name, observed):
        return observed
    # Its name is declared once on main (`_declared_files`), so loaded means valid.
    loaded = _declared_in(path, data, kind, name)
    return _shown(loaded, observed) if loaded is not None else None


def _declared_in(path: str, data: bytes, kind: Kind, name: str) -> Loaded | None:
    """The object `kind`/`name` as the file `path` of main declares it, parsed with the models;
    None if the file does not declare it validly."""
    from gitops_acp.resources.loader import load_file

    return next(
        (
            loaded
            for loaded in load_file(path, data).loaded
            if (Kind(loaded.resource.kind), loaded.resource.metadata.name) == (kind, name)
        ),
        None,
    )


def _skipped(name: str, sources: list[tuple[str, SortedNames, bool]], skip: Callable[[str], bool]) -> bool:
    """Whether `skip` skips the file shown for `name` (the first source's that holds it) by its
    blob; False for a name held by no source (declared on `main` only) or without a blob."""
    for _, held, _ in sources:
        if name in held:
            blob = held.blobs.get(name) if held.blobs is not None else None
            return blob is not None and skip(blob)
    return False


def _with_blobs(
    repo: Reader, kind: Kind, sources: list[tuple[str, SortedNames, bool]], roots: list[tuple[str, str]]
) -> list[tuple[str, SortedNames, bool]]:
    """`sources` with each one's names and blobs (listed again, one `git ls-tree` each, where
    they came as names only: the HTTP API keeps names only, for its memory, and a list that skips
    files by blob holds the blobs for as long as it runs). The archive's too: the reconciler keeps
    the phases of what it archived (reactor/coldfacts.py)."""
    index = StatusNames(blobs=True)
    return [
        (tip, held if held.blobs is not None else index.at(repo, branch, tip, kind, root=root), in_archive)
        for (tip, held, in_archive), (branch, root) in zip(sources, roots, strict=True)
    ]


def _status_files(
    repo: Reader, kind: Kind, sources: list[tuple[str, SortedNames, bool]], names: list[str]
) -> dict[str, bytes]:
    """The status file of each of `names` from the first of `sources` (tip, its names, whether
    they are the archive's) that holds it and has the file: live (also in the flat layout of old
    tips) or in `archive/`. By blob where the names came with theirs (then the file is there),
    else every path of every name asked of git: two round trips at most."""
    wanted: list[tuple[str, str, list[str]]] = []  # (name, tip, its paths there), in sources' order
    by_blob: dict[str, str] = {}  # name -> blob
    for name in names:
        for tip, held, in_archive in sources:
            if name not in held:
                continue
            if held.blobs is not None and name in held.blobs:
                by_blob[name] = held.blobs[name]
                break
            paths = [status_path(kind, name, root=ARCHIVE_ROOT)] if in_archive else live_paths(kind, name)
            wanted.append((name, tip, paths))
    files: dict[str, bytes] = {}
    found = repo.read_first_files([(tip, paths) for _, tip, paths in wanted]) if wanted else []
    for (name, _, _), first in zip(wanted, found, strict=True):
        if first is not None and name not in files:
            files[name] = first[1]
    contents = repo.read_blobs(list(by_blob.values())) if by_blob else {}
    for name, blob in by_blob.items():  # after the sources before it, read by path
        files.setdefault(name, contents[blob])
    return files


class SortedNames:
    """The names of one kind's status files under one root of one status branch, at `tip`, sorted
    (and each one's blob, when `blobs` is kept)."""

    __slots__ = ("blobs", "names", "tip")

    def __init__(self, tip: str, names: list[str], blobs: dict[str, str] | None = None) -> None:
        self.tip = tip
        self.names = names  # sorted
        self.blobs = blobs  # name -> its file's blob sha; None: read the files by path

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        at = bisect.bisect_left(self.names, name)
        return at < len(self.names) and self.names[at] == name

    def after(self, name: str | None) -> list[str] | Iterator[str]:
        """The names after `name` (all of them: None), in order."""
        if name is None:
            return self.names
        return itertools.islice(self.names, bisect.bisect_right(self.names, name), None)

    def move(self, changes: dict[str, str | None], kind: Kind, tip: str) -> None:
        """Bring the names to `tip`, given the files that changed since (path -> blob, None: gone)."""
        gone: set[str] = set()
        added: dict[str, str] = {}  # name -> blob
        for path, blob in changes.items():
            parsed = parse_status_path(path)
            if parsed is not None and parsed[0] == kind:
                if blob is None:
                    gone.add(parsed[1])
                else:
                    added[parsed[1]] = blob
        if self.blobs is not None:
            for name in gone:
                self.blobs.pop(name, None)
            self.blobs.update(added)
        names = self.names
        if len(gone) + len(added) > _RESORT_AFTER:
            self.names = sorted((set(names) - gone) | set(added))
        else:
            for name in gone:  # first: a file moved within the layout is a deletion and an addition
                if name in self:
                    del names[bisect.bisect_left(names, name)]
            for name in added:
                if name not in self:
                    bisect.insort(names, name)
        self.tip = tip


#: Changes past which `SortedNames.move` sorts the names again rather than insert each.
_RESORT_AFTER = 2_000


class StatusNames:
    """The names of the status files of each kind on each status branch, kept from tip to tip.

    A list reads the names of every status file of its kind before it reads its page: at 100,000
    tasks in the tip, one `git ls-tree` of 100,000 paths, each checked against the layout (~0.5 s
    an answer). A long-lived reader (the HTTP API, on one thread) keeps them sorted and brings
    them to a branch's new tip with one `git diff-tree` of the kind's directory: the cost of an
    answer is what changed since the last one (DESIGN §9). A process per command (`get`) lists
    them once. Held: the names only (~70 bytes each); files are read by path. With `blobs` (a
    list of one command, which holds them only while it runs) each name's blob as well, which
    git reads without walking the tree to it (and to the old layout's path): ~20 µs a file
    instead of ~40.
    """

    def __init__(self, *, blobs: bool = False) -> None:
        self._held: dict[tuple[str, Kind, str], SortedNames] = {}
        self._blobs = blobs

    def at(self, repo: Reader, branch: str, tip: str, kind: Kind, *, root: str = STATUS_ROOT) -> SortedNames:
        """The names of `kind` under `root` of `branch` at its tip `tip`."""
        key = (branch, kind, root)
        held = self._held.get(key)
        if held is not None and held.tip != tip:
            directory = f"{root}/{PLURALS[kind]}"
            try:
                held.move(repo.changed_files(held.tip, tip, directory), kind, tip)
            except StoreError:  # the old tip is gone (a branch reset, then pruned): list again
                held = None
        if held is None:
            found = status_names(repo, tip, kind, root=root)
            held = SortedNames(tip, sorted(found), found if self._blobs else None)
        self._held[key] = held
        return held


def _declared_on_main(repo: Reader, commit: str) -> dict[Key, Loaded]:
    """Every resource declared in `commit` of `main` (the whole of it parsed: `DesiredReader`)."""
    from gitops_acp.store.desired import DesiredReader

    return dict(DesiredReader(repo).read(commit).resources)


def status_of(repo: Reader, kind: Kind, name: str) -> tuple[dict[str, Any] | None, str, bool]:
    """The status document, its branch and whether it is archived: a live copy on any branch
    (the newest tip first) before an archived one."""
    branches = statusbranches.status_branches(repo)
    if len(branches) == 1:  # the usual case: its file in status/ or archive/ in one round trip
        held = read_status_file(repo, branches[0].tip, kind, name)
        if held is not None:
            return yamlio.load(held.data), branches[0].name, held.archived
    for archived in (False, True):
        for candidate in branches:
            held = read_status_file(repo, candidate.tip, kind, name, archived=archived)
            if held is not None and held.archived == archived:
                return yamlio.load(held.data), candidate.name, archived
    return None, statusbranches.UNSHARDED, False


def _as_reconciled(data: bytes, kind: Kind, name: str, observed: dict[str, Any]) -> bool:
    """Whether the file declares the object exactly as its status copy holds it (spec and metadata
    but the annotations, which the status copy's replace): then the status copy is what `_shown`
    would give, and the file need not be parsed into a model (pydantic: most of a reader's time).

    The status copy is the model's document of the declaration it reconciled, and that document
    read back gives itself; so a file equal to it declares what the model would show. Anything
    else (an edit, a field the model writes another way) is parsed as before.
    """
    try:  # one document in the emitter's style is read without PyYAML, as status files are
        single = statusfields.document(data)
        documents = [single] if single is not None else yamlio.load_all(data)
    except StoreError:
        return False
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != kind.value:
            continue
        metadata = doc.get("metadata")
        if isinstance(metadata, dict) and metadata.get("name") == name:
            return doc.get("spec") == observed.get("spec") and _but_annotations(metadata) == _but_annotations(
                observed.get("metadata") or {}
            )
    return False


def _but_annotations(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "annotations"}


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
