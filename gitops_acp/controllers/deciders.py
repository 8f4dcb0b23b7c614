"""Who decided an approval or answered a question: the one place that chooses (DESIGN §10 "Who approved").

    the file on main (humans/branches.Decision) ─┐
    the channel (forge? approvers?)               ├─► choose() ──► Decider(identity, via) or a refusal
    what the forge said (forges.MergeInfo)       ─┘

The sources, strongest first:

- a forge (`spec.git.forge`): who the forge says merged the pull request, and whose reviews approve
  it (GitLab: approvals). The merge commit's author is never trusted then: anyone who can push sets
  it. With `approvers`, the merger counts if listed, else the first approving reviewer who is; a
  file that reached `main` without a merged pull request (a direct push, `gitops-acp approve` on a
  clone) is refused. Without `approvers`, the merger is recorded, or else the commit author,
  labelled as such.
- allowed signers (`signers` in the policy) and no forge: the principal whose key signed the
  first-parent commit that brought the file to `main` (a signed merge, or a signed
  `gitops-acp approve`). With `approvers`, an unsigned decision, or a fast-forward of the
  reconciler's own proposal, is refused: the author's name proves nothing. Without `approvers`
  anyone may decide, and such a decision records the author, labelled `commit author`.
- neither: the author of the first-parent commit that brought the file to `main`, which anyone who
  can push can set (docs/security.md says so).

`approvers` entries match a forge login exactly; against a commit author they match the name, the
email or the whole `Name <email>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitops_acp.humans.branches import Decision
from gitops_acp.humans.forges import MergeInfo
from gitops_acp.resources.models import ContactChannel

__all__ = ["COMMIT_AUTHOR", "HUMANLAYER", "Decider", "choose", "matches"]

COMMIT_AUTHOR = "commit author"
HUMANLAYER = "humanlayer"


@dataclass(frozen=True)
class Decider:
    """Who decided and how that is known; `refused` says why the decision cannot count."""

    identity: str  # a forge login, or "Name <email>"; "" when nobody can be named
    via: str  # the `decidedVia` value
    refused: str | None = None  # set when approvers are configured and this decider is not one


def choose(decision: Decision, *, channel: ContactChannel | None, forge: MergeInfo | None) -> Decider:
    """Choose who decided `decision` on `channel`, given what its forge said (None: no forge asked)."""
    git = channel.spec.git if channel is not None else None
    approvers = list(git.approvers) if git is not None else []
    has_forge = git is not None and str(git.forge) != "none"
    if has_forge:
        return _from_forge(decision, forge, approvers, str(git.forge) if git is not None else "forge")
    if decision.signers_checked:
        return _from_signature(decision, approvers)
    return _from_commit(decision, approvers)


def _from_forge(decision: Decision, forge: MergeInfo | None, approvers: list[str], name: str) -> Decider:
    review = "gitlab approval" if name == "gitlab" else f"{name} review"
    if forge is None or forge.merged_by is None:
        if not approvers:  # anyone may decide: say who the commit claims, and that it is only a claim
            return Decider(decision.decided_by, COMMIT_AUTHOR)
        if forge is None:
            why = "no pull request was recorded for it"
        else:
            why = f"pull request #{forge.number} is {forge.state}, not merged"
        return Decider(
            "",
            f"{name} merged_by",
            refused=f"{name} cannot say who merged it ({why}: the file reached main another way, "
            f"e.g. a direct push); approvers ({', '.join(approvers)}) decide by merging the pull request",
        )
    if forge.merge_commit and decision.commit and forge.merge_commit != decision.commit:
        # Merged, but the file on main was last changed by another commit: whoever pushed that one
        # decided, and the forge cannot say who that was.
        if not approvers:
            return Decider(decision.decided_by, COMMIT_AUTHOR)
        return Decider(
            "",
            f"{name} merged_by",
            refused=f"{decision.commit[:12]} changed the file after pull request #{forge.number} was merged "
            f"({forge.merge_commit[:12]}): {name} cannot say who made that change; approvers "
            f"({', '.join(approvers)}) decide by merging the pull request",
        )
    merged = Decider(forge.merged_by, f"{name} merged_by")
    if not approvers or forge.merged_by in approvers:
        return merged
    for login in forge.approved_by:
        if login in approvers:
            return Decider(login, review)
    reviews = (
        f"approving reviews: {', '.join(forge.approved_by)}" if forge.approved_by else "no approving review"
    )
    return Decider(
        forge.merged_by,
        merged.via,
        refused=f"{forge.merged_by} merged it ({reviews}), and none of them is one of the approvers "
        f"({', '.join(approvers)})",
    )


def _from_signature(decision: Decision, approvers: list[str]) -> Decider:
    via = decision.signed_via or "signature"
    unsigned = decision.signed_by is None or decision.fast_forward
    if unsigned and not approvers:  # anyone may decide: record who the commit claims, as a claim
        return Decider(decision.decided_by, COMMIT_AUTHOR)
    if decision.fast_forward:
        why = (
            "merged by fast-forward: the commit that brought it is the reconciler's own proposal, so "
            "nobody signed the decision: merge with a signed merge commit (git merge --no-ff -S)"
        )
        return Decider("", via, refused=why)
    if decision.signed_by is None:
        why = (
            f"commit {decision.commit[:12]} that brought it is not signed by an allowed signer (its author, "
            f"{decision.decided_by}, proves nothing): sign the merge (git merge --no-ff -S)"
        )
        return Decider("", via, refused=why)
    if approvers and not matches(decision.signed_by, approvers):
        why = f"{decision.signed_by} (by {via}) is not one of the approvers ({', '.join(approvers)})"
        return Decider(decision.signed_by, via, refused=why)
    return Decider(decision.signed_by, via)


def _from_commit(decision: Decision, approvers: list[str]) -> Decider:
    by = decision.decided_by
    if approvers and decision.fast_forward:
        why = "merged by fast-forward, so the approver is unknown: merge with --no-ff"
        return Decider(by, COMMIT_AUTHOR, refused=why)
    if approvers and not matches(by, approvers):
        why = f"{by} is not one of the approvers ({', '.join(approvers)})"
        return Decider(by, COMMIT_AUTHOR, refused=why)
    return Decider(by, COMMIT_AUTHOR)


def matches(identity: str, approvers: list[str]) -> bool:
    """Whether "Name <email>" matches an entry of `approvers` (a name, an email, or the whole identity)."""
    name, _, email = identity.partition(" <")
    email = email.rstrip(">")
    return any(a in (identity, name, email) for a in approvers)
