"""The status branch's tip as trees: how the writer keeps it in memory, and how readers read it.

    <tip> ── root tree ── status/ ── <plural>/ ── <name>.yaml      (DESIGN §1: one file per resource)

The writer (store/status.py) holds the tip as three tree levels, the plural levels kept in git's
serialized form (`TreeBuilder`), so a commit rewrites only the levels it touched. `read_tip` is
the same model read once, for start-up recovery and the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitops_acp.errors import StoreError
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import PLURALS
from gitops_acp.store import yamlio
from gitops_acp.store.git import TREE_MODE, GitRepo, TreeBuilder

__all__ = ["DEFAULT_BRANCH", "FILE_MODE", "STATUS_DIR", "Entries", "StatusTree", "branch_ref", "read_tip"]

DEFAULT_BRANCH = "refs/heads/acp/status"
STATUS_DIR = "status"
FILE_MODE = "100644"

Entries = dict[str, tuple[str, str]]  # one tree level: name -> (mode, sha)

_KIND_BY_PLURAL = {plural: kind for kind, plural in PLURALS.items()}


def branch_ref(branch: str) -> str:
    """The full ref name of a branch given short (`acp/status`) or full."""
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


@dataclass
class StatusTree:
    """The status branch's tip as three tree levels, so a commit rewrites only what it touched."""

    tip: str | None
    root: Entries  # the root tree; anything besides `status/` is carried over untouched
    status: Entries  # `status/`: one tree per plural (plus anything unknown, carried over)
    plurals: dict[str, TreeBuilder]  # plural -> `status/<plural>/`, kept serialized

    @classmethod
    def load(cls, repo: GitRepo, tip: str | None) -> StatusTree:
        """Read the tree levels of commit `tip` (None: an empty branch)."""
        if tip is None:
            return cls(None, {}, {}, {})
        root = repo.read_tree(tip) or {}
        status: Entries = {}
        plurals: dict[str, TreeBuilder] = {}
        if STATUS_DIR in root:
            mode, sha = root[STATUS_DIR]
            if mode != TREE_MODE:
                raise StoreError(f"{STATUS_DIR} at {tip[:12]} is a file, not a directory")
            status = repo.read_tree(sha) or {}
            for plural, (mode, sha) in status.items():
                if mode == TREE_MODE and plural in _KIND_BY_PLURAL:
                    plurals[plural] = TreeBuilder(repo.read_tree(sha))
        return cls(tip, root, status, plurals)

    def documents(self, repo: GitRepo) -> dict[Key, dict[str, Any]]:
        """Read and parse every status file, keyed (kind, name)."""
        docs: dict[Key, dict[str, Any]] = {}
        for plural, level in self.plurals.items():
            kind = _KIND_BY_PLURAL[plural]
            for filename, (mode, sha) in level.entries().items():
                if mode != FILE_MODE or not filename.endswith(".yaml"):
                    continue
                try:
                    docs[(kind, filename.removesuffix(".yaml"))] = yamlio.load(repo.read_blob(sha))
                except StoreError as exc:
                    path = f"{STATUS_DIR}/{plural}/{filename}"
                    raise StoreError(f"{path} at {self.tip and self.tip[:12]}: {exc}") from exc
        return docs


def read_tip(repo: GitRepo, branch: str = DEFAULT_BRANCH) -> tuple[str | None, dict[Key, dict[str, Any]]]:
    """Return the status branch's tip and every status document there, keyed (kind, name)."""
    tip = repo.resolve(branch_ref(branch))
    tree = StatusTree.load(repo, tip)
    return tip, tree.documents(repo)
