"""ContactChannel controller: is the channel usable for approvals and questions?

A `git` channel (the default) needs nothing outside this repository, so it is Ready once its spec
is valid; its forge settings are checked when a forge is configured. `slack` and `email` channels go
through HumanLayer's API, which this version does not talk to yet: they report Error saying so,
rather than pretending to be Ready.
"""

from __future__ import annotations

from collections.abc import Iterable

from gitops_acp.controllers.base import DONE, Context, Key, Result, forget
from gitops_acp.resources.meta import Condition, Kind
from gitops_acp.resources.models import AnyResource, ContactChannel, ContactChannelStatus

__all__ = ["ContactChannelController"]


class ContactChannelController:
    """Validates contact channels."""

    kind = Kind.ContactChannel

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        return ()

    async def reconcile(self, name: str, ctx: Context) -> Result:
        loaded = ctx.desired(Kind.ContactChannel, name)
        if loaded is None:
            return await forget(Kind.ContactChannel, name, ctx)
        assert isinstance(loaded.resource, ContactChannel)
        channel = loaded.resource
        kind = str(channel.spec.type)
        if kind == "git":
            status = ContactChannelStatus(
                ready=True, status=Condition.Ready, status_detail="git channel: decisions are merges on main"
            )
        else:
            status = ContactChannelStatus(
                ready=False,
                status=Condition.Error,
                status_detail=(
                    f"{kind} channels go through HumanLayer's API, which this version does not support yet"
                ),
            )
        await ctx.checkpoint(channel.model_copy(update={"status": status}))
        return DONE
