"""Turn the YAML files of a commit into resources, and every problem into a `file:line: message`.

The repository is shared with everything else a team keeps in git (CI configs, Kubernetes
manifests, docs), and a person's mistake in one file must not stop the rest of the control plane.
So the loader never stops at a broken file: it returns what it could load, the errors with the
line of the offending field, and the keys of documents that were ours but invalid, so the caller
can keep their last good state instead of treating them as deleted (Flux's "last applied" habit).

Flow: `load_file` (one file's bytes → `FileResult`) → `assemble` (all files of a commit →
`LoadResult`, with duplicates across files). `load_paths` does both from disk for `validate`.
Pure: the caller reads git; `load_paths` reads the working tree only for the CLI.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import ValidationError

from gitops_acp.errors import ResourceError, UserError
from gitops_acp.resources import diagnostics, manifests, secretscan
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import ACCEPTED_API_VERSIONS, Kind
from gitops_acp.resources.models import MODELS, AnyResource, Source, ToolCall

__all__ = [
    "RECORD_KINDS",
    "FileResult",
    "LoadResult",
    "Loaded",
    "assemble",
    "is_yaml_path",
    "load_file",
    "load_paths",
]

Record = tuple[str, int, dict[str, Any]]
Loc = tuple[int | str, ...]
# (line, YAML field path, message) of each problem found in one document.
Problems = list[tuple[int, Loc, str]]
# (line of a repeated key, its field path, line of its first occurrence)
_DuplicateKey = tuple[int, Loc, int]

# Documents of our group that are decisions, not resources; the humans module validates them.
RECORD_KINDS = frozenset({"Approval", "HumanResponse"})
# Kinds ACP used to have, and what replaced them: the most likely mistake when porting old manifests.
_RETIRED_KINDS = {
    "TaskRun": (
        "TaskRun was merged into Task in ACP v0.2.0: use kind Task with spec.agentRef and spec.userMessage"
    ),
    "TaskRunToolCall": (
        "TaskRunToolCall was renamed ToolCall in ACP v0.5.0, and ToolCalls are created by the reconciler "
        "on the status branch: remove this document"
    ),
    "Tool": (
        "Tool was removed in ACP v0.5.0: an Agent's tools come from its mcpServers, "
        "humanContactChannels and subAgents"
    ),
}
_KIND_VALUES = frozenset(kind.value for kind in Kind)
# Kinds only the reconciler writes, on the status branch: declaring one on main is an error.
_STATUS_ONLY = frozenset({Kind.ToolCall, Kind.Source})
_USER_KINDS = ", ".join(kind.value for kind in Kind if kind not in _STATUS_ONLY)
_SECRET_DOC = (
    "secrets must not be committed: put them in --secrets-dir (<dir>/<name>/<key>) or the environment"
)


#: How many other places a duplicate's error names (then "and N more").
_PLACES_NAMED = 5


@dataclass(frozen=True)
class Loaded:
    """A valid resource and where it was declared."""

    resource: AnyResource
    path: str
    line: int  # 1-based line of the document's first key


@dataclass(frozen=True)
class FileResult:
    """Everything one file yielded; a file never raises, it reports."""

    path: str
    loaded: tuple[Loaded, ...] = ()
    errors: tuple[ResourceError, ...] = ()
    # Documents recognizably ours (kind and name readable) but invalid: keep their last good state.
    keys_in_error: frozenset[Key] = frozenset()
    # Approval / HumanResponse documents: (path, line, raw mapping), validated by their own module.
    records: tuple[Record, ...] = ()
    # The YAML itself did not parse: nothing in the file can be trusted, keep all its last good state.
    broken: bool = False


@dataclass(frozen=True)
class LoadResult:
    """The resources of a whole commit, with every problem found."""

    resources: dict[Key, Loaded]
    errors: list[ResourceError]
    keys_in_error: frozenset[Key]
    broken_paths: frozenset[str]
    records: list[Record] = field(default_factory=list)


# The C safe loader, with timestamps kept as text (as kubectl's JSON-based YAML does).
_Loader = manifests.manifest_loader()


def is_yaml_path(path: str) -> bool:
    """Return whether the loader considers a file at `path` at all."""
    return path.endswith((".yaml", ".yml"))


def load_file(path: str, data: bytes) -> FileResult:
    """Return the resources, errors and records of one YAML file (possibly multi-document)."""
    if not is_yaml_path(path):
        return FileResult(path)
    documents: list[tuple[yaml.Node, Any, list[_DuplicateKey]]] = []
    loader = _Loader(data)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                # Duplicate keys are found before construction, which folds `<<` merges into the
                # mapping (an explicit key overriding a merged one is legitimate, not a duplicate).
                duplicates = _duplicate_keys(node)
                documents.append((node, loader.construct_document(node), duplicates))
    except yaml.YAMLError as exc:
        if not any(marker in data for marker in manifests.MARKERS):
            return FileResult(path)  # a broken file that is not ours: someone else's problem
        keys = frozenset(k for _, doc, _ in documents if (k := _key_of(doc)) is not None)
        return FileResult(path, errors=(_yaml_error(exc, path),), keys_in_error=keys, broken=True)
    finally:
        loader.dispose()

    loaded: list[Loaded] = []
    errors: list[ResourceError] = []
    keys_in_error: set[Key] = set()
    records: list[Record] = []
    for node, doc, duplicates in documents:
        if not isinstance(doc, dict) or not isinstance(node, yaml.MappingNode):
            continue  # an empty document, or a list or scalar: nothing we would have written
        line = node.start_mark.line + 1
        if _is_plain_secret(doc):
            secret = manifests.name_of(doc) or "?"
            errors.append(ResourceError(f'Secret "{secret}": {_SECRET_DOC}', path=path, line=line))
            continue
        if not manifests.in_our_group(doc):
            continue  # someone else's manifest
        problems = _check_header(doc, node)
        if not problems and doc.get("kind") in RECORD_KINDS:
            records.append((path, line, doc))
            continue
        resource = None
        if not problems:
            # Credentials and schema errors are reported together, so one round of fixes suffices;
            # a field already refused by the schema (a literal `apiKey:`) is not reported twice.
            resource, invalid = _validate(doc, node)
            refused = {loc for _, loc, _ in invalid}
            tokens = [p for p in _scan_tokens(node, _label(doc)) if p[1] not in refused]
            repeated = [
                (
                    at,
                    loc,
                    f"{_label(doc)}: {diagnostics.format_loc(loc)}: duplicate key (first at line {first})",
                )
                for at, loc, first in duplicates
            ]
            problems = sorted(repeated + invalid + tokens, key=lambda p: p[0])
        if resource is not None and not problems:
            loaded.append(Loaded(resource, path, line))
            continue
        errors.extend(ResourceError(message, path=path, line=at) for at, _, message in problems)
        key = _key_of(doc)
        if key is not None:
            keys_in_error.add(key)
    return FileResult(
        path,
        loaded=tuple(loaded),
        errors=tuple(errors),
        keys_in_error=frozenset(keys_in_error),
        records=tuple(records),
    )


def _yaml_error(exc: yaml.YAMLError, path: str) -> ResourceError:
    """Describe a YAML syntax error by its problem and line, never by the text (it may hold a secret)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else 0
    problem = getattr(exc, "problem", None) or "unreadable"
    context = getattr(exc, "context", None)
    if isinstance(exc, yaml.reader.ReaderError):
        problem = f"not valid text ({exc.reason})"
    detail = f"{problem} ({context})" if context else str(problem)
    return ResourceError(f"invalid YAML: {detail}", path=path, line=line)


