"""The repository a command names with --repo: a path, or a URL read through a local mirror.

Its own module, re-exported by `cli/views.py`, so that `history` (issue 12: within 50 ms) opens
the repository without importing the tables and columns of `views` it does not show.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from gitops_acp.errors import StoreError, UserError
from gitops_acp.store.git import ReadOnlyRepo

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:  # GitPython only for a command that opens a GitRepo
    from typing import TypeVar

    from gitops_acp.store.git import GitRepo

    _R = TypeVar("_R")

__all__ = ["open_reader", "open_repo"]


def open_repo(path: str) -> GitRepo:
    """Open the repository named by --repo, with a message that says what to do.

    A URL is read through a copy in the cache directory, fetched now (docs/remotes.md).
    """
    from gitops_acp.store.git import GitRepo

    return _opened(GitRepo.open, path)


def open_reader(path: str) -> ReadOnlyRepo:
    """Open the repository named by --repo for reading one object (`lookup`, history), as
    `open_repo`; its `git cat-file` starts at once, while the command goes on importing."""
    repo = _opened(ReadOnlyRepo.open, path)
    repo.start()
    return repo


def _opened(opener: Callable[[str], _R], path: str) -> _R:
    from_url = False
    if not os.path.exists(path):  # the URL helpers only for a path that is not there
        from gitops_acp.store.git import is_url

        from_url = is_url(path)
    if from_url:
        from gitops_acp.store import mirror
        from gitops_acp.store.git import redact_url

        try:
            return opener(os.fspath(mirror.refresh_view(path)))
        except StoreError as exc:
            raise UserError(f"cannot read {redact_url(path)}: {exc}") from exc
    try:
        return opener(path)
    except Exception as exc:
        raise UserError(
            f"{path}: not a git repository (pass --repo PATH, or run `gitops-acp init DIR`)"
        ) from exc
