"""The status branch: its single writer (group commit, compare-and-swap) and the reader of its tip.

Controllers end every reconcile with `await writer.commit([Change(...)], spec_commit=...)`; the
call returns once a commit on `acp/status` records the checkpoint (DESIGN §1 "Commits": a task
never advances past a checkpoint until the commit that records it exists). Start-up recovery and
`gitops-acp get` read the same files back with `read_tip`.

How a checkpoint becomes a commit:

- All git work runs in one dedicated thread that owns its own `GitRepo` (GitPython objects must not
  be shared across threads), so the event loop never blocks on git.
- Group commit: callers that arrive while a commit is being written are batched into the next one
  (one commit of 100 checkpoints costs about what one checkpoint does). A batch never holds two
  checkpoints of the same resource: the later one waits for the following commit, so one resource's
  successive checkpoints stay distinct commits, in order. One call's changes always share a commit
  (a task and the tool calls it creates are recorded atomically).
- The tree is kept in memory as a `TreeEditor` (statustree.py), each level already serialized; a
  commit rewrites only the trees on the paths it touched: with tasks fanned out three levels
  deep, a handful of small trees whatever the tip holds (DESIGN §9). Identical blobs are not
  committed. Archiving moves files from `status/` to `archive/` in an `archive:` commit.
- The ref moves by compare-and-swap (`update-ref <new> <old>`). If someone else moved it, the tip
  is re-read, the batch re-applied on top of it, and the commit retried with backoff.
- A caller hears "done" only once the ref points at a commit holding its checkpoint; on failure
  every caller in the batch gets the exception. With a remote, `confirm` (the pusher) must also
  say the commit is pushed; the writer does not wait for it, so it keeps group-committing while
  a push is in flight (a push carries the newest tip, every earlier commit with it). A caller
  cancelled after submitting still gets its checkpoint committed (shutdown relies on it: the
  checkpoint in flight is finished).

The writer never touches `main`, the index or any working tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitops_acp import faults
from gitops_acp.errors import ConflictError, LockedError, StoreError
from gitops_acp.resources.lifecycle import Key
from gitops_acp.resources.meta import ARCHIVE_ROOT, PLURALS, Kind, legacy_status_path, status_path
from gitops_acp.store import recovery, yamlio
from gitops_acp.store.git import EMPTY_TREE, GitRepo, RefConflictError, blob_sha
from gitops_acp.store.statustree import (
    DEFAULT_BRANCH,
    FILE_MODE,
    STATUS_DIR,
    StatusTree,
    bookmark_path,
    branch_ref,
    read_tip,
)
from gitops_acp.telemetry import metrics

__all__ = [
    "BATCH_MAX_PATHS",
    "BLOOM_MAX_PATHS",
    "DEFAULT_BRANCH",
    "DEFAULT_IDENTITY",
    "STATUS_DIR",
    "Change",
    "StatusWriter",
    "WriterStats",
    "changed_paths",
    "read_tip",
]

log = logging.getLogger(__name__)

DEFAULT_IDENTITY = ("gitops-acp", "gitops-acp@localhost")
CommitHook = Callable[[str], Awaitable[None]]


def _kind(kind: str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise StoreError(f"unknown kind {kind!r}: expected one of {', '.join(PLURALS)}") from None


def _phase(text: str) -> str:
    # Phases go into one-line commit subjects and body lines.
    return " ".join(text.split()) or "-"


#: Characters a resource name cannot hold in a status file's name (nor may it start with ".").
_UNFIT_IN_NAME = re.compile("[/\0\n\r ]")
#: Status file paths remembered by `StatusWriter._path` before the memo starts again.
_MAX_CACHED_PATHS = 8192

#: The most paths a commit may change and keep a changed-path Bloom filter: git counts each file
#: and each of its leading directories (`status`, `status/tasks`, ... `status/tasks/a/b/c`), and
#: gives a commit of more a truncated filter, which says "maybe changed" for every path. Every
#: path-limited log (`history`, `describe`'s events) then diffs that commit's trees: ~30 µs each,
#: and there were ~390 such commits in a history of 100,000 tasks (docs/growth.md, "Commits that
#: every history diffed"). So a group commit stops short of this many, and so does an archive
#: commit (`reactor/retention.py`); whatever git writes the commit-graph, a person's included.
BLOOM_MAX_PATHS = 512
#: What a batch may change itself: an hour's first commit also writes its bookmark, three paths
#: (`bookmarks`, `bookmarks/<month>`, the file; statustree.py).
BATCH_MAX_PATHS = BLOOM_MAX_PATHS - 3


def changed_paths(paths: Sequence[str], into: set[str] | None = None) -> set[str]:
    """`paths` with their leading directories, as git counts them for a commit's changed-path
    Bloom filter (BLOOM_MAX_PATHS); those already in `into` are left out."""
    found: set[str] = set()
    for path in paths:
        while path and path not in found and (into is None or path not in into):
            found.add(path)
            path = path.rpartition("/")[0]
    return found


ARCHIVED = "Archived"  # the phase an `archive:` commit's lines move resources to


@dataclass(frozen=True)
class Change:
    """One resource's checkpoint: its full object (None deletes its file) and the phase move.

    `archive`: move the resource's file, as it is, from `status/` to `archive/` (DESIGN §9;
    `document` is then ignored). A call's changes are all archives or none are; an archiving
    call is committed on its own, as `archive: <n> resources`.
    """

    kind: Kind  # Kind.Task, Kind.ToolCall, ...
    name: str
    document: dict[str, Any] | None  # apiVersion, kind, metadata, spec, status; None: delete the file
    old_phase: str = "-"  # shown in the commit message: "<Kind>/<name>: <old> -> <new>"
    new_phase: str = "-"
    archive: bool = False
    # The document as its status file (`yamlio.dump`) and that file's blob sha, when the caller
    # made them already (the State: it looks for secret values in the file, and reads a finished
    # resource back from its blob); None: the writer makes them.
    data: bytes | None = field(default=None, repr=False, compare=False)
    blob: str | None = field(default=None, compare=False)

    @property
    def key(self) -> Key:
        """The resource's identity, (kind, name)."""
        return (self.kind, self.name)

    @property
    def line(self) -> str:
        """The commit message line for this change."""
        return f"{self.kind}/{self.name}: {_phase(self.old_phase)} -> {_phase(self.new_phase)}"


