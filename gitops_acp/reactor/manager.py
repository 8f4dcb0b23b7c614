"""The manager: start-up recovery, the main loop, and the controllers' view of the world.

    start: read every status file at the tip of acp/status (observed), read main (desired),
           enqueue every resource of both ── recovery is just reconciling everything once
    loop:  watcher wakes ──► main moved? ──► read the new commit ──► enqueue the changed keys
           and their dependents
    stop:  SIGINT/SIGTERM: stop the workers; the status writer still commits every checkpoint
           already handed to it, then the process exits 0

With a remote (`options.remote`), `options.repo` is a bare mirror in the cache directory and
reactor/remote.RemoteSync keeps it in step: it fetches before start-up and then on an interval or
a poke, and a checkpoint returns only once a push carried its commit (DESIGN §1).

The manager is also the `Context` the controllers see: desired state from `main`, observed state
from the status branch (kept in memory, updated on every committed checkpoint), and
``checkpoint()``, which returns only once the checkpoint's commit is on the status branch. After a
checkpoint, the resources that depend on the changed one are woken (a finished tool call wakes its
task, a ready LLM its agents, a ready agent its tasks): no polling on the happy path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import watchfiles

from gitops_acp import retry
from gitops_acp.controllers import registry
from gitops_acp.controllers.base import Controller, HttpReply, Key, Settings
from gitops_acp.errors import PermanentForgeError, SecretError, StaleError, UserError
from gitops_acp.humans import approvals, forges, questions
from gitops_acp.llm.client import LLMClient
from gitops_acp.mcp import MCPManager
from gitops_acp.reactor.queue import Requeue, WorkQueue
from gitops_acp.reactor.remote import RemoteOptions, RemoteSync
from gitops_acp.reactor.watcher import RefWatcher
from gitops_acp.resources import lifecycle
from gitops_acp.resources.loader import Loaded
from gitops_acp.resources.meta import (
    ANNOTATION_SOURCE,
    ANNOTATION_SPEC_COMMIT,
    API_VERSION,
    LABEL_PARENT_TOOLCALL,
    LABEL_TASK,
    Kind,
    ToolCallPhase,
)
from gitops_acp.resources.models import (
    AnyResource,
    ContactChannel,
    ToolCall,
    from_document,
    to_document,
)
from gitops_acp.secrets import SecretResolver
from gitops_acp.store import recovery, shards
from gitops_acp.store.desired import DesiredReader, DesiredState, changed_keys
from gitops_acp.store.gitrepo import GitRepo
from gitops_acp.store.status import Change, StatusWriter

__all__ = ["Manager", "ServeOptions"]

log = logging.getLogger("gitops_acp")
_PACKS_BEFORE_MAINTENANCE = 50  # group commits (one pack each) before maintenance is due anyway

#: Where reconcilers create branches for people: a lock left there by a kill is ours to clear.
RECONCILER_NAMESPACES = ("refs/heads/acp/approvals/", "refs/heads/acp/questions/")

#: Kinds whose controllers resolve secrets: a change under --secrets-dir wakes them.
SECRET_USERS = (Kind.LLM, Kind.MCPServer, Kind.ContactChannel)

#: Kinds in the order start-up enqueues them: dependencies before their dependents.
START_ORDER = (Kind.LLM, Kind.ContactChannel, Kind.MCPServer, Kind.Agent, Kind.Task, Kind.ToolCall)


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
    maintenance_interval: float = 600.0  # seconds between `git gc --auto` + commit-graph runs
    settings: Settings = field(default_factory=Settings)
    remote: RemoteOptions | None = None  # serve a remote through the mirror at `repo`
    # The tasks this process owns; status_branch is then the shard's (store/shards.py).
    shard: shards.Shard = field(default_factory=shards.Shard)


def _signature(obj: AnyResource | None) -> tuple[object, ...]:
    """What dependents care about: readiness, phase, an MCP server's tools (not, e.g., a retry counter)."""
    if obj is None or obj.status is None:
        return ()
    status = obj.status
    tools = tuple(tool.name for tool in getattr(status, "tools", ()))
    return (
        getattr(status, "phase", None),
        getattr(status, "status", None),
        getattr(status, "ready", None),
        getattr(status, "connected", None),
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
        self._llm = llm
        self._secrets = secrets
        self._clock = clock
        self._controllers = controllers if controllers is not None else registry()
        self._git = ThreadPoolExecutor(max_workers=1, thread_name_prefix="git-reader")
        self._repo: GitRepo | None = None
        self._reader: DesiredReader | None = None
        self._writer = StatusWriter(options.repo, branch=options.status_branch, identity=options.identity)
        self._desired = DesiredState(commit=None)
        self._observed: dict[Key, AnyResource] = {}
        self._submitted: dict[Key, AnyResource | None] = {}  # handed to the writer, not landed yet
        self._dependents: dict[Key, set[Key]] = defaultdict(set)
        self._reported_errors: set[str] = set()
        self._retired: frozenset[str] = frozenset()  # tasks finished under another layout: not re-run
        self._queue = WorkQueue(self._reconcile, concurrency=options.concurrency)
        self._watcher: RefWatcher | None = None
        self._stop = asyncio.Event()
        self._poked = asyncio.Event()  # an outside signal (a webhook): look at the refs now
        self._mcp = mcp if mcp is not None else MCPManager(on_change=self._mcp_changed)
        self._secrets_watch: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._http: httpx2.AsyncClient | None = None  # responseUrl deliveries, HumanLayer, forge APIs
        self._forges: dict[str, tuple[tuple[str | None, ...], forges.ForgeClient]] = {}  # by channel
        self._budgets: dict[tuple[str, str], forges.RateBudget] = {}  # by (forge, API root)
        self._remote: RemoteSync | None = None
        self._serve_lock: recovery.ServeLock | None = None
        self._mirror_lock: recovery.MirrorLock | None = None
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

    # -- Context (what controllers see) --------------------------------------------------------

    @property
    def spec_commit(self) -> str:
        return self._desired.commit or ""

    @property
    def settings(self) -> Settings:
        return self.options.settings

    @property
    def llm(self) -> LLMClient:
        return self._llm

    @property
    def secrets(self) -> SecretResolver:
        return self._secrets

    @property
    def mcp(self) -> MCPManager:
        return self._mcp

    def _mcp_changed(self, name: str) -> None:
        """A session connected, dropped or changed its tools: commit the MCPServer's new state."""
        self._queue.add((Kind.MCPServer, name))

    def _mcp_connecting(self) -> bool:
        """Whether an MCP server is (re)starting in a way `serve --once` should wait for.

        A server still on its first start counts; so does one restarting after a crash while tool
        calls wait for it (for its first few restarts: a server that keeps failing needs a person).
        """
        for kind, name in self._desired.resources:
            if kind != Kind.MCPServer:
                continue
            state = self._mcp.state(name)
            if state is None or (not state.connected and state.error is None):
                return True
            if not state.connected and state.restarts < 5 and self._dependents.get((Kind.MCPServer, name)):
                waiting = [k for k in self._dependents[(Kind.MCPServer, name)] if k[0] == Kind.ToolCall]
                if any(
                    lifecycle.unfinished(obj) for k in waiting if (obj := self._observed.get(k)) is not None
                ):
                    return True
        return False

    def now(self) -> float:
        return self._clock()

    def desired(self, kind: Kind, name: str) -> Loaded | None:
        return self._desired.get(kind, name)

    def observed(self, kind: Kind, name: str) -> AnyResource | None:
        return self._observed.get((kind, name))

    def observed_all(self, kind: Kind) -> Iterable[AnyResource]:
        return [obj for (k, _), obj in list(self._observed.items()) if k == kind]

    def wake(self, kind: Kind, name: str) -> None:
        self._queue.add((kind, name))

    async def propose_approval(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        return await self._propose(approvals.propose, toolcall, document, message)

    async def propose_question(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        return await self._propose(questions.propose, toolcall, document, message)

    async def _propose(
        self, propose: Callable[..., str], toolcall: str, document: dict[str, Any], message: str
    ) -> str:
        """Create a reconciler branch for a person (on the git thread), and publish it before returning."""
        assert self._repo is not None
        repo = self._repo
        branch = await asyncio.get_running_loop().run_in_executor(
            self._git,
            lambda: propose(
                repo,
                main=self.options.branch,
                toolcall=toolcall,
                document=document,
                message=message,
                identity=self.options.identity,
            ),
        )
        await self.published()
        return branch

    async def published(self) -> None:
        """Return once every branch the reconciler created so far is on the remote (no remote: at once).

        Call it after creating a branch (`acp/approvals/...`, `acp/questions/...`) and before
        committing the state that names it: people must be able to see what the status points at.
        """
        if self._remote is not None:
            await self._remote.pushed()

    async def approval_decision(self, toolcall: str) -> approvals.Decision | None:
        assert self._repo is not None
        repo = self._repo
        return await asyncio.get_running_loop().run_in_executor(
            self._git,
            lambda: approvals.read_decision(
                repo, main=self.options.branch, toolcall=toolcall, reconciler=self.options.identity
            ),
        )

    async def branch_exists(self, branch: str) -> bool:
        assert self._repo is not None
        repo = self._repo
        sha = await asyncio.get_running_loop().run_in_executor(
            self._git, repo.resolve, f"refs/heads/{branch}"
        )
        return sha is not None

    async def question_response(self, toolcall: str) -> approvals.Decision | None:
        assert self._repo is not None
        repo = self._repo
        return await asyncio.get_running_loop().run_in_executor(
            self._git,
            lambda: questions.read_response(
                repo, main=self.options.branch, toolcall=toolcall, reconciler=self.options.identity
            ),
        )

    def _awaiting_humans(self) -> dict[str, str]:
        """Tool calls waiting for a person through a branch (an approval, a question): name → branch."""
        waiting: dict[str, str] = {}
        for (kind, name), obj in list(self._observed.items()):
            if kind != Kind.ToolCall or not isinstance(obj, ToolCall) or obj.status is None:
                continue
            status = obj.status
            if status.phase == ToolCallPhase.AwaitingHumanApproval:
                branch = status.approval.branch if status.approval else None
            elif status.phase == ToolCallPhase.AwaitingHumanInput:
                branch = status.human_contact.branch if status.human_contact else None
            else:
                continue
            if branch:  # slack and email channels have none: they poll HumanLayer on a timer
                waiting[name] = branch
        return waiting

    def _wake_awaiting_humans(self) -> None:
        """Main moved: a decision or an answer may have arrived for any pending branch."""
        for name in self._awaiting_humans():
            self._queue.add((Kind.ToolCall, name))

    async def _check_human_branches(self) -> None:
        """Wake pending approvals and questions whose branch was deleted since the last look.

        Reads only ref files (no git process), and wakes nothing when nothing changed, so an idle
        reconciler with people's decisions pending stays idle (and `serve --once` can exit).
        """
        waiting = self._awaiting_humans()
        if not waiting or self._repo is None:
            return
        repo = self._repo

        def gone() -> list[str]:
            return [name for name, branch in waiting.items() if repo.resolve(f"refs/heads/{branch}") is None]

        for name in await asyncio.get_running_loop().run_in_executor(self._git, gone):
            self._queue.add((Kind.ToolCall, name))

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str],
        timeout: float,
    ) -> HttpReply:
        if self._http is None:
            self._http = httpx2.AsyncClient()
        try:
            response = await self._http.request(method, url, json=body, headers=headers, timeout=timeout)
        except httpx2.HTTPError as exc:
            # The exception's text may carry the URL, never the headers: no credential leaks here.
            raise OSError(str(exc) or type(exc).__name__) from exc
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = None
        return HttpReply(response.status_code, parsed, retry.retry_after(response.headers))

    async def post_json(
        self, url: str, body: dict[str, Any], *, headers: dict[str, str], timeout: float
    ) -> int:
        if self._http is None:
            self._http = httpx2.AsyncClient()
        try:
            response = await self._http.post(url, json=body, headers=headers, timeout=timeout)
        except httpx2.HTTPError as exc:
            raise OSError(str(exc) or type(exc).__name__) from exc
        return response.status_code

    async def forge(self, channel: ContactChannel) -> forges.ForgeClient:
        name = channel.metadata.name
        owner = f'ContactChannel "{name}"'
        git = channel.spec.git
        if git is None or git.token_from is None or str(git.forge) == "none":
            raise PermanentForgeError(f"{owner}: no forge with a tokenFrom is configured")
        ref = git.token_from.secret_key_ref
        try:
            token = self._secrets.resolve(ref.name, ref.key, owner=owner)
        except SecretError as exc:
            raise PermanentForgeError(str(exc)) from exc
        repository = git.repository or await self._origin_repository()
        if repository is None:
            raise PermanentForgeError(
                f"{owner}: set git.repository (owner/name; GitLab: group/project): the repository "
                "has no origin remote to derive it from"
            )
        api_url = forges.api_url_for(str(git.forge), git.api_url)
        # A rotated token or an edited channel builds a new client; the fingerprint is salted per process.
        key = (str(git.forge), api_url, repository, self._secrets.fingerprint(ref.name, ref.key))
        known = self._forges.get(name)
        if known is not None and known[0] == key:
            return known[1]
        if self._http is None:
            self._http = httpx2.AsyncClient()
        client = forges.connect(
            str(git.forge),
            api_url=api_url,
            repository=repository,
            token=token,
            http=self._http,
            budget=self._budgets.setdefault((str(git.forge), api_url), forges.RateBudget()),
            poll_base=self.settings.forge_poll_interval,
        )
        self._forges[name] = (key, client)
        return client

    async def _origin_repository(self) -> str | None:
        assert self._repo is not None
        repo = self._repo
        url = await asyncio.get_running_loop().run_in_executor(
            self._git, repo.config_value, "remote.origin.url"
        )
        return forges.repository_from_url(url) if url else None

    def webhook(self, forge: str, branch: str | None) -> None:
        """A verified forge event: look at the refs now, and re-check the tool call waiting on `branch`.

        Polled pull-request states are forgotten, so the next look asks the forge (the event may be
        a pull request closed without merging, which changes no ref here).
        """
        for _, client in self._forges.values():
            client.invalidate()
        if branch is not None:
            for name, waiting_on in self._awaiting_humans().items():
                if waiting_on == branch:
                    self._queue.add((Kind.ToolCall, name))
        self.poke()

    async def checkpoint(self, *objects: AnyResource) -> None:
        changes: list[Change] = []
        committed: list[tuple[Key, AnyResource | None, AnyResource | None]] = []
        for obj in objects:
            key = (Kind(obj.kind), obj.metadata.name)
            # The latest state includes checkpoints handed to the writer but not landed yet.
            old = self._submitted.get(key, self._observed.get(key))
            if old is not None and _same_state(old, obj):
                continue
            was, new = lifecycle.phase_of(old), lifecycle.phase_of(obj)
            if lifecycle.terminal(old) and new != was:
                raise StaleError(f"{key[0]}/{key[1]} is already {was}: not moving it to {new}")
            stamped = self._stamp(key, obj)
            changes.append(
                Change(
                    kind=key[0],
                    name=key[1],
                    document=to_document(stamped),
                    old_phase=lifecycle.phase_of(old),
                    new_phase=lifecycle.phase_of(stamped),
                )
            )
            committed.append((key, stamped, old))
        if not changes:
            return
        await self._commit(changes, committed)

    async def _commit(
        self, changes: list[Change], committed: list[tuple[Key, AnyResource | None, AnyResource | None]]
    ) -> None:
        """Hand the changes to the writer; apply them in memory once (and only once) they landed.

        Shielded: a reconcile interrupted while waiting (shutdown, a task removed mid-call) does not
        lose a checkpoint the writer is committing, and memory never disagrees with the branch.
        """
        landing = asyncio.ensure_future(self._writer.commit(changes, spec_commit=self.spec_commit))
        for key, obj, _ in committed:
            self._submitted[key] = obj

        def landed(future: asyncio.Future[str | None]) -> None:
            for key, obj, _ in committed:
                if key in self._submitted and self._submitted[key] is obj:
                    del self._submitted[key]
            if future.cancelled() or future.exception() is not None:
                return
            for key, obj, old in committed:
                if obj is None:
                    self._observed.pop(key, None)
                else:
                    self._observed[key] = obj
                    if (
                        old is None
                        and key[0] in (Kind.ToolCall, Kind.Task)
                        and key not in self._desired.resources
                    ):
                        self._index(key, obj, self._dependents)  # created by the reconciler: index it now
                if log.isEnabledFor(logging.INFO) and lifecycle.phase_of(old) != lifecycle.phase_of(obj):
                    log.info(
                        "%s/%s: %s -> %s", key[0], key[1], lifecycle.phase_of(old), lifecycle.phase_of(obj)
                    )
                if _signature(old) != _signature(obj):
                    self._wake_dependents(key, obj if obj is not None else old)

        landing.add_done_callback(landed)
        await asyncio.shield(landing)

    async def remove(self, kind: Kind, name: str, *, reason: str) -> None:
        old = self._observed.get((kind, name))
        change = Change(
            kind=kind, name=name, document=None, old_phase=lifecycle.phase_of(old), new_phase="Deleted"
        )
        log.info("%s/%s: %s", kind, name, reason)
        await self._commit([change], [((kind, name), None, old)])

    def _stamp(self, key: Key, obj: AnyResource) -> AnyResource:
        """Record where the declaration came from: the file on main and the commit reconciled."""
        annotations = dict(obj.metadata.annotations)
        loaded = self._desired.get(*key)
        if loaded is not None:
            annotations[ANNOTATION_SOURCE] = loaded.path
        if self.spec_commit:
            annotations[ANNOTATION_SPEC_COMMIT] = self.spec_commit
        metadata = obj.metadata.model_copy(update={"annotations": annotations})
        # Status files carry this project's apiVersion whatever the manifest used (ACP's are accepted).
        return obj.model_copy(update={"metadata": metadata, "api_version": API_VERSION})

    def _wake_dependents(self, key: Key, obj: AnyResource | None) -> None:
        for dependent in self._dependents.get(key, ()):
            self._queue.add(dependent)
        if obj is None:
            return
        labels = obj.metadata.labels
        if key[0] == Kind.ToolCall and LABEL_TASK in labels:
            self._queue.add((Kind.Task, labels[LABEL_TASK]))
        if key[0] == Kind.Task and LABEL_PARENT_TOOLCALL in labels:
            self._queue.add((Kind.ToolCall, labels[LABEL_PARENT_TOOLCALL]))

    # -- the reactor ---------------------------------------------------------------------------

    async def _reconcile(self, item: Hashable) -> Requeue | None:
        assert isinstance(item, tuple)
        kind, name = item
        controller = self._controllers.get(kind)
        if controller is None:
            return None
        try:
            result = await controller.reconcile(name, self)
        except StaleError as exc:
            log.debug("%s; reconciling %s/%s again", exc, kind, name)
            return Requeue(0.0)
        if result.requeue_after is None:
            return None
        return Requeue(result.requeue_after, progress=result.progress)

    def _reindex(self) -> None:
        """Rebuild dependency → dependents from every declared (and reconciler-created) resource."""
        dependents: dict[Key, set[Key]] = defaultdict(set)
        objects: list[tuple[Key, AnyResource]] = [
            (k, loaded.resource) for k, loaded in self._desired.resources.items()
        ]
        objects += [
            (k, obj)
            for k, obj in self._observed.items()
            if (k[0] == Kind.Task and LABEL_PARENT_TOOLCALL in obj.metadata.labels)
            or (k[0] == Kind.ToolCall and lifecycle.unfinished(obj))
        ]
        for key, obj in objects:
            self._index(key, obj, dependents)
        self._dependents = dependents

    def _index(self, key: Key, obj: AnyResource, dependents: dict[Key, set[Key]]) -> None:
        """Record what `obj` depends on."""
        controller = self._controllers.get(key[0])
        if controller is not None:
            for dependency in controller.dependencies(obj):
                dependents[dependency].add(key)

    async def _read_main(self) -> bool:
        """Read `main` if it moved; enqueue what changed. Returns whether it moved."""
        loop = asyncio.get_running_loop()
        assert self._repo is not None
        assert self._reader is not None
        repo, reader = self._repo, self._reader
        ref = f"refs/heads/{self.options.branch}"
        commit = await loop.run_in_executor(self._git, repo.resolve, ref)
        if commit == self._desired.commit:
            return False
        previous = self._desired
        state = await loop.run_in_executor(self._git, lambda: reader.read(commit, previous=previous))
        state = self._mine(state)
        self._desired = state
        self._report_errors(state)
        self._reindex()
        changed = changed_keys(previous, state)
        for key in changed:
            if key[0] == Kind.Task and key not in state.resources:
                self._queue.interrupt(key)  # don't wait for an LLM answer nobody will read
        for key in _ordered(changed):
            self._queue.add(key)
            for dependent in self._dependents.get(key, ()):
                self._queue.add(dependent)
        if previous.commit is not None:
            self._wake_awaiting_humans()  # a decision or an answer is a file arriving on main
        log.debug(
            "main at %s: %d resources, %d changed", (commit or "")[:12], len(state.resources), len(changed)
        )
        return True

    def _mine(self, state: DesiredState) -> DesiredState:
        """The part of `main` this process works on: every resource but the tasks it does not own.

        Dropped here, before `main` becomes work, another shard's tasks cost this one nothing
        more than parsing their files: never queued, reconciled or written. So are the tasks a
        former layout finished (`_check_layouts`): they are not run again.
        """
        shard = self.options.shard
        if not shard.sharded and not self._retired:
            return state

        def mine(key: Key) -> bool:
            return key[0] != Kind.Task or (shard.owns(key[1]) and key[1] not in self._retired)

        return dataclasses.replace(
            state,
            resources={key: loaded for key, loaded in state.resources.items() if mine(key)},
            held=frozenset(key for key in state.held if mine(key)),
        )

    def _check_layouts(self, repo: GitRepo) -> set[str]:
        """Refuse to start while another layout has unfinished tasks; return the tasks it finished.

        Another layout is a status branch of the family written with another number of shards
        (`acp/status` when sharded, `acp/status-<i>-of-<m>` with m != N). Its unfinished task would
        be run again here, tools included, from the start: a person finishes or cancels it under
        that layout first. Its finished tasks stay there (readers show them) and are not re-run.
        Other shards of this layout are skipped: their tasks are simply not ours. A custom
        `--status-branch` is a deployment of its own, outside the family: nothing to check.
        """
        shard = self.options.shard
        if self.options.status_branch != shard.branch:
            return set()
        finished: set[str] = set()
        for branch in shards.status_branches(repo):
            if branch.count == shard.count:
                continue
            layout = f"{branch.count} shards" if branch.count > 1 else "unsharded"
            for name, phase in shards.task_phases(repo, branch).items():
                if not lifecycle.task_finished(phase):
                    raise UserError(
                        f'Task "{name}" is unfinished ({phase}) on {branch.name} (the {layout} layout): '
                        f"serve --shard {shard} would run it again; finish or cancel it under that "
                        "layout first (docs/scale.md)"
                    )
                finished.add(name)
        return finished

    def _report_errors(self, state: DesiredState) -> None:
        if state.load is None:
            return
        current = {str(error) for error in state.load.errors}
        for line in sorted(current - self._reported_errors):
            log.error("%s", line)
        self._reported_errors = current

    def _claim(self) -> None:
        """Take this status branch's ServeLock, then clear what a killed predecessor left behind.

        Before anything is read or written: a second serve of the same branch stops here with one
        line instead of fighting the first, and a stale lock never stalls the first checkpoint.
        With a remote, the lock lives in the cache directory and the whole mirror is cleared when
        no other serve uses it (store/recovery.py).
        """
        options = self.options
        branch = options.status_branch
        if self._remote is not None:
            mirror = self._remote.options.mirror
            directory, where = mirror.parent, self._remote.describe()
        else:
            with GitRepo.open(options.repo) as repo:
                mirror, where = repo.common_dir, str(options.repo)
            directory = recovery.lock_dir(mirror)
        self._serve_lock = recovery.ServeLock.acquire(directory, branch, where=where)
        predecessor = self._serve_lock.predecessor
        if predecessor is not None:
            log.warning("the last serve of %s (%s) was killed: recovering what it left", branch, predecessor)
        whole = False
        if self._remote is not None:
            self._mirror_lock = recovery.MirrorLock(directory)
            whole = self._mirror_lock.exclusive
        if (mirror / "HEAD").exists():
            recovery.recover(
                mirror,
                branches=[f"refs/heads/{branch}"],
                namespaces=RECONCILER_NAMESPACES,
                predecessor=predecessor,
                whole=whole,
            )
        if self._mirror_lock is not None:
            self._mirror_lock.share()
        self._writer.owns_branch = True

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._git, self._claim)
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
        retired = await loop.run_in_executor(self._git, self._check_layouts, self._repo)
        documents = await self._writer.start()
        for (kind_text, name), document in documents.items():
            try:
                self._observed[(Kind(kind_text), name)] = from_document(document)
            except Exception as exc:  # one unreadable status file must not stop the others
                log.error("status of %s/%s: unreadable status file, ignored: %s", kind_text, name, exc)
        # A task with status here too is ours to continue (it came back to this layout).
        self._retired = frozenset(retired - {name for kind, name in self._observed if kind == Kind.Task})
        await self._read_main()
        _tune_gc()
        for key in _ordered(set(self._desired.resources) | set(self._observed)):
            self._queue.add(key)
        self._watcher = RefWatcher(
            self._repo.git_dir if self._repo.common_dir is None else self._repo.common_dir,
            poll_interval=self.options.poll_interval,
            # Remote-tracking refs move on every fetch and push; RemoteSync says when it matters.
            # Status branches are reconcilers' writes: ours, and other shards' (`acp/status*`).
            ignore_prefixes=("heads/" + self.options.status_branch, "heads/" + shards.UNSHARDED, "remotes/"),
        )
        self._watcher.start()
        if self._secrets.secrets_dir is not None:
            self._secrets_watch = asyncio.create_task(self._watch_secrets(self._secrets.secrets_dir))
        self._maintenance = asyncio.create_task(self._maintain())
        self._queue.start()
        log.info(
            "serving %s: %d resources on %s, %d status files on %s%s",
            self._remote.describe() if self._remote is not None else self.options.repo,
            len(self._desired.resources),
            self.options.branch,
            len(self._observed),
            self.options.status_branch,
            f" (shard {self.options.shard})" if self.options.shard.sharded else "",
        )
        self._ready = True

    def readiness(self) -> str | None:
        """Why this reconciler is not ready (`GET /readyz`), or None when it is.

        Not ready while starting (recovery), after stopping, and while the status branch cannot be
        written (the last group commit failed for good: a lock held by someone else, a full disk).
        """
        if not self._ready:
            return "starting: recovering the state of the last run"
        if self._stop.is_set():
            return "stopping"
        if self._writer.failure is not None:
            return f"the status branch cannot be written: {self._writer.failure}"
        return None

    def _checkpoint_failed(self, reason: str) -> None:
        """A group commit failed after its bounded retries: with `--once`, stop and exit 1 (never stall)."""
        if self.options.once and self._fatal is None:
            self._fatal = reason
            log.error("stopping: a checkpoint could not be committed: %s", reason)
            self._stop.set()

    async def _maintain(self) -> None:
        """Repository maintenance (`GitRepo.maintain`) off the checkpoint path, when it is due.

        Due every `maintenance_interval` if checkpoints were written, and sooner once 50 commits
        were: each group commit adds one small pack (`GitRepo.one_pack`), and git's object lookups
        slow down with hundreds of packs. In the reader thread, as GIT-NOTES advises: history
        reads stay fast (`describe`, `history`) and objects don't pile up over weeks of running.
        """
        loop = asyncio.get_running_loop()
        done = self._writer.stats.commits
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(self.options.maintenance_interval, 5.0))
            commits = self._writer.stats.commits
            due = commits - done >= _PACKS_BEFORE_MAINTENANCE or (
                commits != done and time.monotonic() - last >= self.options.maintenance_interval
            )
            if not due or self._repo is None:
                continue
            repo, shared = self._repo, self._remote is None
            done, last = commits, time.monotonic()
            try:
                await loop.run_in_executor(self._git, functools.partial(repo.maintain, shared=shared))
            except Exception as exc:  # maintenance is an optimisation: never stop serving for it
                log.warning("repository maintenance failed (will retry): %s", exc)

    async def _watch_secrets(self, directory: Path) -> None:
        """A rotated secret (a mounted Kubernetes secret is swapped by symlink) re-validates what uses it."""
        try:
            async for _ in watchfiles.awatch(
                directory, stop_event=self._stop, debounce=200, watch_filter=None
            ):
                for kind, name in list(self._desired.resources):
                    if kind in SECRET_USERS:
                        self._queue.add((kind, name))
        except Exception:  # the periodic re-validation still notices, only later
            log.warning(
                "watching --secrets-dir %s failed; rotated secrets are noticed within minutes", directory
            )

    async def run(self) -> int:
        """Reconcile until stopped by a signal (or, with `once`, until nothing can progress)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        try:
            await self._start()
            while not self._stop.is_set():
                assert self._watcher is not None
                await self._read_main()
                if self.options.once and self._queue.is_idle():
                    if not self._mcp_connecting():
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
                await self._check_human_branches()
        finally:
            await self._shutdown()
        return 1 if self._fatal is not None else 0

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
        if self._http is not None:
            await self._http.aclose()
        for background in (self._secrets_watch, self._maintenance):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        if self._watcher is not None:
            await self._watcher.stop()
        await self._writer.close()  # commits every checkpoint already handed to it
        if self._remote is not None:
            await self._remote.close()  # and pushes them, if the remote answers
        await self._llm.aclose()
        if self._repo is not None:
            repo = self._repo
            await asyncio.get_running_loop().run_in_executor(self._git, repo.close)
        self._git.shutdown(wait=True)
        # Last: a clean stop is recorded, so the next start knows nothing was killed.
        for lock in (self._mirror_lock, self._serve_lock):
            if lock is not None:
                lock.release()
        if self._watcher is not None:  # it served (a refused start ends on its one error line)
            log.info("stopped")

    @property
    def writer(self) -> StatusWriter:
        """The status writer (its stats feed the benchmarks)."""
        return self._writer

    @property
    def remote(self) -> RemoteSync | None:
        """The remote's fetcher and pusher, when serving a remote (its stats feed the benchmarks)."""
        return self._remote


def _ordered(keys: Iterable[Key]) -> list[Key]:
    rank = {kind: i for i, kind in enumerate(START_ORDER)}
    return sorted(keys, key=lambda key: (rank.get(key[0], len(rank)), key[1]))


def _tune_gc() -> None:
    """Collect garbage less often: the reconciler holds every resource in memory and allocates fast.

    With CPython's defaults (700, 10, 10) a run of 1000 tasks spent 1.7 s of its 7.3 s of CPU in the
    cycle collector, 1 s of it in five full collections that walk every live object (pauses of
    ~200 ms). After start-up, what was loaded is frozen (never scanned again; it lives as long as
    the process anyway) and the first generation is collected every 10000 net allocations instead
    of 700: 0.55 s of collection for the same run. Reference counting still frees everything that is
    not in a cycle at once, so memory does not wait for the collector.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _same_state(old: AnyResource, new: AnyResource) -> bool:
    """A checkpoint that changes nothing is not committed (annotations alone are not a change)."""
    return old.spec == new.spec and old.status == new.status and old.metadata.labels == new.metadata.labels
