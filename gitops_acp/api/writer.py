"""Commits to `main` for the API's callers: group commit, compare-and-swap, push (DESIGN §11).

    POST/DELETE ──► Edit(caller, prepare) ──► queue ──► one batch per BATCH_WINDOW (or MAX_BATCH edits)
    batch, on the writer thread:
        base = tip of main ── each edit's prepare(base) ──► its files, or its own 4xx (409: exists)
        one commit per caller (author: the caller; committer: serve's --identity), chained
        ── local, main not checked out: objects, then `update-ref main <new> <base>` (CAS)
        ── a remote (--repo URL / --remote): objects in the mirror, push main with a lease on base
        ── local, main checked out in a work tree: through it, as `gitops-acp task create` does
        another writer moved main (CAS lost, push rejected as stale) ──► rebuild on the new tip, retry
        ──► every edit's answer; the manager is poked to read main (and fetch) at once

Why through a work tree where `main` is checked out: moving the ref behind a person's back would
leave their index showing the commit undone, the reason git refuses a push to a checked-out
branch. The API acts for a person, so it does what that person's `gitops-acp task create` does
there (store/usercommits.py): refuses, naming the paths, when uncommitted changes would be mixed
in. A bare repository or a mirror (the deployed case) is written with objects and refs only.

With a remote, the mirror's `main` is never moved here: it follows the remote's (store/mirror.py),
fetched at once after the push (the manager is poked), and the answers wait for that fetch, so
a caller reads its own write and the mirror is never ahead of the remote. A push the
remote refuses (a protected branch, a hook) is a 409 naming the remote's reason: nothing was
created, the mirror is as before, and the objects written for it are left for `git gc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from gitops_acp.api.errors import ApiError, from_program_error
from gitops_acp.api.tokens import Caller
from gitops_acp.errors import ConflictError, LockedError, RemoteError, StoreError
from gitops_acp.store import usercommits
from gitops_acp.store.desired import DesiredReader, DesiredState
from gitops_acp.store.git import GitRepo, PushUpdate, RefConflictError, TreeEditor, redact_url

__all__ = ["BATCH_WINDOW", "MAX_BATCH", "Base", "Edit", "MainWriter"]

log = logging.getLogger("gitops_acp")

#: How long the first edit of a batch waits for others (group commit).
BATCH_WINDOW = 0.02
#: Edits in one batch at most.
MAX_BATCH = 256
#: Attempts of one batch when another writer keeps moving main.
ATTEMPTS = 8
#: With a remote: how long an answer waits for the mirror's main to fetch what was pushed.
FETCH_WAIT = 5.0
#: Where the last commit pushed to the remote is remembered in the mirror (never pushed itself).
PUSHED_REF = "refs/gitops-acp/api/main"
FILE_MODE = "100644"


@dataclass
class Base:
    """The tip of `main` a batch is built on, as the edits' `prepare` sees it."""

    repo: GitRepo
    commit: str | None
    desired: DesiredState
    taken: set[str] = field(default_factory=set)  # paths an earlier edit of this batch writes


Prepare = Callable[[Base], Mapping[str, bytes | None]]


@dataclass
class Edit:
    """One caller's change to `main`: `prepare` returns its files (path -> content, None deletes)
    against a base, or raises ApiError for this request alone."""

    caller: Caller
    subject: str  # the commit's subject when the edit is alone, e.g. "Add task t1"
    prepare: Prepare
    body: str = ""


@dataclass
class _Outcome:
    sha: str | None = None
    error: ApiError | None = None


