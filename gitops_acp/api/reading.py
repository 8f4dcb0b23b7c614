"""What the API's GETs read: the same readers as `get` and `describe` (store/readers.py), on one thread.

Each answer reads only what it returns (DESIGN §9): one object is `readers.lookup` (its status
file, the one file of `main` that declares it); a list is `readers.listing` (the status files'
names, then only the files of its page), with `main`'s declarations from one long-lived
`DesiredReader` that parses only the files a new commit changed, and the status files' names
from one long-lived `StatusNames`, brought to each new tip by what changed (`git diff-tree`).
The repositories are opened once, on the read thread (GitPython objects belong to one thread),
and see every new commit: refs are read on each call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gitops_acp.reactor import coldfacts
from gitops_acp.resources.meta import Kind
from gitops_acp.store import readers, recovery, statusbranches
from gitops_acp.store.desired import DesiredReader
from gitops_acp.store.git import GitRepo, ReadOnlyRepo

__all__ = ["Reads"]

T = TypeVar("T")


class Reads:
    """The served repository, read for the API's answers (see the module docstring)."""

    def __init__(self, repo: Path, *, branch: str) -> None:
        self._path = repo
        self.branch = branch
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-reader")
        self._repo: GitRepo | None = None
        self._reader: ReadOnlyRepo | None = None
        self._desired: DesiredReader | None = None  # main, parsed once, then only what changed
        self._names = readers.StatusNames()  # the status files' names, brought to each new tip
        # The phases the reconciler saved by blob (reactor/coldfacts.py), with the files' stamps
        # they were read at: read again only when a save changed them.
        self._phases: tuple[tuple[tuple[str, int, int, int], ...], dict[str, str]] | None = None

    async def run(self, fn: Callable[[Reads], T]) -> T:
        """Run `fn(self)` on the read thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self)

    def repo(self) -> GitRepo:
        """The repository for listings (on the read thread only)."""
        if self._repo is None:
            self._repo = GitRepo.open(self._path)
        return self._repo

    def reader(self) -> ReadOnlyRepo:
        """The reader of single objects, without GitPython (on the read thread only)."""
        if self._reader is None:
            self._reader = ReadOnlyRepo.open(self._path)
        return self._reader

    def one(self, kind: Kind, name: str) -> readers.Found | None:
        """One object as `get KIND NAME` shows it (archived ones too)."""
        return readers.lookup(self.reader(), kind, name, branch=self.branch)

    def page(
        self,
        kind: Kind,
        accept: Callable[[dict[str, Any]], bool],
        *,
        limit: int,
        after: str | None,
        archived: bool,
        named: Callable[[str], bool] | None = None,
        phase: str | None = None,
    ) -> readers.Listing:
        """One page of a kind's objects by name, as `get KIND --limit --continue` lists them; `named`
        keeps names before their files are read (a search by name); with the `phase` that `accept`
        asks for, a finished one the reconciler saved in another phase is not read (`get --phase`)."""
        repo = self.repo()
        if self._desired is None:
            self._desired = DesiredReader(repo)
        return readers.listing(
            repo,
            kind,
            accept,
            limit=limit,
            after=after,
            archived=archived,
            branch=self.branch,
            desired=self._desired,
            named=named,
            names=self._names,
            skip=None if phase is None else coldfacts.other_phase(self.saved_phases, phase),
        )

    def saved_phases(self) -> dict[str, str]:
        """The phases of finished tasks and tool calls by blob, as the reconciler saved them for each
        status branch, archived ones included (on the read thread only): read again only when a
        save or an archive commit changed a file."""
        repo = self.repo()
        branches = [branch.name for branch in statusbranches.status_branches(repo)]
        folder = recovery.lock_dir(repo.common_dir)
        files = [
            of(folder, branch)
            for branch in branches
            for of in (coldfacts.path_for, coldfacts.archived_path_for)
        ]
        stamps = tuple((str(path), *_stamp(path)) for path in files)
        if self._phases is None or self._phases[0] != stamps:
            self._phases = (stamps, coldfacts.saved_phases(repo.common_dir, branches))
        return self._phases[1]

    async def aclose(self) -> None:
        """Close the repositories and the thread."""

        def close(_: Reads) -> None:
            for opened in (self._repo, self._reader):
                if opened is not None:
                    opened.close()

        await self.run(close)
        self._thread.shutdown(wait=False)


def _stamp(path: Path) -> tuple[int, int, int]:
    """Which file is at `path` (a save replaces it: a new inode), when it was written and its size
    ((0, 0, 0): none): whether to read it again."""
    try:
        status = path.stat()
    except OSError:
        return (0, 0, 0)
    return (status.st_ino, status.st_mtime_ns, status.st_size)