def _is_plain_secret(doc: dict[Any, Any]) -> bool:
    """Return whether a document is a Kubernetes Secret in plain text (sops-encrypted ones carry `sops:`)."""
    return doc.get("kind") == "Secret" and doc.get("apiVersion") in (None, "v1") and "sops" not in doc


def _check_header(doc: dict[Any, Any], node: yaml.MappingNode) -> Problems:
    """Return problems with a document's apiVersion version and kind (records are fine)."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version not in ACCEPTED_API_VERSIONS:
        accepted = ", ".join(sorted(ACCEPTED_API_VERSIONS))
        at = _locate(node, ("apiVersion",))[0]
        return [
            (
                at,
                ("apiVersion",),
                f"{_label(doc)}: apiVersion {api_version} is not supported: use one of {accepted}",
            )
        ]
    if kind in RECORD_KINDS or kind in _KIND_VALUES:
        return []
    return [(_locate(node, ("kind",))[0], ("kind",), f"{_label(doc)}: {_unknown_kind(kind)}")]


def _unknown_kind(kind: object) -> str:
    """Explain a kind this program does not have."""
    if kind is None:
        return f"kind: field required (one of {_USER_KINDS})"
    if isinstance(kind, str) and kind in _RETIRED_KINDS:
        return f"kind {_RETIRED_KINDS[kind]}"
    close = [k.value for k in Kind if isinstance(kind, str) and k.value.lower() == kind.lower()]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown kind {kind!r}{hint}: use one of {_USER_KINDS}"


def _validate(doc: dict[Any, Any], node: yaml.MappingNode) -> tuple[AnyResource | None, Problems]:
    """Return the resource of a document of ours, or the problems with the line of each field."""
    kind = Kind(doc["kind"])
    model = MODELS[kind]
    try:
        resource = model.model_validate(doc)
    except ValidationError as exc:
        label = _label(doc)
        problems: Problems = []
        for error in exc.errors():
            line, shown = _locate(node, tuple(error["loc"]))
            message = diagnostics.describe(error, model=model, kind=kind)
            where = f"{diagnostics.format_loc(shown)}: " if shown else ""
            problems.append((line, shown, f"{label}: {where}{message}"))
        return None, problems
    return cast(AnyResource, resource), []  # MODELS maps each kind to its own class


def _locate(root: yaml.Node, loc: Loc) -> tuple[int, Loc]:
    """Return the line of the field at `loc` and the part of `loc` that names YAML fields.

    pydantic's locations use the names the person wrote; steps it adds on its own (a union
    member's tag) match nothing in the YAML and are dropped. A field that is missing is reported
    on the line of the mapping that should hold it.
    """
    node = root
    line = root.start_mark.line + 1
    shown: list[int | str] = []
    for index, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            # The last occurrence: it is the one YAML keeps (and `<<` merges come before own keys).
            match = next(
                (
                    (key, value)
                    for key, value in reversed(node.value)
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part)
                ),
                None,
            )
            if match is not None:
                line = match[0].start_mark.line + 1
                node = match[1]
                shown.append(part)
            elif index == len(loc) - 1:
                shown.append(part)  # a missing field: name it, at its parent's line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
            shown.append(part)
    return line, tuple(shown)


def _walk(root: yaml.Node) -> Iterator[tuple[yaml.Node, Loc]]:
    """Yield every node of a document with its path, each once, in document order.

    Aliases share nodes: visiting each once also defuses "billion laughs". An explicit stack, not
    recursion: a hostile file may nest deeper than Python's stack.
    """
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node, loc
        if isinstance(node, yaml.MappingNode):
            stack.extend(
                (value, (*loc, str(key.value) if isinstance(key, yaml.ScalarNode) else "?"))
                for key, value in reversed(node.value)
            )
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*loc, index)) for index, item in reversed(list(enumerate(node.value))))


def _duplicate_keys(root: yaml.Node) -> list[_DuplicateKey]:
    """Return keys that appear twice in one mapping: YAML keeps the last silently, kubectl refuses."""
    found: list[_DuplicateKey] = []
    for node, loc in _walk(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = key.start_mark.line + 1
            if key.value in first:
                found.append((line, (*loc, key.value), first[key.value]))
            else:
                first[key.value] = line
    return found


def _scan_tokens(root: yaml.Node, label: str) -> Problems:
    """Return a problem for every string value shaped like a credential, at its line, naming its field."""
    problems: Problems = []
    for node, loc in _walk(root):
        if isinstance(node, yaml.ScalarNode):
            what = secretscan.find_token(str(node.value))
            if what is not None:
                where = diagnostics.format_loc(loc) or "value"
                message = f"{label}: {where}: looks like {what}; {_SECRET_DOC}, referenced with secretKeyRef"
                problems.append((node.start_mark.line + 1, loc, message))
    return problems


def _label(doc: dict[Any, Any]) -> str:
    """Return how errors name a document: `Task "hello"`, or as much of that as is known."""
    kind = doc.get("kind")
    name = manifests.name_of(doc)
    kind_text = kind if isinstance(kind, str) else "resource"
    return f'{kind_text} "{name}"' if name else kind_text


def _key_of(doc: object) -> Key | None:
    """Return (kind, name) of a document of ours whose kind and name can be read, else None."""
    if not isinstance(doc, dict) or not manifests.in_our_group(doc):
        return None
    kind, name = doc.get("kind"), manifests.name_of(doc)
    if name is None or kind not in _KIND_VALUES:
        return None
    return Kind(kind), name


def assemble(results: Iterable[FileResult]) -> LoadResult:
    """Merge the files of a commit: duplicates become errors on every file that defines them."""
    assembly = Assembly()
    assembly.update({result.path: result for result in results})
    return assembly.result()


class Assembly:
    """The files of one commit merged, kept up to date file by file (what `assemble` does at once).

    `update` takes the files that changed since the last call and returns the keys whose
    declaration may have changed; the cost is the change, not the number of files, so a commit that
    adds one Task to a `main` of 100,000 re-merges one file (DESIGN §9). `result` snapshots the
    whole merge (copying the resource map, a C-speed dict copy).
    """

    def __init__(self) -> None:
        self._files: dict[str, FileResult] = {}
        self._places: dict[Key, list[Loaded]] = {}
        self._in_error: Counter[Key] = Counter()  # keys invalid in some file, by how many files
        self._resources: dict[Key, Loaded] = {}
        self._duplicates: dict[Key, list[ResourceError]] = {}
        self._file_errors: dict[str, tuple[ResourceError, ...]] = {}
        self._records: dict[str, tuple[Record, ...]] = {}
        self._broken: set[str] = set()

    def update(self, changes: Mapping[str, FileResult | None]) -> set[Key]:
        """Apply changed files (None: the file is gone); return the keys they may have changed."""
        touched: set[Key] = set()
        for path, result in changes.items():
            old = self._files.pop(path, None)
            if old is not None:
                self._remove(old, touched)
            if result is not None:
                self._files[path] = result
                self._add(result, touched)
        for key in touched:
            self._settle(key)
        return touched

    def result(self) -> LoadResult:
        """The merge as it stands."""
        errors = [e for path in self._file_errors for e in self._file_errors[path]]
        errors += [e for key in self._duplicates for e in self._duplicates[key]]
        errors.sort(key=lambda e: (e.path, e.line))
        return LoadResult(
            resources=dict(self._resources),
            errors=errors,
            keys_in_error=frozenset(self._in_error) | frozenset(self._duplicates),
            broken_paths=frozenset(self._broken),
            records=[r for path in sorted(self._records) for r in self._records[path]],
        )

    def _add(self, result: FileResult, touched: set[Key]) -> None:
        errors = list(result.errors)
        for item in result.loaded:
            if isinstance(item.resource, ToolCall | Source):
                kind = item.resource.kind
                errors.append(
                    ResourceError(
                        f'{kind} "{item.resource.metadata.name}": {kind}s exist only on the status '
                        "branch; the reconciler creates them",
                        path=item.path,
                        line=item.line,
                    )
                )
                continue
            key = (Kind(item.resource.kind), item.resource.metadata.name)
            self._places.setdefault(key, []).append(item)
            touched.add(key)
        if errors:
            self._file_errors[result.path] = tuple(errors)
        self._in_error.update(result.keys_in_error)
        touched.update(result.keys_in_error)
        if result.records:
            self._records[result.path] = result.records
        if result.broken:
            self._broken.add(result.path)

    def _remove(self, result: FileResult, touched: set[Key]) -> None:
        self._file_errors.pop(result.path, None)
        self._records.pop(result.path, None)
        self._broken.discard(result.path)
        self._in_error.subtract(result.keys_in_error)
        for key in result.keys_in_error:
            if self._in_error[key] <= 0:
                del self._in_error[key]
        touched.update(result.keys_in_error)
        for item in result.loaded:
            key = (Kind(item.resource.kind), item.resource.metadata.name)
            items = self._places.get(key)
            if items is None:
                continue  # a status-only kind: never placed
            items[:] = [i for i in items if i is not item]
            if not items:
                del self._places[key]
            touched.add(key)

    def _settle(self, key: Key) -> None:
        """Decide `key` again from every file that declares it."""
        items = sorted(self._places.get(key, ()), key=lambda i: (i.path, i.line))
        self._duplicates.pop(key, None)
        if len(items) == 1 and key not in self._in_error:  # invalid elsewhere: which one is meant?
            self._resources[key] = items[0]
            return
        self._resources.pop(key, None)
        if len(items) > 1:
            # Each place names the others, the first few of them: naming all of them made the
            # messages of one name declared in N files O(N^2) to build (a Task in 1,800 files of
            # `main`: 3 s of `get tasks` before anything was shown).
            places = [f"{o.path}:{o.line}" for o in items[: _PLACES_NAMED + 1]]
            more = len(items) - 1 - _PLACES_NAMED

            def others(index: int) -> str:
                named = [place for at, place in enumerate(places) if at != index][:_PLACES_NAMED]
                return ", ".join(named) + (f" and {more} more" if more > 0 else "")

            self._duplicates[key] = [
                ResourceError(
                    f'duplicate {key[0]} "{key[1]}": also defined at {others(index)}',
                    path=item.path,
                    line=item.line,
                )
                for index, item in enumerate(items)
            ]


def load_paths(paths: Iterable[Path], root: Path) -> LoadResult:
    """Load files and directories from disk (for `validate`), reporting paths relative to `root`."""
    results = []
    seen: set[Path] = set()
    for file in _yaml_files(paths):
        resolved = file.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        shown = _relative(file, root)
        try:
            data = file.read_bytes()
        except OSError as exc:
            results.append(
                FileResult(shown, errors=(ResourceError(f"cannot read: {exc.strerror}", path=shown),))
            )
            continue
        results.append(load_file(shown, data))
    return assemble(results)


def _yaml_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Yield the YAML files named by `paths`, walking directories in a stable order, skipping .git."""
    for path in paths:
        if path.is_dir():
            for directory, subdirs, files in os.walk(path):
                subdirs[:] = sorted(d for d in subdirs if d != ".git")
                yield from (Path(directory, f) for f in sorted(files) if is_yaml_path(f))
        elif path.is_file():
            if not is_yaml_path(path.name):
                raise UserError(f"{path}: not a YAML file (expected .yaml or .yml)")
            yield path
        else:
            raise UserError(f"{path}: no such file or directory")


def _relative(path: Path, root: Path) -> str:
    """Return `path` relative to `root` with forward slashes, or as given when outside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
