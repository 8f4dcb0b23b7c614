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


def signed(signer: str | None, *, fast_forward: bool = False) -> Decision:
    """A decision read with allowed signers configured; `signer`: whose good signature it carries."""
    return Decision(
        spec={},
        decided_by=AUTHOR,
        decided_at=0.0,
        fast_forward=fast_forward,
        commit="0123456789abcdef",
        signed_by=signer,
        signed_via="ssh signature" if signer else None,
        signers_checked=True,
    )


@pytest.mark.parametrize(
    ("decision", "ch", "expected"),
    [
        # With signers and no forge: the signing principal, never the author the commit claims.
        (signed("bob@example.com"), channel(), ("bob@example.com", "ssh signature", None)),
        (
            signed("alice@example.com"),
            channel(approvers=("alice@example.com",)),
            ("alice@example.com", "ssh signature", None),
        ),
        (
            signed(None),  # the author says Alice: only a claim
            channel(approvers=("alice@example.com",)),
            (
                "",
                "signature",
                "commit 0123456789ab that brought it is not signed by an allowed signer "
                f"(its author, {AUTHOR}, proves nothing): sign the merge (git merge --no-ff -S)",
            ),
        ),
        (signed(None), channel(), (AUTHOR, "commit author", None)),  # anyone may: recorded as a claim
        (
            signed("mallory@example.com"),
            channel(approvers=("alice@example.com",)),
            (
                "mallory@example.com",
                "ssh signature",
                "mallory@example.com (by ssh signature) is not one of the approvers (alice@example.com)",
            ),
        ),
        (
            signed("gitops-acp", fast_forward=True),  # the reconciler's own signed proposal
            channel(approvers=("gitops-acp",)),
            (
                "",
                "ssh signature",
                "merged by fast-forward: the commit that brought it is the reconciler's own proposal, so "
                "nobody signed the decision: merge with a signed merge commit (git merge --no-ff -S)",
            ),
        ),
        # A forge, when there is one, decides: a signature does not stand in for who merged.
        (signed("bob@example.com"), channel("github"), (AUTHOR, "commit author", None)),
    ],
)
def test_the_decider_with_signers(
    decision: Decision, ch: ContactChannel, expected: tuple[str, str, str | None]
) -> None:
    forge = said("github", None) if str(ch.spec.git.forge if ch.spec.git else "none") != "none" else None
    chosen = deciders.choose(decision, channel=ch, forge=forge)
    assert (chosen.identity, chosen.via, chosen.refused) == expected
