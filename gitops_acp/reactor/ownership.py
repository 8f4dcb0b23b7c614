"""Which Tasks on `main` this reconciler runs: its shard's, less those finished elsewhere or archived.

    main's Tasks ──► owned by this shard? (store/shards.py)            no ──► never queued
                 ──► finished under a former layout? (retired_tasks)   yes ──► never run again
                 ──► archived on this status branch? (DESIGN §9)       yes ──► never run again

The filter is applied to each new read of `main` before it becomes work, so a Task left out costs
nothing more than parsing its file. A name is looked up in `archive/` once, when it first appears
on main (at start-up: every Task with no status in the tip), and remembered while its file stays.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection

from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import Kind
from gitops_acp.store.desired import DesiredState
from gitops_acp.store.shards import Shard

__all__ = ["Ownership"]

log = logging.getLogger("gitops_acp")


class Ownership:
    """The tasks of `main` this process leaves out, and the filter that leaves them out."""

    def __init__(self, shard: Shard) -> None:
        """For the reconciler serving `shard`."""
        self.shard = shard
        self.retired: frozenset[str] = frozenset()  # finished under another layout
        self.archived: set[str] = set()  # declared on main, archived here

    def mine(self, state: DesiredState) -> DesiredState:
        """The part of `state` this process works on: every resource but the tasks it leaves out."""
        shard, retired, archived = self.shard, self.retired, self.archived
        if not shard.sharded and not retired and not archived:
            return state

        def mine(key: Key) -> bool:
            name = key[1]
            if key[0] == Kind.TaskSchedule:  # a schedule fires on one shard, its tasks live there
                return shard.owns(name)
            return key[0] != Kind.Task or (shard.owns(name) and name not in retired and name not in archived)

        return dataclasses.replace(
            state,
            resources={key: loaded for key, loaded in state.resources.items() if mine(key)},
            held=frozenset(key for key in state.held if mine(key)),
        )

    def fresh(
        self, state: DesiredState, previous: DesiredState, observed: Callable[[Key], bool]
    ) -> list[str]:
        """Tasks new on main with no status yet: to look up in `archive/` before they run."""
        tasks = {name for kind, name in state.resources if kind == Kind.Task}
        self.archived &= tasks  # a file gone from main needs no remembering
        return [
            name
            for name in tasks - self.archived
            if (Kind.Task, name) not in previous.resources and not observed((Kind.Task, name))
        ]

    def found_archived(self, names: Collection[str]) -> None:
        """These Tasks on main were archived: leave them out from now on."""
        if names:
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            log.info("%d Task(s) on main were archived, not run again: %s", len(names), shown)
            self.archived |= set(names)
