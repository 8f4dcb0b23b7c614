"""controllers/deciders.choose: who decided, from the file on main, the channel and what the forge said."""

from __future__ import annotations

import pytest

from gitops_acp.controllers import deciders
from gitops_acp.humans.branches import Decision
from gitops_acp.humans.forges import MergeInfo, PRState
from gitops_acp.resources.models import ContactChannel

ANOTHER_WAY = (
    "the file reached main another way, e.g. a direct push); "
    "approvers (alice) decide by merging the pull request"
)
AUTHOR = "Alice <alice@example.com>"  # what the commit claims: anyone who can push can write it


def channel(forge: str = "none", approvers: tuple[str, ...] = ()) -> ContactChannel:
    git: dict[str, object] = {"forge": forge, "approvers": list(approvers)}
    if forge != "none":
        git["tokenFrom"] = {"secretKeyRef": {"name": "t", "key": "T"}}
        git["apiUrl"] = "http://127.0.0.1:1"
    return ContactChannel.model_validate(
        {
            "apiVersion": "acp.gitops.dev/v1alpha1",
            "kind": "ContactChannel",
            "metadata": {"name": "c"},
            "spec": {"git": git},
        }
    )


def said(forge: str, merged_by: str | None, *approved: str) -> MergeInfo:
    state = PRState.MERGED if merged_by else PRState.OPEN
    return MergeInfo(forge, 7, state, merged_by=merged_by, approved_by=approved)


@pytest.mark.parametrize(
    ("ch", "forge_said", "fast_forward", "expected"),
    [
        (channel(), None, False, (AUTHOR, "commit author", None)),
        (
            channel(approvers=("bob",)),
            None,
            False,
            (AUTHOR, "commit author", f"{AUTHOR} is not one of the approvers (bob)"),
        ),
        (
            channel(approvers=("alice@example.com",)),
            None,
            True,
            (
                AUTHOR,
                "commit author",
                "merged by fast-forward, so the approver is unknown: merge with --no-ff",
            ),
        ),
        (channel("github"), said("github", "carol"), False, ("carol", "github merged_by", None)),
        (
            channel("github", ("alice",)),
            said("github", "mallory", "alice"),
            False,
            ("alice", "github review", None),
        ),
        (
            channel("gitlab", ("alice",)),
            said("gitlab", "mallory", "alice"),
            False,
            ("alice", "gitlab approval", None),
        ),
        (channel("gitea", ("alice",)), said("gitea", "alice"), False, ("alice", "gitea merged_by", None)),
        (channel("github"), said("github", None), False, (AUTHOR, "commit author", None)),
        (
            channel("github", ("alice",)),
            said("github", "mallory", "bob"),
            False,
            (
                "mallory",
                "github merged_by",
                "mallory merged it (approving reviews: bob), and none of them is one of the approvers "
                "(alice)",
            ),
        ),
        (
            channel("github", ("alice",)),
            said("github", None, "alice"),
            False,
            (
                "",
                "github merged_by",
                "github cannot say who merged it (pull request #7 is open, not merged: " + ANOTHER_WAY,
            ),
        ),
        (
            channel("gitlab", ("alice",)),
            None,
            False,
            (
                "",
                "gitlab merged_by",
                "gitlab cannot say who merged it (no pull request was recorded for it: " + ANOTHER_WAY,
            ),
        ),
        # An approvers entry is a login: the commit's email never matches it with a forge.
        (
            channel("github", ("alice@example.com",)),
            said("github", "alice"),
            False,
            (
                "alice",
                "github merged_by",
                "alice merged it (no approving review), and none of them is one of the approvers "
                "(alice@example.com)",
            ),
        ),
    ],
)
def test_the_decider(
    ch: ContactChannel,
    forge_said: MergeInfo | None,
    fast_forward: bool,
    expected: tuple[str, str, str | None],
) -> None:
    decision = Decision(spec={}, decided_by=AUTHOR, decided_at=0.0, fast_forward=fast_forward)
    chosen = deciders.choose(decision, channel=ch, forge=forge_said)
    assert (chosen.identity, chosen.via, chosen.refused) == expected
