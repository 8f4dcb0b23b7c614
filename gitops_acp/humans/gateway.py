"""People, as the controllers reach them: branches to propose, decisions to read, forges to ask.

One object per `serve` (built by the reactor, handed to controllers as `ctx.humans`):

    propose_approval / propose_question ──► a branch from the tip of `main` (humans/branches.py),
                                            pushed before the call returns when there is a remote
    approval_decision / question_response ──► the file a person merged to `main`, and who merged it
    branch_exists                          ──► is the proposal still there (deleted = rejected)
    delete_branch                          ──► a finished call's proposal goes: on the remote, then here
    forge(channel)                         ──► the pull-request client of a channel's forge, built
                                            once per token and repository, on the shared HTTP client

Git work runs through `run` (the reactor's git thread: one `GitRepo` per thread), so the event
loop never waits on git.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2

from gitops_acp.errors import PermanentForgeError, SecretError
from gitops_acp.humans import approvals, forges, questions
from gitops_acp.humans.approvals import Decision
from gitops_acp.resources.models import ContactChannel
from gitops_acp.secrets import SecretResolver
from gitops_acp.store.git import GitRepo
from gitops_acp.store.git.signatures import Signers

__all__ = ["Humans"]

T = TypeVar("T")


class Humans:
    """Approvals and questions as branches of the served repository; forge clients per channel."""

    def __init__(
        self,
        *,
        repo: Callable[[], GitRepo],
        run: Callable[[Callable[[], Any]], Awaitable[Any]],
        main: str,
        identity: tuple[str, str],
        published: Callable[[], Awaitable[None]],
        unpublish: Callable[[str], Awaitable[bool]] | None = None,
        secrets: SecretResolver,
        http: httpx2.AsyncClient,
        forge_poll: float,
        applied: Callable[[], str | None] = lambda: None,
        signers: Signers | None = None,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """`repo`: the served repository (opened at start); `run`: runs a function on the git thread;
        `published`: returns once every branch made so far is on the remote (at once without one).
        Signed main (DESIGN §10): `applied` is the commit of `main` that is applied (decisions are
        read there, proposals start there; None: the tip); `signers` identify who signed a decision;
        `sign` signs the reconciler's proposal commits."""
        self.main = main  # the branch decisions land on, and pull requests' base
        self.signers = signers
        self._applied = applied
        self._sign = sign
        self._repo = repo
        self._run = run
        self._identity = identity
        self._published = published
        self._unpublish = unpublish
        self._secrets = secrets
        self._http = http
        self._forge_poll = forge_poll
        self._forges: dict[str, tuple[tuple[str | None, ...], forges.ForgeClient]] = {}  # by channel
        self._budgets: dict[tuple[str, str], forges.RateBudget] = {}  # by (forge, API root)

    async def propose_approval(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        """Create (or find) the approval branch of a tool call from the tip of `main`; return its name."""
        return await self._propose(approvals.propose, toolcall, document, message)

    async def propose_question(self, toolcall: str, document: dict[str, Any], message: str) -> str:
        """Create (or find) the question branch of a tool call from the tip of `main`; return its name."""
        return await self._propose(questions.propose, toolcall, document, message)

    async def _propose(
        self, propose: Callable[..., str], toolcall: str, document: dict[str, Any], message: str
    ) -> str:
        repo = self._repo()
        branch: str = await self._run(
            lambda: propose(
                repo,
                main=self.main,
                toolcall=toolcall,
                document=document,
                message=message,
                identity=self._identity,
                at=self._applied(),
                sign=self._sign,
            )
        )
        # People must be able to see what the status will point at: published before it is committed.
        await self._published()
        return branch

    async def approval_decision(self, toolcall: str) -> Decision | None:
        """The approval file of a tool call on the tip of `main`, with who put it there; None if absent."""
        repo = self._repo()
        decision: Decision | None = await self._run(
            lambda: approvals.read_decision(
                repo,
                main=self.main,
                toolcall=toolcall,
                reconciler=self._identity,
                at=self._applied(),
                signers=self.signers,
            )
        )
        return decision

    async def question_response(self, toolcall: str) -> Decision | None:
        """The response file of a question on the tip of `main`, with who put it there; None if absent."""
        repo = self._repo()
        response: Decision | None = await self._run(
            lambda: questions.read_response(
                repo,
                main=self.main,
                toolcall=toolcall,
                reconciler=self._identity,
                at=self._applied(),
                signers=self.signers,
            )
        )
        return response

    async def branch_exists(self, branch: str) -> bool:
        """Whether `refs/heads/<branch>` exists."""
        repo = self._repo()
        sha = await self._run(lambda: repo.resolve(f"refs/heads/{branch}"))
        return sha is not None

    async def delete_branch(self, branch: str) -> None:
        """Delete `refs/heads/<branch>` (a finished call's proposal), on the remote first, then here.

        A compare-and-swap on the value just read: a branch someone moved meanwhile is left for
        the next try. Raises StoreError (RemoteError: unreachable, ConflictError: moved) to retry.
        """
        ref = f"refs/heads/{branch}"
        if self._unpublish is not None and await self._unpublish(ref):
            return  # the remote's deletion deletes the mirror's branch too, on the remote's thread
        repo = self._repo()

        def delete() -> None:
            sha = repo.resolve(ref)
            if sha is not None:
                repo.delete_ref(ref, sha)

        await self._run(delete)

    def invalidate(self) -> None:
        """Forget polled pull-request states (a webhook said something changed on the forge)."""
        for _, client in self._forges.values():
            client.invalidate()

    async def forge(self, channel: ContactChannel) -> forges.ForgeClient:
        """The pull-request client of a git channel that names a forge.

        Raises PermanentForgeError when it cannot be built (no token, no repository to talk about).
        """
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
        client = forges.connect(
            str(git.forge),
            api_url=api_url,
            repository=repository,
            token=token,
            http=self._http,
            budget=self._budgets.setdefault((str(git.forge), api_url), forges.RateBudget()),
            poll_base=self._forge_poll,
        )
        self._forges[name] = (key, client)
        return client

    async def _origin_repository(self) -> str | None:
        repo = self._repo()
        url: str | None = await self._run(lambda: repo.config("remote.origin.url"))
        return forges.repository_from_url(url) if url else None