class MainWriter:
    """The API's single writer of `main` (one thread; batches one at a time)."""

    def __init__(
        self,
        repo: Path,
        *,
        branch: str,
        committer: tuple[str, str],
        remote: str | None = None,
        on_commit: Callable[[], None] = lambda: None,
        refused: str | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """`repo`: the served repository (the mirror with a remote); `remote`: its URL, if any;
        `refused`: why main may not be written by the API at all (every edit is a 409 saying so);
        `sign`: signs every commit (signed main: the policy's signingKey), which then are never
        made through a work tree."""
        self._refused = refused
        self._sign = sign
        self._path = repo
        self._branch = branch
        self._ref = f"refs/heads/{branch}"
        self._committer = committer
        self._remote = remote
        self._on_commit = on_commit
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-writer")
        self._repo: GitRepo | None = None
        self._reader: DesiredReader | None = None
        self._desired: DesiredState | None = None
        self._queue: list[tuple[Edit, asyncio.Future[str]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # commits made (for tests and logs)

    async def submit(self, edit: Edit) -> str:
        """Queue `edit` for the next batch; return the sha of the commit that carries it."""
        if self._refused is not None:
            raise ApiError(409, self._refused)
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop(), name="api-writer")
        future: asyncio.Future[str] = loop.create_future()
        self._queue.append((edit, future))
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            await asyncio.sleep(BATCH_WINDOW)  # let concurrent requests join this commit
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if self._queue:
                self._wake.set()
            edits = [edit for edit, _ in batch]
            try:
                outcomes = await loop.run_in_executor(self._thread, self._commit_batch, edits)
            except Exception as exc:  # a bug: every request of the batch learns it, the loop goes on
                log.error("API: committing to %s failed: %s", self._branch, exc)
                outcomes = [
                    _Outcome(error=ApiError(500, f"committing to {self._branch} failed: {exc}"))
                ] * len(edits)
            if any(o.sha for o in outcomes):
                self._on_commit()  # the manager reads main (with a remote: fetches at once)
                if self._remote is not None:
                    await self._fetched(next(o.sha for o in outcomes if o.sha))
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if outcome.error is not None:
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome.sha or "")

    async def _fetched(self, sha: str) -> None:
        """Wait (at most FETCH_WAIT) until the mirror's main, which only a fetch moves, holds `sha`.

        Moving the mirror's main here instead would race the remote sync's fetch, which sets it
        to what it saw on the remote: a fetch that saw the remote just before the push would move
        it back, and the reconciler would cancel the task it no longer sees. Waiting gives the
        caller its own write to read; a slow fetch only delays the answer (the commit is on the
        remote already)."""
        loop = asyncio.get_running_loop()

        def arrived() -> bool:
            repo = self._opened()
            main = repo.resolve(self._ref)
            return main is not None and repo.is_ancestor(sha, main)

        deadline = loop.time() + FETCH_WAIT
        while loop.time() < deadline:
            if await loop.run_in_executor(self._thread, arrived):
                return
            await asyncio.sleep(0.01)
        log.info("API: the mirror's %s has not fetched %s yet; answering anyway", self._branch, sha[:12])

    async def aclose(self) -> None:
        """Stop the batch loop and close the repository."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._repo is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._repo.close)
        self._thread.shutdown(wait=False)

    # -- on the writer thread -------------------------------------------------------------------

    def _opened(self) -> GitRepo:
        if self._repo is None:
            self._repo = GitRepo.open(self._path)
            self._reader = DesiredReader(self._repo)
        return self._repo

    def _base(self) -> str | None:
        """The commit to build on: main, or (with a remote) our last push if main has not caught up."""
        repo = self._opened()
        main = repo.resolve(self._ref)
        if self._remote is None:
            return main
        pushed = repo.resolve(PUSHED_REF)
        if pushed is not None and (main is None or repo.is_ancestor(main, pushed)):
            return pushed
        return main

    def _commit_batch(self, edits: Sequence[Edit]) -> list[_Outcome]:
        outcomes = [_Outcome() for _ in edits]
        for _attempt in range(ATTEMPTS):
            repo = self._opened()
            tip = self._base()
            assert self._reader is not None
            self._desired = self._reader.read(tip, previous=self._desired)
            base = Base(repo, tip, self._desired)
            files: dict[int, Mapping[str, bytes | None]] = {}
            for index, edit in enumerate(edits):
                outcomes[index] = _Outcome()
                try:
                    changed = edit.prepare(base)
                except ApiError as exc:
                    outcomes[index] = _Outcome(error=exc)
                    continue
                base.taken.update(changed)
                files[index] = changed
            if not files:
                return outcomes
            try:
                shas = self._write(tip, [(edits[i], files[i]) for i in sorted(files)])
            except _Retry:
                continue
            except (ApiError, StoreError) as exc:
                error = exc if isinstance(exc, ApiError) else from_program_error(exc, code=503)
                for index in files:
                    outcomes[index] = _Outcome(error=error)
                return outcomes
            for index in files:
                result = shas[edits[index].caller]
                outcomes[index] = (
                    _Outcome(error=result) if isinstance(result, ApiError) else _Outcome(sha=result)
                )
            self.commits += sum(1 for result in shas.values() if not isinstance(result, ApiError))
            return outcomes
        error = ApiError(503, f"{self._branch} kept moving while committing ({ATTEMPTS} attempts): try again")
        return [_Outcome(error=o.error or error) for o in outcomes]

    def _write(
        self, tip: str | None, changes: list[tuple[Edit, Mapping[str, bytes | None]]]
    ) -> dict[Caller, str | ApiError]:
        """Commit `changes` on `tip`, one commit per caller, and move main (or push it): each caller's
        sha (or, through a work tree, where a later caller's commit was refused, its error)."""
        groups: dict[Caller, list[tuple[Edit, Mapping[str, bytes | None]]]] = {}
        for edit, files in changes:
            groups.setdefault(edit.caller, []).append((edit, files))
        if self._remote is None:
            work = usercommits.checked_out_at(self._path, self._branch)
            if work is not None and self._sign is not None:
                raise ApiError(
                    409,
                    f"{self._branch} must be signed and is checked out in {work}: the API signs only "
                    "when it writes objects (serve a bare repository or a remote)",
                )
            if work is not None:
                if self._opened().resolve(self._ref) != tip:
                    raise _Retry  # someone committed meanwhile: check the edits against theirs
                return self._through_work_tree(work, groups)
        repo = self._opened()
        parent = tip
        shas: dict[Caller, str | ApiError] = {}
        for caller, items in groups.items():
            parent = shas[caller] = self._commit_objects(repo, parent, caller, items)
        assert parent is not None
        if self._remote is not None:
            self._push(repo, parent, tip)
        else:
            try:
                repo.update_ref(self._ref, parent, tip, message="gitops-acp API")
            except (RefConflictError, ConflictError):
                raise _Retry from None
            except LockedError as exc:
                raise ApiError(503, f"{self._branch} is locked by another writer ({exc}): try again") from exc
        return shas

    def _commit_objects(
        self,
        repo: GitRepo,
        parent: str | None,
        caller: Caller,
        items: list[tuple[Edit, Mapping[str, bytes | None]]],
    ) -> str:
        tree = TreeEditor(repo.read_tree, repo.tree_of(parent) if parent is not None else None)
        for _edit, files in items:
            for path, data in files.items():
                if data is None:
                    tree.remove(path)
                else:
                    tree.set(path, FILE_MODE, repo.write_blob(data))
        written = tree.write(repo.write_tree)
        from gitops_acp.store.git import EMPTY_TREE

        return repo.write_commit(
            tree=written or EMPTY_TREE,
            parents=[parent] if parent is not None else [],
            message=_message([edit for edit, _ in items]),
            author=caller.identity,
            committer=self._committer,
            sign=self._sign,
        )

    def _push(self, repo: GitRepo, new: str, base: str | None) -> None:
        from gitops_acp.store.mirror import ORIGIN

        url = redact_url(self._remote or "")
        try:
            refused = repo.push(ORIGIN, [PushUpdate(self._ref, new, base)]).get(self._ref)
        except RemoteError as exc:
            raise ApiError(
                503, f"the remote {url} cannot be reached ({exc}): nothing was created; try again"
            ) from exc
        if refused is None:
            with contextlib.suppress(StoreError):  # only a hint for the next base
                repo.update_ref(PUSHED_REF, new, repo.resolve(PUSHED_REF), message="gitops-acp API: pushed")
            return
        if refused.startswith("[rejected]") or "stale info" in refused or "fetch first" in refused:
            # Someone pushed first: learn their main, rebuild on it.
            try:
                repo.fetch(ORIGIN, [f"+{self._ref}:{PUSHED_REF}"], prune=False)
            except RemoteError as exc:
                raise ApiError(
                    503, f"the remote {url} cannot be reached ({exc}): nothing was created"
                ) from exc
            raise _Retry
        raise ApiError(
            409,
            f"the remote {url} refused the push of {self._branch} ({refused}): nothing was created "
            f"(is {self._branch} protected? the API pushes as serve's credentials)",
        )

    def _through_work_tree(
        self, work: Path, groups: Mapping[Caller, list[tuple[Edit, Mapping[str, bytes | None]]]]
    ) -> dict[Caller, str | ApiError]:
        shas: dict[Caller, str | ApiError] = {}
        for caller, items in groups.items():
            files: dict[str, bytes | None] = {}
            for _edit, changed in items:
                files.update(changed)
            try:
                shas[caller] = usercommits.commit_in_work_tree(
                    work,
                    files,
                    _message([edit for edit, _ in items]),
                    author=caller.identity,
                    committer=self._committer,
                )
            except StoreError as exc:
                shas[caller] = from_program_error(exc, code=409)
        return shas


class _Retry(Exception):
    """Another writer moved main: rebuild the batch on its new tip."""


def _message(edits: Sequence[Edit]) -> str:
    """One edit: its own subject and body; several: how many, one line each."""
    if len(edits) == 1:
        edit = edits[0]
        return edit.subject + (f"\n\n{edit.body}" if edit.body else "")
    subjects = [edit.subject for edit in edits]
    if all(s.startswith("Add task ") for s in subjects):
        head = f"Add {len(edits)} tasks"
    elif all(s.startswith("Cancel task ") for s in subjects):
        head = f"Cancel {len(edits)} tasks"
    else:
        head = f"{len(edits)} changes"
    return head + "\n\n" + "\n".join(subjects)
