"""The manager: start-up, the main loop, and shutdown; the controllers get their Context from it.

    start: claim the status branch (reactor/claim: its lock, a killed predecessor's leftovers),
           read every status file at the tip of acp/status (observed), read main (desired),
           enqueue every resource of both ── recovery is just reconciling everything once
    loop:  watcher wakes ──► main moved? ──► read the new commit ──► enqueue the changed keys
           and their dependents
    stop:  SIGINT/SIGTERM: stop the workers; the status writer still commits every checkpoint
           already handed to it, then the process exits 0

With a remote (`options.remote`), `options.repo` is a bare mirror in the cache directory and
reactor/remote.RemoteSync keeps it in step: it fetches before start-up and then on an interval or
a poke, and a checkpoint returns only once a push carried its commit (DESIGN §1).

The manager builds the controllers' `Context` once: the `State` (controllers/state.py) over the
status writer, people through `humans/gateway.Humans` on the git thread, HTTP on one client.
After a checkpoint lands, the resources that depend on the changed one are woken (a finished tool
call wakes its task, a ready LLM its agents, a ready agent its tasks): no polling on the happy
path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx2

from gitops_acp import policy
from gitops_acp.controllers import registry
from gitops_acp.controllers.base import Context, Controller, Key, Settings
from gitops_acp.controllers.cold import COLD_KINDS, Cold
from gitops_acp.controllers.http import Http
from gitops_acp.controllers.state import State
from gitops_acp.errors import StaleError
from gitops_acp.humans.gateway import Humans
from gitops_acp.llm.client import LLMClient
from gitops_acp.mcp import MCPManager
from gitops_acp.reactor import background, claim, coldfacts
from gitops_acp.reactor.awaiting import HumanWaits
from gitops_acp.reactor.dependents import Dependents
from gitops_acp.reactor.events import EventHub
from gitops_acp.reactor.ownership import Ownership
from gitops_acp.reactor.queue import Requeue, WorkQueue
from gitops_acp.reactor.remote import RemoteOptions, RemoteSync
from gitops_acp.reactor.retention import Retention
from gitops_acp.reactor.source import SOURCE_NAME, SourceGate
from gitops_acp.reactor.watcher import RefWatcher
from gitops_acp.resources import lifecycle
from gitops_acp.resources.meta import LABEL_PARENT_TOOLCALL, LABEL_SCHEDULE, LABEL_TASK, Condition, Kind
from gitops_acp.resources.models import (
    AnyResource,
    MCPServer,
    Message,
    Task,
    from_document,
)
from gitops_acp.secrets import SecretResolver
from gitops_acp.store import forks, shards, statustree
from gitops_acp.store.desired import DesiredReader, DesiredState, changed_keys
from gitops_acp.store.git import GitRepo, ReadOnlyRepo
from gitops_acp.store.status import Change, StatusWriter
from gitops_acp.telemetry import tracing
from gitops_acp.waiting import wait_event

__all__ = ["Manager", "ServeOptions"]

log = logging.getLogger("gitops_acp")

#: Kinds in the order start-up enqueues them: dependencies before their dependents.
START_ORDER = (
    Kind.LLM,
    Kind.ContactChannel,
    Kind.MCPServer,
    Kind.Agent,
    Kind.Task,
    Kind.ToolCall,
    Kind.TaskSchedule,
)


@dataclass(frozen=True)
class ServeOptions:
    """What `gitops-acp serve` was asked to do."""

    repo: Path
    branch: str = "main"
    status_branch: str = "acp/status"
    once: bool = False
    poll_interval: float = 2.0
    concurrency: int = 512
    identity: tuple[str, str] = ("gitops-acp", "gitops-acp@localhost")
    maintenance_interval: float = 600.0  # seconds between pack merges + commit-graph runs (at most)
    retain_finished: float | None = 168 * 3600.0  # seconds a finished task stays in the tip (None: never)
    settings: Settings = field(default_factory=Settings)
    remote: RemoteOptions | None = None  # serve a remote through the mirror at `repo`
    # The tasks this process owns; status_branch is then the shard's (store/shards.py).
    shard: shards.Shard = field(default_factory=shards.Shard)


def _ttl(obj: AnyResource | None) -> int | None:
    """A Task's own `ttlSecondsAfterFinished` (None: the retention of `serve`, or not a Task)."""
    return obj.spec.ttl_seconds_after_finished if isinstance(obj, Task) else None


