"""ContactChannel controller: is the channel usable for approvals and questions?

    git ──────────► Ready (decisions are merges on main; nothing outside the repository to check)
    git + forge ──► one GET of the repository with the token (forge client's validate)
                    ──► Ready, or Error with what to fix ("the token was refused (401)…")
    slack, email ─► one real request with the key (humanlayer.validate):
                      GET /humanlayer/v1/project              (apiKeyFrom: a project key)
                      GET /humanlayer/v1/contact_channel/<id> (channelApiKeyFrom + channelId)
                    ──► Ready with projectSlug/orgSlug, or Error with the reason

A channel in Error is validated again every `error_retry` seconds (a watchdog: `serve --once` does
not wait for it), and at once when its file or its secret changes. Tool calls that need it reject
with the channel's reason; nothing else stops.
"""

from __future__ import annotations

from collections.abc import Iterable

from gitops_acp.controllers import humanlayer_calls as humanlayer
from gitops_acp.controllers.base import DONE, Context, Key, Result, forget
from gitops_acp.errors import ForgeError
from gitops_acp.resources.meta import Condition, Kind
from gitops_acp.resources.models import AnyResource, ContactChannel, ContactChannelStatus

__all__ = ["ContactChannelController"]


class ContactChannelController:
    """Validates contact channels."""

    kind = Kind.ContactChannel

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        return ()

    async def reconcile(self, name: str, ctx: Context) -> Result:
        loaded = ctx.state.desired(Kind.ContactChannel, name)
        if loaded is None:
            return await forget(Kind.ContactChannel, name, ctx)
        assert isinstance(loaded.resource, ContactChannel)
        channel = loaded.resource
        git = channel.spec.git
        if str(channel.spec.type) == "git" and git is not None and str(git.forge) != "none":
            try:
                found = await (await ctx.humans.forge(channel)).validate()
                status = ContactChannelStatus(
                    ready=True,
                    status=Condition.Ready,
                    status_detail=f"git channel with pull requests: {found}",
                )
            except ForgeError as exc:
                status = ContactChannelStatus(ready=False, status=Condition.Error, status_detail=str(exc))
        elif str(channel.spec.type) == "git":
            status = ContactChannelStatus(
                ready=True, status=Condition.Ready, status_detail="git channel: decisions are merges on main"
            )
        else:
            status = await humanlayer.validate(channel, ctx)
        await ctx.state.checkpoint(channel.model_copy(update={"status": status}))
        if status.status == Condition.Error:
            return Result(ctx.settings.error_retry, progress=False)
        return DONE
