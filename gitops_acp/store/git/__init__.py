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
      └── maintenance.py  repack and the commit-graph
    process.py      running one git command (environment, timeout, one-line errors); used by all

Why `GitRepo` is composed of parts rather than built from mixins: each part owns its own state
(the writer its pack buffer, `Refs` its packed-refs cache and ``update-ref --stdin`` process, the
tree reader its walk-or-ls-tree choice), so which method may touch what is visible from the
constructor, and a part can be read and tested without the rest. The thread guard then sits at
exactly one boundary, `GitRepo`'s public methods, instead of on every mixin method; the parts call
each other freely (a ref update re-reading the ref) without re-entering it. The cost is a thin
forwarding method per call in ``repo.py``, which is also where a caller reads the whole API.

Commits made *for a person* (``task create``, ``approve``, ``init``) are not here: they go through
a working tree or a clone as that person would, and live beside the command line in
``cli/commits.py``. The reconciler never makes them.
"""

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
    "RefConflictError",
    "TreeBuilder",
    "TreeEditor",
    "init_bare",
    "is_url",
    "redact_url",
]
