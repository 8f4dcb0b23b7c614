"""The one adapter between gitops-acp and git, split by job.

Everything in gitops-acp that touches a repository goes through this package; it is the only one
allowed to import GitPython (a ruff ``banned-api`` rule enforces it), so a change of backend
(pygit2, say) stays a change inside this folder. Callers hold one object, `GitRepo`, and import
every name from here, never from the modules below::

    repo.py         GitRepo: opens the repository, the one-thread guard, one method per call
      ├── objects.py      loose objects and packs written in-process; objects read via cat-file
      ├── trees.py        the tree codec, TreeBuilder, TreeEditor, listing a commit's files
      ├── refs.py         reading refs from files, compare-and-swap moves, log / CommitInfo
      ├── transfer.py     fetch, push with leases, URL helpers
      └── maintenance.py  merging packs and loose objects, the commit-graph
    readonly.py     ReadOnlyRepo: the reading half of GitRepo without GitPython (one-object readers)
    process.py      running one git command (environment, timeout, one-line errors); used by all

Why `GitRepo` is composed of parts rather than built from mixins: each part owns its own state
(the writer its pack buffer, `Refs` its packed-refs cache and ``update-ref --stdin`` process, the
tree reader its walk-or-ls-tree choice), so which method may touch what is visible from the
constructor, and a part can be read and tested without the rest. The thread guard then sits at
exactly one boundary, `GitRepo`'s public methods, instead of on every mixin method; the parts call
each other freely (a ref update re-reading the ref) without re-entering it. The cost is a thin
forwarding method per call in ``repo.py``, which is also where a caller reads the whole API.

Commits made *for a person* (``task create``, ``approve``, ``init``) are not here: they go through
a working tree or a clone as that person would, and live in
``store/usercommits.py``. The reconciler never makes them.

Importing this package loads none of its modules: each name is imported from its module when first
used (`__getattr__` below), so a command that reads one status file through `readonly.ReadOnlyRepo`
never pays for GitPython (~40 ms of every `gitops-acp get task NAME`; docs/growth.md).
"""

import importlib

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)

if TYPE_CHECKING:
    from gitops_acp.store.git.objects import blob_sha
    from gitops_acp.store.git.readonly import Reader, ReadOnlyRepo
    from gitops_acp.store.git.refs import ZERO_OID, CommitInfo, RefConflictError
    from gitops_acp.store.git.repo import GitRepo
    from gitops_acp.store.git.transfer import PushUpdate, init_bare, is_url, redact_url
    from gitops_acp.store.git.trees import EMPTY_TREE, TREE_MODE, TreeBuilder, TreeEditor

__all__ = [
    "EMPTY_TREE",
    "TREE_MODE",
    "ZERO_OID",
    "CommitInfo",
    "GitRepo",
    "PushUpdate",
    "ReadOnlyRepo",
    "Reader",
    "RefConflictError",
    "TreeBuilder",
    "TreeEditor",
    "blob_sha",
    "init_bare",
    "is_url",
    "redact_url",
]

#: Where each name lives (the module is imported on first use).
_HOMES = {
    "EMPTY_TREE": "trees",
    "TREE_MODE": "trees",
    "ZERO_OID": "refs",
    "CommitInfo": "refs",
    "GitRepo": "repo",
    "PushUpdate": "transfer",
    "ReadOnlyRepo": "readonly",
    "Reader": "readonly",
    "RefConflictError": "refs",
    "TreeBuilder": "trees",
    "TreeEditor": "trees",
    "blob_sha": "objects",
    "init_bare": "transfer",
    "is_url": "transfer",
    "redact_url": "transfer",
}


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value
