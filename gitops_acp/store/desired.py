"""Desired state: the resources declared in one commit of `main`, read as git objects.

Never the working tree: only committed state counts. Files are parsed once per blob (a new commit
re-parses only the files whose blobs changed), and `changed_keys` compares two states resource by
resource, so a new commit re-reconciles only what it touched.

A resource whose file is broken, or which is duplicated, keeps its last good declaration ("held"):
a typo in a Task file must not cancel the running task, and a broken file never stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.loader import FileResult, Loaded, LoadResult, assemble, load_file
from gitops_acp.resources.meta import Kind
from gitops_acp.store.git import GitRepo

__all__ = ["DesiredReader", "DesiredState", "changed_keys"]


@dataclass(frozen=True)
class DesiredState:
    """The resources of one commit of `main`, plus the problems found reading it."""

    commit: str | None
    resources: Mapping[Key, Loaded] = field(default_factory=dict)
    load: LoadResult | None = None
    held: frozenset[Key] = frozenset()

    def get(self, kind: Kind, name: str) -> Loaded | None:
        """The loaded resource, or None."""
        return self.resources.get((kind, name))


class DesiredReader:
    """Reads desired states from commits of one repository; keep it on one thread (it owns a GitRepo)."""

    def __init__(self, repo: GitRepo) -> None:
        self._repo = repo
        self._cache: dict[tuple[str, str], FileResult] = {}

    def read(self, commit: str | None, *, previous: DesiredState | None = None) -> DesiredState:
        """Load every resource file of `commit`; hold resources whose files broke since `previous`."""
        if commit is None:
            return DesiredState(commit=None)
        tree = self._repo.list_tree(commit)
        results: list[FileResult] = []
        cache: dict[tuple[str, str], FileResult] = {}
        for path, blob in tree.items():
            if not path.endswith((".yaml", ".yml")):
                continue
            key = (path, blob)
            result = self._cache.get(key)
            if result is None:
                result = load_file(path, self._repo.read_blob(blob))
            cache[key] = result
            results.append(result)
        self._cache = cache  # drop parses of files that are gone
        load = assemble(results)
        resources: dict[Key, Loaded] = dict(load.resources)
        held: set[Key] = set()
        if previous is not None:
            for key, loaded in previous.resources.items():
                if key in resources:
                    continue
                if key in load.keys_in_error or loaded.path in load.broken_paths:
                    resources[key] = loaded
                    held.add(key)
        return DesiredState(commit=commit, resources=resources, load=load, held=frozenset(held))


def changed_keys(old: DesiredState | None, new: DesiredState) -> set[Key]:
    """Keys added, removed, or whose declaration differs between two states."""
    before = old.resources if old is not None else {}
    after = new.resources
    changed = {key for key in before.keys() ^ after.keys()}
    changed.update(key for key in before.keys() & after.keys() if before[key].resource != after[key].resource)
    return changed
