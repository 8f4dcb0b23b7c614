"""Desired state: the resources declared in one commit of `main`, read as git objects.

Never the working tree: only committed state counts. A new commit re-parses only the files that
changed since the last one read (`git diff-tree`), and `changed_keys` compares only the keys those
files declare (or declared), so a new commit costs what it touched, however big `main` is.

A resource whose file is broken, or which is duplicated, keeps its last good declaration ("held"):
a typo in a Task file must not cancel the running task, and a broken file never stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.loader import Assembly, FileResult, Loaded, LoadResult, load_file
from gitops_acp.resources.meta import Kind

if TYPE_CHECKING:  # a GitRepo (the reconciler) or a ReadOnlyRepo (`get`: no GitPython)
    from gitops_acp.store.git import Reader

__all__ = ["DesiredReader", "DesiredState", "changed_keys"]


@dataclass(frozen=True)
class DesiredState:
    """The resources of one commit of `main`, plus the problems found reading it."""

    commit: str | None
    resources: Mapping[Key, Loaded] = field(default_factory=dict)
    load: LoadResult | None = None
    held: frozenset[Key] = frozenset()
    # The keys whose declaration may differ from the state of commit `since` (None: unknown, compare
    # everything): what lets `changed_keys` look at the change instead of the whole of `main`.
    touched: frozenset[Key] | None = None
    since: str | None = None

    def get(self, kind: Kind, name: str) -> Loaded | None:
        """The loaded resource, or None."""
        return self.resources.get((kind, name))


class DesiredReader:
    """Reads desired states from commits of one repository; keep it on one thread (it owns a GitRepo).

    The reader remembers the last commit it read: the next read parses only the files that differ
    (`git diff-tree`) and re-merges only them (`loader.Assembly`), so its cost is the size of the
    change, not the size of `main` (DESIGN §9). The first read lists and parses everything.
    """

    def __init__(self, repo: Reader) -> None:
        self._repo = repo
        self._assembly = Assembly()
        self._commit: str | None = None  # the commit the assembly holds

    def read(self, commit: str | None, *, previous: DesiredState | None = None) -> DesiredState:
        """Load every resource file of `commit`; hold resources whose files broke since `previous`."""
        if commit is None:
            return DesiredState(commit=None)
        since = self._commit
        if since is None:
            files: dict[str, str | None] = dict(self._repo.list_tree(commit))
        elif since == commit:  # read again (the API's lists between two commits): no git to run
            files = {}
        else:
            files = self._repo.changed_files(since, commit)
        files = {path: blob for path, blob in files.items() if path.endswith((".yaml", ".yml"))}
        contents = self._repo.read_blobs([blob for blob in files.values() if blob is not None])
        changes: dict[str, FileResult | None] = {
            path: None if blob is None else load_file(path, contents[blob]) for path, blob in files.items()
        }
        touched = self._assembly.update(changes)
        self._commit = commit
        load = self._assembly.result()
        resources: dict[Key, Loaded] = load.resources
        held: set[Key] = set()
        if previous is not None:
            # Only a key that just left, or was held already, can be held (not all of main).
            candidates = touched | previous.held if previous.commit == since else previous.resources.keys()
            for key in candidates:
                loaded = previous.resources.get(key)
                if loaded is None or key in resources:
                    continue
                if key in load.keys_in_error or loaded.path in load.broken_paths:
                    resources[key] = loaded
                    held.add(key)
        return DesiredState(
            commit=commit,
            resources=resources,
            load=load,
            held=frozenset(held),
            touched=frozenset(touched | held | (previous.held if previous is not None else frozenset())),
            since=since,
        )


def changed_keys(old: DesiredState | None, new: DesiredState) -> set[Key]:
    """Keys added, removed, or whose declaration differs between two states."""
    before = old.resources if old is not None else {}
    after = new.resources
    changed = set(before.keys() ^ after.keys())
    both = before.keys() & after.keys()
    if old is not None and new.touched is not None and new.since == old.commit:
        both &= new.touched  # the reader says which keys can differ: compare only those
    changed.update(key for key in both if before[key].resource != after[key].resource)
    return changed
