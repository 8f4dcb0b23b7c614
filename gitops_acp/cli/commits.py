"""Commits made for a person by the command line: re-exported from `store/usercommits.py`.

They moved down a layer so the HTTP API (which commits as its caller) shares them.
"""

from __future__ import annotations

from gitops_acp.store.usercommits import commit_as_user, git_as_user, init_repository

__all__ = ["commit_as_user", "git_as_user", "init_repository"]