@dataclass
class WriterStats:
    """Counters of a StatusWriter, for logs and the benchmark."""

    commits: int = 0  # commits the writer put on the branch
    checkpoints: int = 0  # commit() calls recorded in those commits (no-ops excluded)
    resources: int = 0  # resource files written or deleted by them
    conflicts: int = 0  # lost compare-and-swap races, each retried on the new tip
    durations_ms: list[float] = field(default_factory=list)  # per commit: batch start to ref moved


# -- the writer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """One change ready for the writer thread: its file serialized and hashed on the caller's side."""

    change: Change
    path: str  # status/<plural>/[a/b/c/]<name>.yaml
    data: bytes | None
    sha: str | None


@dataclass
class _Pending:
    """One commit() call waiting for its commit."""

    changes: list[_Prepared]
    spec_commit: str
    future: asyncio.Future[str | None]
    keys: frozenset[Key]

    @property
    def archive(self) -> bool:
        """An archiving call: committed alone."""
        return self.changes[0].change.archive


@dataclass
class _Outcome:
    """What the writer thread did with one batch."""

    sha: str | None
    landed: list[bool]  # per call of the batch: did it change anything
    resources: int
    conflicts: int
    duration_ms: float


@dataclass
class _Locked:
    """A lock file in the writer's way: where, as first seen, since when (monotonic)."""

    path: Path
    stamp: recovery.Stamp | None
    since: float


def _consume(future: asyncio.Future[str | None]) -> None:
    # The caller stopped waiting: read the outcome so asyncio does not log it as never retrieved.
    if not future.cancelled():
        future.exception()