def _signature(obj: AnyResource | None) -> tuple[object, ...]:
    """What dependents care about: readiness, phase, an MCP server's tools (not, e.g., a retry counter)."""
    if obj is None or obj.status is None:
        return ()
    # The model's own field values: `getattr(status, "tools", ())` on a kind without the field
    # goes through pydantic's __getattr__, which builds an AttributeError each time (two per
    # landed checkpoint: 2.6% of the reconciler's CPU on the tool workload, py-spy).
    fields = obj.status.__dict__
    tools = tuple(tool.name for tool in fields.get("tools", ()))
    return (
        fields.get("phase"),
        fields.get("status"),
        fields.get("ready"),
        fields.get("connected"),
        tools,
    )


class Manager:
    """Runs the reconciler over one repository until stopped (or, with --once, until idle)."""

    def __init__(
        self,
        options: ServeOptions,
        *,
        llm: LLMClient,
        secrets: SecretResolver,
        clock: Callable[[], float] = time.time,
        controllers: dict[Kind, Controller] | None = None,
        mcp: MCPManager | None = None,
    ) -> None:
        self.options = options
        self._secrets = secrets
        self._controllers = controllers if controllers is not None else registry()
        self._git = ThreadPoolExecutor(max_workers=1, thread_name_prefix="git-reader")
        # Repacks and commit-graphs take seconds on a big history: never on the reader's thread.
        self._git_maintenance = ThreadPoolExecutor(max_workers=1, thread_name_prefix="git-maintenance")
        self._repo: GitRepo | None = None
        self._reader: DesiredReader | None = None
        self._writer = StatusWriter(
            options.repo, branch=options.status_branch, identity=options.identity, clock=clock
        )
        # Reads a cold finished resource back (controllers/cold.py): its own cat-file, on the loop's
        # thread (the git-reader thread may be busy reading main for hundreds of milliseconds).
        self._blob_reader: ReadOnlyRepo | None = None
        self._state = State(
            self._commit,
            wake=self._queue_add,
            on_landed=self._landed,
            clock=clock,
            read_blob=self._read_status_blob,
            on_archived=self._keep_archived_phases,
        )
        # Every commit of the status branch, as events, to live readers (GET /v1/events).
        self.events = EventHub(options.repo, options.status_branch)
        self._writer.on_commit.append(self.events.committed)
        self._dependents = Dependents(self._dependencies)
        self._reported_errors: set[str] = set()
        self._owned = Ownership(options.shard)  # the Tasks of main this process runs
        self._source = SourceGate(options.settings.policy, options.branch)  # which commit of main runs
        self._queue = WorkQueue(self._reconcile, concurrency=options.concurrency)
        self._watcher: RefWatcher | None = None
        self._stop = asyncio.Event()
        self._poked = asyncio.Event()  # an outside signal (a webhook): look at the refs now
        self._mcp = mcp if mcp is not None else MCPManager(on_change=self._mcp_changed)
        self._secrets_watch: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        # One HTTP client for everything outside: responseUrl deliveries, HumanLayer, forge APIs.
        self._http = httpx2.AsyncClient()
        self._humans = Humans(
            repo=self._opened,
            run=self._on_git_thread,
            main=options.branch,
            identity=options.identity,
            published=self.published,
            unpublish=self._unpublish,
            secrets=secrets,
            http=self._http,
            forge_poll=options.settings.forge_poll_interval,
            applied=lambda: self._state.desired_state.commit,
            signers=self._source.signers,
            sign=self._source.sign,
        )
        settings = options.settings
        if options.once:  # `--once` fires the slots due when it starts, not those that come meanwhile
            settings = replace(settings, fire_until=clock())
        self._ctx = Context(
            state=self._state,
            settings=settings,
            llm=llm,
            mcp=self._mcp,
            secrets=secrets,
            humans=self._humans,
            http=Http(self._http),
            clock=clock,
            fork_window=self._checkpoint_window,
        )
        self._retention = Retention(
            retain=options.retain_finished,
            observed=self._state.observed_entries,
            archive=self._state.archive,
            busy=lambda key: self._queue.busy(key) or self._state.busy(key),
            clock=clock,
            on_archived=self._archived_tasks,
        )
        self._retention_job: asyncio.Task[None] | None = None
        self._cold_facts: Path | None = None  # finished resources' facts, for the next start
        self._cold_facts_job: asyncio.Task[None] | None = None
        self._waits = HumanWaits(self._queue_add, lambda: self._repo, self._git)
        self._remote: RemoteSync | None = None
        self._claim: claim.Claim | None = None  # the status branch's locks, held while serving
        self._ready = False  # start-up recovery done: /readyz may say ready
        self._fatal: str | None = None  # why `--once` gave up (exit 1)
        self._writer.on_failure.append(self._checkpoint_failed)
        if options.remote is not None:
            self._remote = RemoteSync(
                options.remote,
                main=options.branch,
                status_branch=options.status_branch,
                identity=options.identity,
                on_change=self._poked.set,
            )
            self._writer.confirm = self._remote.pushed

    def _opened(self) -> GitRepo:
        """The served repository (opened at start, on the git thread)."""
        assert self._repo is not None, "the repository is opened at start"
        return self._repo

    async def _on_git_thread(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the git thread (GitPython objects belong to one thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._git, fn)

    async def _checkpoint_window(self, task: str, commit: str | None) -> tuple[str, list[Message]]:
        """A task's context window at a checkpoint commit, read on the git thread (a fork's start)."""
        return await self._on_git_thread(lambda: forks.window(self._opened(), task, commit))  # type: ignore[no-any-return]

    def _queue_add(self, key: Key) -> None:
        self._queue.add(key)

    def _commit(self, changes: Sequence[Change], spec_commit: str) -> asyncio.Future[str | None]:
        # The writer's future itself (State shields it): no coroutine, no task per checkpoint.
        return self._writer.submit(changes, spec_commit=spec_commit)

    def _read_status_blob(self, sha: str) -> bytes:
        if self._blob_reader is None:
            self._blob_reader = ReadOnlyRepo.open(self.options.repo)
        return self._blob_reader.read_blob(sha)

    def _mcp_changed(self, name: str) -> None:
        """A session connected, dropped or changed its tools: commit the MCPServer's new state."""
        self._queue.add((Kind.MCPServer, name))

    def _mcp_connecting(self) -> bool:
        """Whether an MCP server is (re)starting in a way `serve --once` should wait for.

        A server still on its first start counts; so does one restarting after a crash while tool
        calls wait for it (for its first few restarts: a server that keeps failing needs a person).
        """
        for kind, name in self._state.desired_state.resources:
            if kind != Kind.MCPServer:
                continue
            state = self._mcp.state(name)
            if state is None and _stopped_in_error(self._state.observed(Kind.MCPServer, name)):
                continue  # its controller refused to start it (a policy, a missing secret): not coming
            if state is None or (not state.connected and state.error is None):
                return True
            if not state.connected and state.restarts < 5 and self._dependents.get((Kind.MCPServer, name)):
                waiting = [k for k in self._dependents.get((Kind.MCPServer, name)) if k[0] == Kind.ToolCall]
                observed = [self._state.observed(*k) for k in waiting]
                if any(lifecycle.unfinished(obj) for obj in observed if obj is not None):
                    return True
        return False

    async def published(self) -> None:
        """Return once every branch the reconciler created so far is on the remote (no remote: at once).

        Call it after creating a branch (`acp/approvals/...`, `acp/questions/...`) and before
        committing the state that names it: people must be able to see what the status points at.
        """
        if self._remote is not None:
            await self._remote.pushed()

    async def _unpublish(self, ref: str) -> bool:
        """Delete a finished call's branch on the remote and in the mirror (False: no remote)."""
        if self._remote is None:
            return False
        await self._remote.delete_branch(ref)
        return True

    def webhook(self, forge: str, branch: str | None) -> None:
        """A verified forge event: look at the refs now, and re-check the tool call waiting on `branch`.

        Polled pull-request states are forgotten, so the next look asks the forge (the event may be
        a pull request closed without merging, which changes no ref here).
        """
        self._humans.invalidate()
        if branch is not None:
            self._waits.wake_branch(branch)
        self.poke()

    def _archived_tasks(self, names: list[str]) -> None:
        """Tasks just archived: those still declared on main leave the desired state for good."""
        declared = [name for name in names if (Kind.Task, name) in self._state.desired_state.resources]
        if declared:
            self._owned.archived.update(declared)
            self._state.desired_state = self._owned.mine(self._state.desired_state)
        for name in names:
            self._dependents.unset((Kind.Task, name))

    def _keep_archived_phases(self, files: list[tuple[str, str]]) -> None:
        """Archived files' (blob, phase), for `get --all --phase` and the API (coldfacts.py): appended
        on the maintenance thread (a few KB an archive commit; a failure is logged there)."""
        if self._cold_facts is not None:  # set once start-up read the tip: archiving comes later
            path = coldfacts.archived_path_for(self._cold_facts.parent, self.options.status_branch)
            with contextlib.suppress(RuntimeError):  # stopped already: those files are read instead
                self._git_maintenance.submit(coldfacts.append_archived, path, files)

    def _landed(self, key: Key, old: AnyResource | None, obj: AnyResource | None) -> None:
        """A checkpoint landed: index what the reconciler created, log the move, wake dependents."""
        if (
            obj is not None
            and key[0] == Kind.Task
            and lifecycle.terminal(obj)
            and (not lifecycle.terminal(old) or _ttl(old) != _ttl(obj))
        ):
            self._retention.finished(obj)
        self._waits.note(key, obj)
        tracing.landed(key[0], old, obj, self._state.observed)
        created = obj is not None and old is None and key[0] in (Kind.ToolCall, Kind.Task)
        if created and obj is not None and key not in self._state.desired_state.resources:
            self._dependents.set(key, obj)  # created by the reconciler: index it now
        elif key[0] == Kind.ToolCall and obj is not None and lifecycle.terminal(obj):
            self._dependents.unset(key)  # a finished call waits for nothing
        elif (
            key[0] == Kind.Task and lifecycle.terminal(obj) and key not in self._state.desired_state.resources
        ):
            # Nor does a finished task the reconciler made (a child, a schedule's): it may leave the
            # tip without retention telling (a TaskSchedule's history limits archive it).
            self._dependents.unset(key)
        if log.isEnabledFor(logging.INFO) and lifecycle.phase_of(old) != lifecycle.phase_of(obj):
            log.info("%s/%s: %s -> %s", key[0], key[1], lifecycle.phase_of(old), lifecycle.phase_of(obj))
        if _signature(old) != _signature(obj):
            ended = obj is None or lifecycle.terminal(obj)
            self._wake_dependents(key, obj if obj is not None else old, ended=ended)

    def _wake_dependents(self, key: Key, obj: AnyResource | None, *, ended: bool) -> None:
        for dependent in self._dependents.get(key):
            self._queue.add(dependent)
        if obj is None:
            return
        labels = obj.metadata.labels
        # A task waits for its tool calls to end (or go): their other moves (created, Running,
        # waiting for a person) change nothing it reads, and woke it for a reconcile that found
        # nothing to do, once or twice a task (its timeout is a timer of its own).
        if key[0] == Kind.ToolCall and LABEL_TASK in labels and ended:
            self._queue.add((Kind.Task, labels[LABEL_TASK]))
        if key[0] == Kind.Task and LABEL_PARENT_TOOLCALL in labels:
            self._queue.add((Kind.ToolCall, labels[LABEL_PARENT_TOOLCALL]))
        if key[0] == Kind.Task and LABEL_SCHEDULE in labels:  # active[], history limits, Forbid
            self._queue.add((Kind.TaskSchedule, labels[LABEL_SCHEDULE]))

    # -- the reactor ---------------------------------------------------------------------------

    async def _reconcile(self, item: Hashable) -> Requeue | None:
        assert isinstance(item, tuple)
        kind, name = item
        if kind == Kind.Source:  # the record of what verifying main decided (reactor/source.py)
            record = self._source.record()
            if record is not None:
                await self._state.checkpoint(record)
            return None
        controller = self._controllers.get(kind)
        if controller is None:
            return None
        try:
            result = await controller.reconcile(name, self._ctx)
        except StaleError as exc:
            log.debug("%s; reconciling %s/%s again", exc, kind, name)
            return Requeue(0.0)
        if result.requeue_after is None:
            return None
        return Requeue(result.requeue_after, progress=result.progress)

    def _reindex(self) -> None:
        """Rebuild dependency → dependents from every declared (and reconciler-created) resource."""
        declared = self._state.desired_state.resources
        objects: list[tuple[Key, AnyResource]] = [(k, loaded.resource) for k, loaded in declared.items()]
        # Unfinished ones only, as `_landed` keeps it (a finished one waits for nothing): the cold
        # ones, finished all, are not read back (100,000 of them would be ~40 s of reading).
        objects += [
            (k, obj)
            for k, obj in self._state.observed_entries()
            if not isinstance(obj, Cold)
            and lifecycle.unfinished(obj)
            and (
                (k[0] == Kind.Task and LABEL_PARENT_TOOLCALL in obj.metadata.labels)
                or (k[0] == Kind.Task and LABEL_SCHEDULE in obj.metadata.labels and k not in declared)
                or k[0] == Kind.ToolCall
            )
        ]
        self._dependents.rebuild(objects)

    def _dependencies(self, key: Key, obj: AnyResource) -> list[Key]:
        """What `obj` depends on, as its controller says."""
        controller = self._controllers.get(key[0])
        return list(controller.dependencies(obj)) if controller is not None else []

    async def _read_main(self) -> bool:
        """Read `main` if it moved; enqueue what changed. Returns whether it moved."""
        loop = asyncio.get_running_loop()
        assert self._repo is not None
        assert self._reader is not None
        repo, reader = self._repo, self._reader
        ref = f"refs/heads/{self.options.branch}"
        tip = await loop.run_in_executor(self._git, repo.resolve, ref)
        if tip is None or tip == self._source.head:
            return False
        gate = self._source
        verdict = await loop.run_in_executor(self._git, lambda: gate.check(repo, tip))
        self._queue.add((Kind.Source, SOURCE_NAME))  # its status is committed like any checkpoint
        commit = verdict.applied
        if commit is None or commit == self._state.desired_state.commit:
            return False
        previous = self._state.desired_state
        state = await loop.run_in_executor(self._git, lambda: reader.read(commit, previous=previous))
        fresh = self._owned.fresh(state, previous, self._state.holds)
        if fresh:
            branch = self.options.status_branch
            found = await loop.run_in_executor(
                self._git, lambda: statustree.archived_names(repo, branch, Kind.Task, fresh)
            )
            self._owned.found_archived(found)
        state = self._owned.mine(state)
        self._state.desired_state = state
        self._report_errors(state)
        changed = changed_keys(previous, state)
        if previous.commit is None:
            self._reindex()
        else:  # only what the commit changed (DESIGN §9: the cost is the change)
            for key in changed:
                loaded = state.resources.get(key)
                if loaded is not None:
                    self._dependents.set(key, loaded.resource)
                else:
                    self._dependents.unset(key)
        for key in changed:
            if key[0] == Kind.Task and key not in state.resources:
                self._queue.interrupt(key)  # don't wait for an LLM answer nobody will read
        for key in _ordered(changed):
            # A finished task whose file just left main (people clean up) has nothing left to do:
            # reconciling it read its file back for nothing, 2,000 a batch in bench_growth.py.
            if key in state.resources or not self._state.settled(key):
                self._queue.add(key)
            for dependent in self._dependents.get(key):
                self._queue.add(dependent)
        if previous.commit is not None:
            self._waits.wake_all()  # a decision or an answer is a file arriving on main
        elif self._ready:  # the first verified commit after a start that had none: resume everything
            for key in self._to_resume(self._state.observed_keys()):
                self._queue.add(key)
        log.debug(
            "main at %s: %d resources, %d changed", (commit or "")[:12], len(state.resources), len(changed)
        )
        return True

    def _report_errors(self, state: DesiredState) -> None:
        if state.load is None:
            return
        current = {str(error) for error in state.load.errors}
        for line in sorted(current - self._reported_errors):
            log.error("%s", line)
        self._reported_errors = current

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        remote = self._remote
        self._claim = await loop.run_in_executor(
            self._git,
            lambda: claim.claim(
                self.options.repo,
                self.options.status_branch,
                mirror=remote.options.mirror if remote is not None else None,
                where=remote.describe() if remote is not None else str(self.options.repo),
            ),
        )
        self._writer.owns_branch = True  # under the ServeLock: a lock that never moves is a kill's
        if self._remote is not None:
            # The mirror exists, is fetched, and has nothing unpushed; a signal meanwhile stops us
            # (start waits as long as the remote is unreachable and the mirror has unpushed commits).
            starting = asyncio.ensure_future(self._remote.start())
            stopping = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return
            starting.result()
        self._repo = await loop.run_in_executor(self._git, GitRepo.open, self.options.repo)
        self._reader = DesiredReader(self._repo)
        repo, shard, branch = self._repo, self.options.shard, self.options.status_branch
        retired = await loop.run_in_executor(self._git, lambda: shards.retired_tasks(repo, shard, branch))
        # Finished tasks an earlier run saved the facts of are not read again (coldfacts.py).
        facts_path = coldfacts.path_for(self._claim.serve.path.parent, branch)
        saved = await loop.run_in_executor(self._git, coldfacts.load, facts_path)

        def known(key: Key, blob: str) -> str | None:
            facts = saved.get(bytes.fromhex(blob)) if key[0] in COLD_KINDS else None
            return None if facts is None else facts.phase

        documents = await self._writer.start(known=known if saved else None)
        blobs = self._writer.loaded_blobs()
        unread = 0
        for (kind_text, name), blob in blobs.items():
            if (kind_text, name) not in documents:
                self._state.load_cold((Kind(kind_text), name), blob, saved[bytes.fromhex(blob)])
                unread += 1
        saved.clear()  # held by the Cold ones now
        await self.events.start()
        read_finished = 0  # finished ones read: their facts are worth saving soon (a kill may come)
        for (kind_text, name), document in documents.items():
            try:
                obj = from_document(document)
            except Exception as exc:  # one unreadable status file must not stop the others
                log.error("status of %s/%s: unreadable status file, ignored: %s", kind_text, name, exc)
                continue
            self._state.load(obj, document, blob=blobs.get((kind_text, name)))
            self._waits.note((Kind(kind_text), name), obj)
            read_finished += Kind(kind_text) in COLD_KINDS and lifecycle.terminal(obj)
        self._cold_facts = facts_path  # saved from now on (not by a start that failed before this)
        # A task with status here too is ours to continue (it came back to this layout).
        observed = set(self._state.observed_keys())
        self._owned.retired = frozenset(retired - {name for kind, name in observed if kind == Kind.Task})
        self._source.resume(self._state.observed(Kind.Source, SOURCE_NAME))
        await self._read_main()
        background.tune_gc()
        if self._state.desired_state.commit is not None:
            for key in _ordered(set(self._state.desired_state.resources) | set(self._to_resume(observed))):
                self._queue.add(key)
        else:  # nothing of main verified yet: nothing runs, nothing is cancelled (get source says why)
            log.error("%s: no commit can be applied yet; waiting for a verified one", self.options.branch)
        self._watcher = RefWatcher(
            self._repo.git_dir if self._repo.common_dir is None else self._repo.common_dir,
            poll_interval=self.options.poll_interval,
            # Remote-tracking refs move on every fetch and push; RemoteSync says when it matters.
            # Status branches are reconcilers' writes: ours, and other shards' (`acp/status*`).
            ignore_prefixes=("heads/" + self.options.status_branch, "heads/" + shards.UNSHARDED, "remotes/"),
        )
        self._watcher.start()
        if self._secrets.secrets_dir is not None:
            self._secrets_watch = asyncio.create_task(
                background.watch_secrets(
                    self._secrets.secrets_dir,
                    self._stop,
                    lambda: self._state.desired_state.resources,
                    self._queue.add,
                )
            )
        self._maintenance = asyncio.create_task(
            background.maintain(
                lambda: self._repo,
                self._writer,
                self._git_maintenance,
                interval=self.options.maintenance_interval,
                shared=self._remote is None,
            )
        )
        self._queue.start()
        if not self.options.once:
            self._retention_job = asyncio.create_task(self._retention.run(self._stop))
            self._cold_facts_job = asyncio.create_task(
                self._keep_cold_facts(now=read_finished >= coldfacts.READ_BEFORE_SAVING)
            )
        log.info(
            "serving %s: %d resources on %s, %d status files on %s%s%s",
            self._remote.describe() if self._remote is not None else self.options.repo,
            len(self._state.desired_state.resources),
            self.options.branch,
            len(self._state.observed_keys()),
            self.options.status_branch,
            f" ({unread} finished ones known from the last run, not read)" if unread else "",
            f" (shard {self.options.shard})" if self.options.shard.sharded else "",
        )
        log.info("%s", policy.describe(self.options.settings.policy))
        if self._source.required and self._source.sign is None:
            log.warning(
                "signers.requireSignedMain without signers.signingKey: approval and question branches "
                "are unsigned, and merging one stops applying main (docs/signing.md)"
            )
        self._ready = True

    def _to_resume(self, keys: Iterable[Key]) -> list[Key]:
        """The resources of the status branch a start reconciles: all but the finished tasks and
        tool calls that have nothing left to do (`Facts.settled`: a task answered, the answer
        delivered, not declared on main; a tool call with no branch to tidy nor MCP task to cancel).

        A reconcile of one of those reads its file back only to find it done: at 100,000 finished
        tasks in the tip, ~35 s of the loop's time after each start (during which new tasks waited
        behind them). What wakes one later (a child's parent, a schedule) reads it then.
        """
        declared = self._state.desired_state.resources
        return [key for key in keys if key in declared or not self._state.settled(key)]

    def readiness(self) -> str | None:
        """Why this reconciler is not ready (`GET /readyz`), or None when it is.

        Not ready while starting (recovery), after stopping, while the status branch cannot be
        written (the last group commit failed for good: a lock held by someone else, a full disk),
        and, with a remote, while it cannot be reached (checkpoints wait for their push then).
        """
        if not self._ready:
            return "starting: recovering the state of the last run"
        if self._stop.is_set():
            return "stopping"
        if self._writer.failure is not None:
            return f"the status branch cannot be written: {self._writer.failure}"
        if self._remote is not None:
            return self._remote.unreachable()
        return None

    def _checkpoint_failed(self, reason: str) -> None:
        """A group commit failed after its bounded retries: with `--once`, stop and exit 1 (never stall)."""
        if self.options.once and self._fatal is None:
            self._fatal = reason
            log.error("stopping: a checkpoint could not be committed: %s", reason)
            self._stop.set()

    async def run(self) -> int:
        """Reconcile until stopped by a signal (or, with `once`, until nothing can progress)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        try:
            tracing.configure()
            await self._start()
            while not self._stop.is_set():
                assert self._watcher is not None
                await self._read_main()
                if self.options.once and self._queue.is_idle():
                    if not self._mcp_connecting():
                        await self._retention.pass_once()  # what is due now is archived before exit
                        break
                    await asyncio.sleep(0.05)  # a session is starting: its state change wakes the queue
                    continue
                waiters = [
                    asyncio.ensure_future(self._watcher.wait()),
                    asyncio.ensure_future(self._stop.wait()),
                    asyncio.ensure_future(self._poked.wait()),
                ]
                if self.options.once:
                    waiters.append(asyncio.ensure_future(self._queue.wait_idle()))
                _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for waiter in pending:
                    waiter.cancel()
                self._poked.clear()
                await self._waits.check_branches()
        finally:
            await self._shutdown()
        return 1 if self._fatal is not None else 0

    async def _keep_cold_facts(self, *, now: bool) -> None:
        """Save the finished resources' facts every SAVE_EVERY seconds when checkpoints landed since
        (and at once if `now`: this start read many finished files): a kill loses only what
        finished after the last save (read again at the next start)."""
        if now:
            await self._save_cold_facts()
        saved_at = self._writer.stats.commits
        while not self._stop.is_set():
            await wait_event(self._stop, coldfacts.SAVE_EVERY)
            if not self._stop.is_set() and self._writer.stats.commits != saved_at:
                saved_at = self._writer.stats.commits
                await self._save_cold_facts()

    async def _save_cold_facts(self) -> None:
        """Write the finished resources' facts for the next start (never fails serve: logged)."""
        if self._cold_facts is None or self._claim is None:
            return
        entries = self._state.cold_facts()  # on the loop's thread: the State is its own
        path = self._cold_facts
        try:
            count = await asyncio.get_running_loop().run_in_executor(
                self._git_maintenance, coldfacts.save, path, entries
            )
        except OSError as exc:
            log.warning("%s: not written (%s): the next start reads finished tasks' files", path, exc)
        else:
            log.debug("%s: facts of %d finished resources", path, count)

    def poke(self) -> None:
        """The refs may have changed (a forge webhook said so): look now, not at the next poll.

        With a remote this fetches first; the fetch wakes the main loop if main moved.
        """
        self._poked.set()
        if self._remote is not None:
            self._remote.poke()

    def stop(self) -> None:
        """Ask `run` to return (as SIGTERM does)."""
        self._stop.set()

    async def _shutdown(self) -> None:
        await self._queue.stop()
        await self._mcp.aclose()  # no MCP server process outlives serve
        await self._http.aclose()
        for job in (self._secrets_watch, self._maintenance, self._retention_job, self._cold_facts_job):
            if job is not None:
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
        if self._watcher is not None:
            await self._watcher.stop()
        await self._writer.close()  # commits every checkpoint already handed to it
        await self._save_cold_facts()  # all landed: the next start reads no finished task again
        await self.events.close()  # publishes them, then ends every live reader's stream
        if self._remote is not None:
            await self._remote.close()  # and pushes them, if the remote answers
        await self._ctx.llm.aclose()
        tracing.shutdown()  # spans not exported yet go now (a SIGKILL loses them)
        if self._repo is not None:
            repo = self._repo
            await asyncio.get_running_loop().run_in_executor(self._git, repo.close)
        if self._blob_reader is not None:
            self._blob_reader.close()
        self._git.shutdown(wait=True)
        self._git_maintenance.shutdown(wait=True)  # a repack under way finishes (it is safe to kill)
        # Last: a clean stop is recorded, so the next start knows nothing was killed.
        if self._claim is not None:
            self._claim.release()
        if self._watcher is not None:  # it served (a refused start ends on its one error line)
            log.info("stopped")

    @property
    def spec_commit(self) -> str:
        """The commit of `main` being reconciled ("" before the first read)."""
        return self._state.spec_commit

    @property
    def state(self) -> State:
        """Desired and observed state, as the controllers see it (the benchmarks read it)."""
        return self._state

    @property
    def mcp(self) -> MCPManager:
        """The MCP sessions of this process."""
        return self._mcp

    @property
    def writer(self) -> StatusWriter:
        """The status writer (its stats feed the benchmarks)."""
        return self._writer

    @property
    def remote(self) -> RemoteSync | None:
        """The remote's fetcher and pusher, when serving a remote (its stats feed the benchmarks)."""
        return self._remote


def _stopped_in_error(observed: AnyResource | None) -> bool:
    status = observed.status if isinstance(observed, MCPServer) else None
    return status is not None and status.status == Condition.Error and not status.connected


def _ordered(keys: Iterable[Key]) -> list[Key]:
    rank = {kind: i for i, kind in enumerate(START_ORDER)}
    return sorted(keys, key=lambda key: (rank.get(key[0], len(rank)), key[1]))
