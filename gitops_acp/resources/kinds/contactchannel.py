"""The `ContactChannel` kind: how to reach a human, for approvals and questions.

ACP's channels are HumanLayer's Slack and e-mail; ours add `git`, the default: decisions are pull
requests (or plain branches) in this repository, merged or closed by people.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gitops_acp.resources.common import (
    Duration,
    Resource,
    SecretSource,
    SpecModel,
    StatusModel,
    duration_seconds,
)
from gitops_acp.resources.meta import Condition

__all__ = [
    "ChannelType",
    "ContactChannel",
    "ContactChannelSpec",
    "ContactChannelStatus",
    "EmailChannel",
    "Forge",
    "GitChannel",
    "SlackChannel",
]


_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+")


class ChannelType(StrEnum):
    """How a contact channel reaches people."""

    GIT = "git"  # approval branches / pull requests in this repository
    SLACK = "slack"  # HumanLayer's API, as ACP
    EMAIL = "email"  # HumanLayer's API, as ACP


class Forge(StrEnum):
    """Where pull requests are opened for a git channel."""

    NONE = "none"  # branches only: merge them with git or `gitops-acp approve`
    GITHUB = "github"
    GITEA = "gitea"
    GITLAB = "gitlab"


class SlackChannel(SpecModel):
    """A Slack destination (through HumanLayer)."""

    channel_or_user_id: str = Field(alias="channelOrUserID", pattern=r"^[CU][A-Z0-9]+$")
    """The channel (C...) or user (U...) id."""
    context_about_channel_or_user: str | None = None
    """Who is there; becomes the tool description for human contact."""
    allowed_responder_ids: list[str] = Field(default_factory=list, alias="allowedResponderIDs")
    """Slack user ids whose answers count."""


class EmailChannel(SpecModel):
    """An e-mail destination (through HumanLayer)."""

    address: str = Field(pattern=r".+@.+\..+")
    """The recipient."""
    context_about_user: str | None = None
    """Who the recipient is; becomes the tool description for human contact."""
    subject: str | None = None
    """The subject line."""


class GitChannel(SpecModel):
    """Decisions through branches and pull requests in this repository."""

    forge: Forge = Forge.NONE
    """Where to open pull requests, if anywhere."""
    api_url: str | None = None
    """The forge's API base URL (self-hosted Gitea/GitLab/GitHub Enterprise)."""
    token_from: SecretSource | None = None
    """The forge token: a secretKeyRef."""
    repository: str | None = None
    """`owner/name` on the forge (GitLab: `group/subgroup/project`); default: from the `origin` remote."""
    reviewers: list[str] = Field(default_factory=list)
    """Forge users asked to review each pull request."""
    labels: list[str] = Field(default_factory=list)
    """Labels put on each pull request."""
    approvers: list[str] = Field(default_factory=list)
    """Who may decide; when set, a merge by anyone else is refused."""
    allow_argument_edits: bool = False
    """Whether a human may change the tool's arguments in the pull request."""
    timeout: Duration | None = None
    """How long a decision may take before the call is rejected ("24h", or seconds)."""

    @property
    def timeout_seconds(self) -> float | None:
        """Return `timeout` in seconds, or None when unset."""
        return duration_seconds(self.timeout)

    @field_validator("repository")
    @classmethod
    def _repository_path(cls, value: str | None) -> str | None:
        if value is not None and not _REPOSITORY.fullmatch(value):
            raise ValueError(f"{value!r} is not owner/name (GitLab: group/subgroup/project)")
        return value

    @model_validator(mode="after")
    def _forge_needs_token(self) -> GitChannel:
        if self.forge is not Forge.NONE and self.token_from is None:
            raise ValueError(f"forge {self.forge} needs tokenFrom (a secretKeyRef to the forge's API token)")
        if self.forge is Forge.GITEA and not self.api_url:
            raise ValueError("forge gitea needs apiUrl (the instance's URL, e.g. https://gitea.example.com)")
        return self


class ContactChannelSpec(SpecModel):
    """A way to reach a human: for approvals and for questions."""

    type: ChannelType = ChannelType.GIT
    """git (the default), slack or email."""
    api_key_from: SecretSource | None = None
    """HumanLayer project API key (slack, email)."""
    channel_api_key_from: SecretSource | None = None
    """HumanLayer channel-scoped API key (slack, email); needs channelId."""
    channel_id: str | None = None
    """The HumanLayer channel id, with channelApiKeyFrom."""
    slack: SlackChannel | None = None
    """The Slack destination, for type slack."""
    email: EmailChannel | None = None
    """The e-mail destination, for type email."""
    git: GitChannel | None = None
    """Pull request settings, for type git."""

    @model_validator(mode="after")
    def _consistent(self) -> ContactChannelSpec:
        if self.type is ChannelType.SLACK and self.slack is None:
            raise ValueError("type slack needs a slack block")
        if self.type is ChannelType.EMAIL and self.email is None:
            raise ValueError("type email needs an email block")
        if self.api_key_from is not None and self.channel_api_key_from is not None:
            raise ValueError("set only one of apiKeyFrom or channelApiKeyFrom")
        if (self.channel_api_key_from is None) != (self.channel_id is None):
            raise ValueError("channelApiKeyFrom and channelId go together")
        return self


class ContactChannelStatus(StatusModel):
    """What the reconciler found when it checked the channel."""

    ready: bool = False
    """Whether agents can use this channel."""
    status: Condition | None = None
    """Ready, Error or Pending."""
    status_detail: str | None = None
    """Why, in words."""
    project_slug: str | None = None
    """HumanLayer project of the key (slack, email)."""
    org_slug: str | None = None
    """HumanLayer organization of the key (slack, email)."""
    verified_channel_id: str | None = None
    """HumanLayer channel id that the channel key was checked against."""


class ContactChannel(Resource):
    """A `ContactChannel` resource."""

    kind: Literal["ContactChannel"] = "ContactChannel"
    spec: ContactChannelSpec
    status: ContactChannelStatus | None = None