class StatusWriter:
    """The single writer of the status branch (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        branch: str = DEFAULT_BRANCH,
        identity: tuple[str, str] = DEFAULT_IDENTITY,
        max_attempts: int = 8,
        max_batch: int = 2000,
        lock_wait: float = 5.0,
        owns_branch: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare a writer for the repository at `path`; nothing happens until `start()`.

        `max_attempts` bounds the compare-and-swap retries of one commit; `max_batch` the number of
        resources in one group commit (a single call with more still goes in one commit).
        `lock_wait`: seconds a commit waits for a locked branch before it fails; `owns_branch`: this
        process holds the branch's ServeLock (store/recovery.py), so a lock that stayed unchanged
        all that time was left by a killed process and is removed.
        """
        self.path = Path(path)
        self.branch = branch_ref(branch)
        self.identity = identity
        self.max_attempts = max_attempts
        self.max_batch = max_batch
        self.lock_wait = lock_wait
        self.owns_branch = owns_branch
        self.clock = clock  # commit times (the State stamps first checkpoints with the same clock)
        self.stats = WriterStats()
        # Why the last group commit failed (None once one lands again): readiness and `--once` read it.
        self.failure: str | None = None
        # Called with the reason whenever a group commit fails for good (its callers get the error).
        self.on_failure: list[Callable[[str], None]] = []
        # Awaited in order after each commit, before its callers are released (a remote pusher
        # will hang here). A hook's exception is given to that commit's callers.
        self.on_commit: list[CommitHook] = []
        # With a remote: returns once a commit is pushed. Awaited off the commit loop, so the next
        # group commit is written while a push is in flight; callers are released after it.
        self.confirm: CommitHook | None = None
        self._confirming: set[asyncio.Task[None]] = set()
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._loaded_blobs: dict[Key, str] = {}  # of the files `start` read (`loaded_blobs`)
        # Owned by the writer thread only:
        self._repo: GitRepo | None = None
        self._tree: StatusTree | None = None
        self._stale = False
        self._paths: dict[tuple[str, str], str] = {}  # (kind, name) -> status file (`_path`)

    # -- asyncio side ---------------------------------------------------------------------

    async def start(
        self, *, known: Callable[[Key, str], str | None] | None = None
    ) -> dict[Key, dict[str, Any]]:
        """Open the repository, load the branch's tip and return every status document there.

        `known(key, blob)`: the phase of a file the caller knows by its blob already (a finished
        task of an earlier run: reactor/coldfacts.py), which is then not read nor returned (its
        blob is in `loaded_blobs`); None for a file to read. Called on the writer's thread.
        """
        if self._executor is not None:
            raise StoreError("status writer already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acp-status-writer")
        loop = asyncio.get_running_loop()
        phases: list[str] = []  # of the Tasks not read, for the gauge
        try:
            docs = await loop.run_in_executor(self._executor, self._open, known, phases)
        except BaseException:
            await loop.run_in_executor(self._executor, self._close_repo)
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        self._flusher = asyncio.create_task(self._flush_loop(), name="status-writer")
        metrics.tasks_at_start(docs.values(), phases)
        return docs

    async def commit(self, changes: Sequence[Change], *, spec_commit: str) -> str | None:
        """Record `changes` (one checkpoint) in one commit; return its sha, or None if nothing changed.

        Returns once the branch points at that commit. Raises StoreError if it could not be
        written (nothing of this checkpoint is then reported as committed).
        """
        future = self.submit(changes, spec_commit=spec_commit)
        try:
            # Shielded: cancelling the caller must not cancel the checkpoint it already handed over.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_consume)
            raise

    def submit(self, changes: Sequence[Change], *, spec_commit: str) -> asyncio.Future[str | None]:
        """Hand `changes` to the writer now; the future is `commit`'s outcome (never cancel it).

        `commit` without its coroutine: the State (controllers/state.py) awaits the future itself,
        so a checkpoint costs no task of its own (2% of the reconciler's CPU on the tool workload).
        Bad changes (a name unfit for a file, a resource twice) raise here, before anything is queued.
        """
        if self._flusher is None or self._closing:
            raise StoreError("the status writer is not running (call start(), and not after close())")
        prepared = self._prepare(changes)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        if not prepared:
            future.set_result(None)
            return future
        self._queue.append(_Pending(prepared, spec_commit, future, frozenset(p.change.key for p in prepared)))
        self._wake.set()
        return future

    def _prepare(self, changes: Sequence[Change]) -> list[_Prepared]:
        """Check and serialize a call's changes now, so later mutation by the caller cannot leak in."""
        prepared: list[_Prepared] = []
        seen: set[Key] = set()
        if len({change.archive for change in changes}) > 1:
            raise ValueError("one call either archives resources or checkpoints them, not both")
        for change in changes:
            if change.key in seen:
                raise ValueError(f"{change.kind}/{change.name} appears twice in one checkpoint")
            seen.add(change.key)
            name = change.name
            if not name or name[0] == "." or _UNFIT_IN_NAME.search(name) is not None:
                raise StoreError(f"invalid resource name {name!r} for a status file")
            data = sha = None
            if change.document is not None and not change.archive:
                if change.data is not None:
                    data, sha = change.data, change.blob or blob_sha(change.data)
                else:
                    data = yamlio.dump(change.document)
                    sha = blob_sha(data)
            prepared.append(_Prepared(change=change, path=self._path(change.kind, name), data=data, sha=sha))
        return prepared

    def _path(self, kind: str, name: str) -> str:
        """`status_path`, remembered: a resource's checkpoints all go to one file (a SHA-256 each)."""
        key = (kind, name)
        path = self._paths.get(key)
        if path is None:
            if len(self._paths) >= _MAX_CACHED_PATHS:
                self._paths.clear()
            path = self._paths[key] = status_path(kind if type(kind) is Kind else _kind(kind), name)
        return path

    def _take_batch(self) -> list[_Pending]:
        """Take the next group commit's calls off the queue, keeping each resource's order."""
        batch: list[_Pending] = []
        keys: set[Key] = set()
        # Keys of calls left waiting: a later call touching them must wait too, or it would
        # overtake an earlier checkpoint of the same resource.
        blocked: set[Key] = set()
        rest: deque[_Pending] = deque()
        full = False
        paths: set[str] = set()  # what the batch changes, as git counts it (BLOOM_MAX_PATHS)
        for item in self._queue:
            if batch and (len(keys) + len(item.keys) > self.max_batch or item.archive or batch[0].archive):
                full = True
            adds = set() if full else changed_paths([prepared.path for prepared in item.changes], paths)
            if batch and len(paths) + len(adds) > BATCH_MAX_PATHS:
                full = True
            if full or item.keys & keys or item.keys & blocked:
                blocked |= item.keys
                rest.append(item)
            else:
                batch.append(item)
                keys |= item.keys
                paths |= adds
        self._queue = rest
        return batch

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch = self._take_batch()
            try:
                outcome = await loop.run_in_executor(self._executor, self._write_batch, batch)
                self._record(outcome)
                if outcome.sha is not None:
                    landed = (
                        p.change for i, ok in zip(batch, outcome.landed, strict=True) if ok for p in i.changes
                    )
                    metrics.committed(outcome.duration_ms / 1000, landed)
                    for hook in list(self.on_commit):
                        await hook(outcome.sha)
            except asyncio.CancelledError:
                # The loop is going away under us: nobody will be told "done" for a commit we cannot
                # confirm, and nothing queued is left hanging.
                error = StoreError("the status writer was stopped before this checkpoint was confirmed")
                for item in [*batch, *self._queue]:
                    if not item.future.done():
                        item.future.set_exception(error)
                self._queue.clear()
                raise
            except Exception as exc:
                log.error("status commit of %d checkpoint(s) failed: %s", len(batch), exc)
                self.failure = str(exc)
                for callback in list(self.on_failure):
                    callback(self.failure)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.failure = None
            if outcome.sha is not None and self.confirm is not None:
                task = asyncio.create_task(self._release(batch, outcome, self.confirm))
                self._confirming.add(task)
                task.add_done_callback(self._confirming.discard)
            else:
                _resolve(batch, outcome)

    async def _release(self, batch: list[_Pending], outcome: _Outcome, confirm: CommitHook) -> None:
        """Release a batch's callers once `confirm` says its commit is durable (pushed)."""
        assert outcome.sha is not None
        try:
            await confirm(outcome.sha)
        except asyncio.CancelledError:
            error = StoreError(f"stopped before commit {outcome.sha[:12]} was pushed (kept, pushed later)")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            raise
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        _resolve(batch, outcome)

    def _record(self, outcome: _Outcome) -> None:
        self.stats.conflicts += outcome.conflicts
        if outcome.sha is None:
            return
        self.stats.commits += 1
        self.stats.checkpoints += sum(outcome.landed)
        self.stats.resources += outcome.resources
        self.stats.durations_ms.append(outcome.duration_ms)

    async def close(self) -> None:
        """Commit everything already submitted, then stop the writer thread and close the repository."""
        if self._executor is None or self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._flusher is not None and not self._flusher.done():  # done: cancelled with the loop
            await self._flusher
        # Pushes still awaited: the commits are in the repository; whoever owns `confirm` (the
        # remote's pusher) pushes them at its own close or at the next start.
        for task in list(self._confirming):
            task.cancel()
        await asyncio.gather(*self._confirming, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_repo)
        self._executor.shutdown(wait=True)  # idle by now: returns at once

    # -- writer thread ----------------------------------------------------------------------

    def _open(
        self, known: Callable[[Key, str], str | None] | None, phases: list[str]
    ) -> dict[Key, dict[str, Any]]:
        self._repo = GitRepo.open(self.path)
        self._tree = StatusTree.load(self._repo, self._repo.resolve(self.branch))
        self._migrate(self._repo)
        if known is None:
            return self._tree.documents(self._repo, self._loaded_blobs)

        def skip(key: Key, blob: str) -> bool:
            phase = known(key, blob)
            if phase is not None and key[0] == Kind.Task:
                phases.append(phase)
            return phase is not None

        return self._tree.documents(self._repo, self._loaded_blobs, known=skip)

    def loaded_blobs(self) -> dict[Key, str]:
        """The blob sha of each status file `start` returned (once: the writer forgets them)."""
        blobs, self._loaded_blobs = self._loaded_blobs, {}
        return blobs

    def _close_repo(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def _write_batch(self, batch: list[_Pending]) -> _Outcome:
        """Commit one batch on the current tip, retrying on a lost compare-and-swap."""
        assert self._repo is not None
        assert self._tree is not None
        started = time.perf_counter()
        repo = self._repo
        if self._stale:
            # An earlier batch failed in a way that may have left the model behind the branch.
            self._tree = StatusTree.load(repo, repo.resolve(self.branch))
            self._stale = False
        conflicts = 0
        attempt = 0
        locked: _Locked | None = None
        while attempt < self.max_attempts:
            try:
                with faults.scope("archive") if batch[0].archive else contextlib.nullcontext():
                    sha, landed, resources = self._commit_on_tip(repo, batch)
                return _Outcome(sha, landed, resources, conflicts, (time.perf_counter() - started) * 1000)
            except ConflictError as exc:
                conflicts += 1
                attempt += 1
                actual = exc.actual if isinstance(exc, RefConflictError) else repo.resolve(self.branch)
                log.info("%s moved to %s behind the writer; re-applying the batch", self.branch, actual)
                self._tree = StatusTree.load(repo, actual)
                # Exponential backoff with jitter, so two writers in a tug of war desynchronize.
                time.sleep(min(0.005 * 2 ** (attempt - 1), 0.5) * (0.5 + random.random()))
            except LockedError as exc:
                # Not a lost race: the ref did not move. Wait a bounded time for whoever holds it.
                # The batch was applied to the model in place: start again from the branch.
                self._tree = StatusTree.load(repo, repo.resolve(self.branch))
                if locked is None or locked.path != Path(exc.lock):
                    locked = _Locked(Path(exc.lock), recovery.stamp(Path(exc.lock)), time.monotonic())
                    log.info("%s is locked by another process (%s); waiting", self.branch, exc.lock)
                if time.monotonic() - locked.since < self.lock_wait:
                    time.sleep(min(0.05 * 2 ** int(time.monotonic() - locked.since), 1.0))
                    continue
                if self.owns_branch and recovery.stale(locked.path, locked.stamp):
                    # Unchanged the whole time, on a branch nobody else writes while we hold its
                    # ServeLock: left by a killed process (our own `git update-ref`, say).
                    with contextlib.suppress(FileNotFoundError):
                        locked.path.unlink()
                    log.warning(
                        "removed %s: left by a killed process (unchanged for %.0fs)",
                        locked.path,
                        self.lock_wait,
                    )
                    locked = None
                    attempt += 1
                    continue
                self._stale = True
                raise StoreError(
                    f"{self.branch} stayed locked for {self.lock_wait:.0f}s: {exc.lock} is held by another "
                    "process; checkpoints cannot be committed until it is released"
                ) from None
            except BaseException:
                self._stale = True
                raise
        raise StoreError(f"{self.branch} kept moving: gave up after {self.max_attempts} attempts")

    def _commit_on_tip(self, repo: GitRepo, batch: list[_Pending]) -> tuple[str | None, list[bool], int]:
        """Apply the batch to the in-memory tip, write the objects, move the ref; return what landed.

        The model is changed in place; if anything fails before the ref moves, the caller reloads
        it from the branch (on a lost race at once, otherwise before the next batch).
        """
        tree = self._tree
        assert tree is not None
        edit = tree.tree
        landed: list[bool] = []
        lines: list[str] = []
        resources: list[str] = []
        spec_commits: list[str] = []
        now = self.clock()
        # The first commit of an hour bookmarks the tip, the last commit of an earlier one (statustree.py).
        bookmark = None
        if tree.tip is not None:
            if tree.tip_time is None:  # a tip just loaded: read once, then kept by each commit
                tree.tip_time = repo.commit_time(tree.tip)
            if now // 3600 > tree.tip_time // 3600:
                bookmark = bookmark_path(tree.tip_time)
        # The directories this batch touches, read many at a time (an archive commit's thousands).
        directories: set[str] = {bookmark.rpartition("/")[0]} if bookmark is not None else set()
        for item in batch:
            for prepared in item.changes:
                directories.add(prepared.path.rpartition("/")[0])
                if prepared.change.archive:
                    moved = status_path(_kind(prepared.change.kind), prepared.change.name, root=ARCHIVE_ROOT)
                    directories.add(moved.rpartition("/")[0])
        edit.preload(directories, repo.read_trees, raw_under=ARCHIVE_ROOT)
        with repo.one_pack():  # the commit's objects in one file (see GitRepo.one_pack)
            for item in batch:
                changed = False
                for prepared in item.changes:
                    change = prepared.change
                    if change.archive:
                        entry = edit.get(prepared.path)
                        if entry is None:
                            continue  # already archived (or never written): nothing to move
                        edit.remove(prepared.path)
                        edit.set(status_path(_kind(change.kind), change.name, root=ARCHIVE_ROOT), *entry)
                    elif prepared.sha is None:
                        if not edit.remove(prepared.path):
                            continue
                    else:
                        if edit.get(prepared.path) == (FILE_MODE, prepared.sha):
                            continue
                        assert prepared.data is not None
                        repo.write_blob(prepared.data, prepared.sha)
                        edit.set(prepared.path, FILE_MODE, prepared.sha)
                    changed = True
                    lines.append(change.line)
                    resources.append(f"{change.kind}/{change.name}")
                landed.append(changed)
                if changed and item.spec_commit and item.spec_commit not in spec_commits:
                    spec_commits.append(item.spec_commit)
            if not lines:
                return None, landed, 0
            if bookmark is not None:
                assert tree.tip is not None
                data = f"{tree.tip}\n".encode()
                marked = blob_sha(data)
                repo.write_blob(data, marked)
                edit.set(bookmark, FILE_MODE, marked)
            root = edit.write(repo.write_tree) or EMPTY_TREE
            archive = batch[0].archive
            sha = repo.write_commit(
                tree=root,
                parents=[tree.tip] if tree.tip else [],
                message=_message(
                    lines, spec_commits, resources, subject="archive" if archive else "checkpoint"
                ),
                author=self.identity,
                committer=self.identity,
                timestamp=now,
            )
        repo.update_ref(self.branch, sha, tree.tip, message=f"gitops-acp: {lines[0]}")
        tree.tip, tree.tip_time = sha, now
        if batch[0].archive:
            tree.tree.unload(ARCHIVE_ROOT)  # it only grows: read the few levels each archive needs
        try:  # the last group commits' packs into one, now and then (GitRepo.roll_up_packs)
            repo.roll_up_packs()
        except StoreError as exc:  # an optimisation: the packs stay, maintenance merges them
            log.warning("rolling the status writer's packs into one failed (tried again later): %s", exc)
        return sha, landed, len(lines)

    def _migrate(self, repo: GitRepo) -> None:
        """Move tasks and tool calls from the flat layout into the fan-out (DESIGN §9), one commit.

        A tip written before the fan-out holds `status/tasks/<name>.yaml`; readers look for
        `status/tasks/a/b/c/<name>.yaml`. Moving the files as they are (same blobs) keeps every
        status, and history readers follow both paths.
        """
        tree = self._tree
        assert tree is not None
        legacy = tree.legacy()
        if not legacy:
            return
        for kind, name, mode, sha in legacy:
            tree.tree.remove(legacy_status_path(kind, name))
            tree.tree.set(status_path(kind, name), mode, sha)
        now = self.clock()
        with repo.one_pack():
            root = tree.tree.write(repo.write_tree) or EMPTY_TREE
            assert tree.tip is not None
            sha = repo.write_commit(
                tree=root,
                parents=[tree.tip],
                message=f"layout: {len(legacy)} status files fanned out (DESIGN §9)\n\n"
                "status/tasks/<name>.yaml is now status/tasks/a/b/c/<name>.yaml, a, b and c the first\n"
                "three hex digits of sha256(<name>); the same for status/toolcalls/.\n",
                author=self.identity,
                committer=self.identity,
                timestamp=now,
            )
        repo.update_ref(self.branch, sha, tree.tip, message="gitops-acp: status files fanned out")
        tree.tip, tree.tip_time = sha, now
        log.info("moved %d status files of %s into the fan-out (DESIGN §9)", len(legacy), self.branch)


def _resolve(batch: list[_Pending], outcome: _Outcome) -> None:
    for item, landed in zip(batch, outcome.landed, strict=True):
        if not item.future.done():
            item.future.set_result(outcome.sha if landed else None)


def _message(
    lines: Sequence[str],
    spec_commits: Sequence[str],
    resources: Sequence[str],
    *,
    subject: str = "checkpoint",
) -> str:
    """Build a checkpoint commit message (the format is part of the contract: DESIGN §1, §9).

    One checkpoint: its line is the subject. Several: `checkpoint: <n> resources` and a line
    each. Archiving always says `archive: <n> resources`, even for one.
    """
    trailers = [f"Spec-Commit: {sha}" for sha in spec_commits]
    trailers += [f"ACP-Resource: {resource}" for resource in resources]
    if len(lines) == 1 and subject == "checkpoint":
        return f"{lines[0]}\n\n" + "\n".join(trailers) + "\n"
    return f"{subject}: {len(lines)} resources\n\n" + "\n".join(lines) + "\n\n" + "\n".join(trailers) + "\n"
