"""Which resources depend on which: a dependency changes, its dependents are reconciled again.

    Agent "a" ──► Tasks that use it;  MCPServer "m" ──► Agents, unfinished ToolCalls on it;  ...

Kept up to date resource by resource (`set` when a resource is declared, changed or created by the
reconciler; `unset` when it leaves main, finishes or is archived), so a new commit of `main` costs
its change, not a rebuild over every resource (DESIGN §9). `rebuild` is the start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.models import AnyResource

__all__ = ["Dependents"]

_NONE: frozenset[Key] = frozenset()


class Dependents:
    """dependency → dependents, with each resource's own dependencies remembered for `unset`."""

    def __init__(self, dependencies: Callable[[Key, AnyResource], Iterable[Key]]) -> None:
        self._dependencies = dependencies
        self._of: dict[Key, set[Key]] = {}  # dependency -> its dependents
        self._on: dict[Key, tuple[Key, ...]] = {}  # dependent -> what it depends on

    def get(self, dependency: Key) -> frozenset[Key] | set[Key]:
        """The resources that depend on `dependency` (a live set: copy it to keep it)."""
        return self._of.get(dependency, _NONE)

    def set(self, key: Key, obj: AnyResource) -> None:
        """Index `obj` as the current state of `key` (replacing what it depended on before)."""
        self.unset(key)
        found = tuple(self._dependencies(key, obj))
        if not found:
            return
        self._on[key] = found
        for dependency in found:
            self._of.setdefault(dependency, set()).add(key)

    def unset(self, key: Key) -> None:
        """Forget `key`: it depends on nothing any more."""
        for dependency in self._on.pop(key, ()):
            dependents = self._of.get(dependency)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._of[dependency]

    def rebuild(self, items: Iterable[tuple[Key, AnyResource]]) -> None:
        """Start over from every (key, resource)."""
        self._of.clear()
        self._on.clear()
        for key, obj in items:
            self.set(key, obj)

    def __len__(self) -> int:
        return len(self._on)
