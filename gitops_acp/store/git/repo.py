"""`GitRepo`: the one object the rest of gitops-acp holds to read and write a repository.

A facade over the per-job parts of this package (see its docstring for why composition): it opens
the repository with GitPython, builds one `ObjectReader`, `ObjectWriter`, `TreeReader` and `Refs`
on it, and gives each public call the one-thread guard. The status writer calls it from its own
thread, the watcher and the command line call it directly; the API is blocking and small on
purpose.

A ``GitRepo`` must be used by one thread at a time: a GitPython ``Repo`` shared across threads
returned wrong file contents. Concurrent use raises ``StoreError`` instead of corrupting reads.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Concatenate, ParamSpec, Self, TypeVar

import git

from gitops_acp.errors import StoreError
from gitops_acp.store.git import maintenance, process, transfer
from gitops_acp.store.git.objectreader import ObjectReader
from gitops_acp.store.git.objects import (
    RETIRE_SECONDS,
    ROLL_UP_AFTER,
    ObjectWriter,
    commit_data,
    pack_ledger,
    with_signature,
)
from gitops_acp.store.git.refs import CommitInfo, Refs
from gitops_acp.store.git.trees import TreeBuilder, TreeReader

__all__ = ["GitRepo"]

P = ParamSpec("P")
R = TypeVar("R")


def _exclusive(method: Callable[Concatenate[GitRepo, P], R]) -> Callable[Concatenate[GitRepo, P], R]:
    """Refuse a call while another thread is inside this GitRepo (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: GitRepo, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # Re-entrant for the owning thread; a second thread fails at once instead of interleaving
        # its requests on the shared cat-file pipes.
        if not self._busy.acquire(blocking=False):
            raise StoreError(f"GitRepo {self.git_dir} used from two threads at once; open one per thread")
        try:
            return method(self, *args, **kwargs)
        finally:
            self._busy.release()

    return wrapper


def _cat_file(repo: git.Repo, git_dir: Path, name: str) -> tuple[str, str, bytes] | None:
    """(sha, type, content) of the object `name` names, through GitPython's persistent `git
    cat-file --batch` (`objectreader.CatFile`), or None if it does not exist."""
    for attempt in (1, 2):
        try:
            sha, kind, _size, data = repo.git.get_object_data(name)
            # GitPython passes the header through as bytes despite its str annotations.
            return _text(sha), _text(kind), data
        except ValueError:
            # Missing or ambiguous object, unless the persistent process died (then the header
            # line comes back empty): restart it once.
            proc = getattr(repo.git, "cat_file_all", None)
            if proc is None or proc.proc is None or proc.proc.poll() is None or attempt == 2:
                return None
        except OSError as exc:  # broken pipe to a dead cat-file
            if attempt == 2:
                raise StoreError(f"git cat-file failed in {git_dir}: {exc}") from exc
        repo.git.clear_cache()
    return None


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


class GitRepo:
    """A git repository opened for reading and writing objects and refs (one thread at a time)."""

    def __init__(self, repo: git.Repo) -> None:
        """Wrap an opened GitPython repository; use `GitRepo.open`."""
        self._busy = threading.RLock()
        self._git_dir = Path(repo.git_dir).resolve()
        self._common_dir = Path(repo.common_dir).resolve()
        self._work_tree = Path(repo.working_tree_dir).resolve() if repo.working_tree_dir else None
        # Our subprocesses get the repository explicitly, so stray GIT_DIR & co never redirect them;
        # the same for GitPython's persistent cat-file.
        repo.git.update_environment(**{k: None for k in process.REPO_ENV_VARS if k in os.environ})
        self._repo = repo
        self._reader = ObjectReader(functools.partial(_cat_file, repo, self._git_dir), self._git_dir)
        self._writer = ObjectWriter(self._common_dir)
        self._trees = TreeReader(self._reader, self._git_dir)
        self._refs = Refs(self._git_dir, self._common_dir)

    @classmethod
    def open(cls, path: str | Path) -> GitRepo:
        """Open a work tree, a `.git` directory or a bare repository at exactly `path`."""
        try:
            repo = git.Repo(str(path))
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise StoreError(f"not a git repository: {path}") from exc
        return cls(repo)

    # -- identity -----------------------------------------------------------------------------

    @property
    def git_dir(self) -> Path:
        """The git directory (for a linked worktree: its own, under the common dir's `worktrees/`)."""
        return self._git_dir

    @property
    def common_dir(self) -> Path:
        """The directory that holds objects, branches and `packed-refs`."""
        return self._common_dir

    @property
    def work_tree(self) -> Path | None:
        """The working tree, or None for a bare repository."""
        return self._work_tree

    @property
    def is_bare(self) -> bool:
        """True when the repository has no working tree."""
        return self._work_tree is None

    def __repr__(self) -> str:
        return f"GitRepo({str(self._work_tree or self._git_dir)!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the persistent `git cat-file` and `update-ref` processes (a few MB each until closed).

        The packs `one_pack` wrote and did not roll up become maintenance's (`ObjectWriter.close`).
        """
        self._refs.close()
        self._repo.close()  # GitPython's persistent cat-file processes
        self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @_exclusive
    def config(self, key: str) -> str | None:
        """Return the repository's value of a config `key` (e.g. `remote.origin.url`), or None when unset."""
        proc = process.in_repo(self._git_dir, "config", "--get", key, check=False)
        return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else None

    @_exclusive
    def set_config(self, key: str, value: str) -> None:
        """Set a config `key` of this repository."""
        process.in_repo(self._git_dir, "config", key, value)

    # -- refs (refs.py) -----------------------------------------------------------------------

    @_exclusive
    def resolve(self, ref: str) -> str | None:
        """Return the full sha `ref` points at, or None if there is no such ref or object.

        Full ref names, `HEAD` and short branch/tag names are read from the ref files directly
        (the watcher calls this on every wake-up); other revision syntax goes to `git rev-parse`.
        """
        return self._refs.resolve(ref)

    @_exclusive
    def update_ref(self, ref: str, new: str, old: str | None, *, message: str) -> None:
        """Move `ref` from `old` (None: it must not exist) to `new` atomically, or raise RefConflictError.

        Raises LockedError when someone holds the ref's lock (it did not move).
        """
        self._refs.update(ref, new, old, message=message)

    @_exclusive
    def delete_ref(self, ref: str, old: str) -> None:
        """Delete `ref` if it still points at `old`, or raise RefConflictError."""
        self._refs.delete(ref, old)

    @_exclusive
    def refs(self, *prefixes: str) -> dict[str, str]:
        """Return every ref under `prefixes` (such as `refs/heads/acp/`) as full name -> sha."""
        return self._refs.under(*prefixes)

    @_exclusive
    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether commit `ancestor` is `descendant` or one of its ancestors."""
        return self._refs.is_ancestor(ancestor, descendant)

    @_exclusive
    def count(self, tip: str, *, exclude: str | None = None) -> int:
        """Return how many commits `tip` has that `exclude` (if given) does not."""
        return self._refs.count(tip, exclude=exclude)

    @_exclusive
    def log(
        self,
        ref: str,
        *,
        path: str | Sequence[str] | None = None,
        n: int = 20,
        first_parent: bool = False,
        since: float | None = None,
        trailers: bool = True,
    ) -> list[CommitInfo]:
        """Return the newest `n` commits reachable from `ref` (touching `path`, or any of several,
        if given), newest first.

        Always bounded by `-n`: a path-limited log over a whole long history is slow (GIT-NOTES).
        `first_parent`: only the branch's own line (a merge shows as the commit that brought the change).
        """
        return self._refs.log(ref, path=path, n=n, first_parent=first_parent, since=since, trailers=trailers)

    # -- reading objects (objects.py, trees.py) -----------------------------------------------

    @_exclusive
    def read_blob(self, sha: str) -> bytes:
        """Return the content of blob `sha`."""
        return self._reader.blob(sha)

    @_exclusive
    def read_blobs(self, shas: Sequence[str]) -> dict[str, bytes]:
        """Return the content of each blob in `shas`, by sha: many in one `git cat-file --batch` run."""
        return self._reader.blobs(shas)

    @_exclusive
    def read_trees(self, shas: Sequence[str]) -> dict[str, bytes]:
        """Return each tree in `shas` as git stores it (`parse_tree`, `TreeBuilder.parse` read it), by
        sha: many in one `cat-file --batch` run."""
        return self._reader.many(shas, "tree")

    @_exclusive
    def files_present(self, commit: str, paths: Sequence[str]) -> set[str]:
        """Which of `paths` are files in `commit` (none read): many in one `cat-file --batch-check` run."""
        return self._reader.files_present(commit, paths)

    @_exclusive
    def read_file(self, commit: str, path: str) -> bytes | None:
        """Return the content of `path` in `commit`, or None if the file does not exist there."""
        return self._reader.file(commit, path)

    @_exclusive
    def read_first_files(self, wanted: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[int, bytes] | None]:
        """For each (commit, paths): the first of `paths` that is a file there, as (its index, its
        content), or None (see `ObjectReader.first_files`)."""
        return self._reader.first_files(wanted)

    @_exclusive
    def read_tree(self, treeish: str, path: str = "") -> dict[str, tuple[str, str]] | None:
        """Return one level of a tree as name -> (mode, sha); None if `path` is not in `treeish`.

        `treeish` is a tree or commit sha (or any revision); `path` a directory inside it ("" for
        the root).
        """
        return self._trees.read(treeish, path)

    @_exclusive
    def list_tree(self, commit: str, path: str = "") -> dict[str, str]:
        """Return every file of `commit` (under directory `path`) as path -> blob sha (recursive;
        submodules left out; full paths from the root)."""
        if path:
            return self._trees.ls_tree(commit, path)
        return self._trees.files(commit)

    @_exclusive
    def changed_files(self, old: str, new: str, path: str = "") -> dict[str, str | None]:
        """Return the files that differ between commits `old` and `new` (under directory `path`):
        path -> blob sha in `new` (None: not in `new`). Costs the size of the change, not of the trees."""
        return self._trees.changed_files(old, new, path)

    # The two ways `list_tree` can go, timed against each other by benchmarks/bench_checkpoint.py.
    def _walk_tree(self, commit: str, max_trees: int) -> dict[str, str] | None:
        return self._trees.walk(commit, max_trees)

    def _ls_tree(self, commit: str) -> dict[str, str]:
        return self._trees.ls_tree(commit)

    @_exclusive
    def commit_time(self, sha: str) -> float:
        """Return the committer time of commit `sha` (seconds since the epoch)."""
        return self._reader.commit_time(sha)

    @_exclusive
    def tree_of(self, commit: str) -> str:
        """Return the tree sha of `commit`."""
        return self._reader.tree_of(commit)

    # -- writing objects (objects.py) ---------------------------------------------------------

    def one_pack(self) -> AbstractContextManager[None]:
        """Objects written inside the `with` block go to one new pack file at its end, not a file each.

        The pack lands before the block returns, so a ref may point at its objects right after; if
        the block raises, nothing is written. See `ObjectWriter.one_pack` for why.
        """
        return self._writer.one_pack()

    @_exclusive
    def roll_up_packs(self, *, at_least: int = ROLL_UP_AFTER) -> bool:
        """Roll the packs `one_pack` wrote into one once there are `at_least` (`ObjectWriter.roll_up`)."""
        return self._writer.roll_up(at_least=at_least)

    @_exclusive
    def write_blob(self, data: bytes, sha: str | None = None) -> str:
        """Store `data` as a blob and return its sha (`sha`: already known, not computed again)."""
        return self._writer.store(b"blob", data, sha)

    @_exclusive
    def write_tree(self, entries: Mapping[str, tuple[str, str]] | TreeBuilder) -> str:
        """Store a tree of name -> (mode, sha) entries (`100644` files, `40000` trees) and return its sha."""
        builder = entries if isinstance(entries, TreeBuilder) else TreeBuilder(entries)
        return self._writer.store(b"tree", builder.data())

    @_exclusive
    def write_commit(
        self,
        *,
        tree: str,
        parents: Sequence[str],
        message: str,
        author: tuple[str, str],
        committer: tuple[str, str] | None = None,
        timestamp: float | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> str:
        """Store a commit object and return its sha (no ref moves: see `update_ref`).

        `author`/`committer` are (name, email); `timestamp` defaults to now, in the local time zone
        as git records it. `sign` returns an armored signature of the commit's content (the
        `gpgsig` header git verifies; signatures.ssh_signer).
        """
        data = commit_data(
            tree=tree,
            parents=parents,
            message=message,
            author=author,
            committer=committer,
            timestamp=timestamp,
        )
        if sign is not None:
            data = with_signature(data, sign(data))
        return self._writer.store(b"commit", data)

    # -- remotes (transfer.py) ----------------------------------------------------------------

    @_exclusive
    def fetch(self, remote: str, refspecs: Sequence[str], *, prune: bool = True) -> None:
        """Fetch `refspecs` from the remote named `remote`; raise RemoteError when it fails."""
        transfer.fetch(self._git_dir, remote, refspecs, prune=prune)

    @_exclusive
    def push(self, remote: str, updates: Sequence[transfer.PushUpdate]) -> dict[str, str | None]:
        """Push each update with `--force-with-lease` (its expected value); return ref -> None or why refused.

        A ref whose remote value is not the expected one is rejected (nothing is overwritten); the
        others go through. Raises RemoteError when the push failed as a whole (unreachable, refused).
        """
        return transfer.push(self._git_dir, remote, updates)

    # -- maintenance (maintenance.py) ---------------------------------------------------------

    # Not `_exclusive`: maintenance runs git processes on the directory and touches none of this
    # GitRepo's pipes, so it runs on a thread of its own while reads and checkpoints go on (on the
    # reader's thread, a repack of a big history held up reading `main` for seconds).

    def write_commit_graph(self) -> None:
        """Refresh the commit-graph with changed-path Bloom filters (path-limited logs get ~8x faster).

        Slow on big histories: run it in the background, never on the checkpoint path. Safe from
        any thread (it uses no pipe of this GitRepo).
        """
        maintenance.write_commit_graph(self._git_dir)

    def maintain(self, *, shared: bool = True) -> None:
        """Roll loose objects and small packs up and refresh the commit-graph; in a mirror, `gc --auto` too.

        `shared`: people work in this repository too, so nothing may take a lock their git needs
        (see `maintenance.maintain`). Safe from any thread (it uses no pipe of this GitRepo).
        """
        maintenance.maintain(self._git_dir, self._common_dir / "objects", shared=shared)

    def delete_retired_packs(self, *, older_than: float = RETIRE_SECONDS) -> None:
        """Delete the packs a roll-up or `maintain` replaced at least `older_than` seconds ago (a few
        file calls; `objects.PackLedger`): from the background's loop between maintenance runs, so
        that none waits for the next commit. Safe from any thread."""
        objects = self._common_dir / "objects"
        pack_ledger(objects).sweep(objects / "pack", older_than=older_than)
