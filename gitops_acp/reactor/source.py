"""The commit of `main` the reconciler applies, and its record `status/sources/main.yaml` (DESIGN §10).

    main moved to TIP ──► signers.requireSignedMain? ── no: apply TIP (Source verified: false)
                              │ yes
                              ▼
                          store/source.verify(TIP, base = last verified applied commit)
                              ├─ every commit good (or sealed) ──► apply TIP, Source Ready
                              └─ a commit refused ──► apply the newest clean commit before it (or
                                 keep the last one), Source Error naming the commit and why

The Source status is a checkpoint like any other (queued, so a status branch that cannot be written
delays it without stopping anything); a restart resumes verifying from the recorded
`appliedCommit`, never from the tip, and a restart before it landed verifies from the one before
(the same verdict, one range longer).
Blocking work (`verify`) runs on the reactor's git thread.
"""

from __future__ import annotations

import logging

from gitops_acp.policy import Policy
from gitops_acp.resources.meta import Condition
from gitops_acp.resources.models import AnyResource, ObjectMeta, Source, SourceSpec, SourceStatus
from gitops_acp.store import source
from gitops_acp.store.git import GitRepo, signatures
from gitops_acp.store.git.signatures import Signers

__all__ = ["SOURCE_NAME", "SourceGate"]

log = logging.getLogger("gitops_acp")

#: The Source's name: one per served branch; the status file is `status/sources/main.yaml`.
SOURCE_NAME = "main"


class SourceGate:
    """Decides which commit of the watched branch is applied; remembers the last verified one."""

    def __init__(self, policy: Policy | None, branch: str) -> None:
        self.branch = branch
        self.required = policy is not None and policy.require_signed_main
        self.signers = (
            Signers(policy.allowed_signers_file, policy.gpg_home)
            if policy is not None and policy.has_signers
            else None
        )
        key = policy.signing_key if policy is not None else None
        self.sign = signatures.ssh_signer(key) if key is not None else None  # the reconciler's proposals
        self.head: str | None = None  # the tip last looked at
        self.last: source.Verdict | None = None  # what looking at it decided
        self._base: str | None = None  # the last applied commit whose history was verified
        self._blocked: str | None = None  # the commit refused last time (logged once)

    def resume(self, recorded: AnyResource | None) -> None:
        """Continue from the Source status of the last run: its applied commit, if it was verified."""
        if not self.required or not isinstance(recorded, Source) or recorded.status is None:
            return
        status = recorded.status
        if status.verified and status.applied_commit:
            self._base = status.applied_commit

    def check(self, repo: GitRepo, tip: str) -> source.Verdict:
        """The verdict on a new tip (blocking: the git thread). Without requireSignedMain: apply it."""
        self.head = tip
        if not self.required or self.signers is None:
            self.last = source.Verdict(tip=tip, applied=tip)
            return self.last
        verdict = source.verify(repo, tip, base=self._base, signers=self.signers)
        if verdict.applied is not None:
            self._base = verdict.applied
        blocked = verdict.blocked.commit if verdict.blocked is not None else None
        if blocked is not None and blocked != self._blocked:
            log.error("%s: %s", self.branch, verdict.detail())
        elif blocked is None and self._blocked is not None:
            log.info("%s: %s", self.branch, verdict.detail())
        self._blocked = blocked
        self.last = verdict
        return verdict

    def record(self) -> Source | None:
        """The Source resource that says what the last verdict applied (None: no verdict yet)."""
        verdict = self.last
        if verdict is None:
            return None
        if not self.required:
            detail = f"applied {verdict.tip[:12]}; signatures not checked (no signers.requireSignedMain)"
            status = SourceStatus(
                status=Condition.Ready,
                status_detail=detail,
                applied_commit=verdict.applied,
                head_commit=verdict.tip,
                verified=False,
            )
        else:
            status = SourceStatus(
                status=Condition.Ready if verdict.verified else Condition.Error,
                status_detail=verdict.detail(),
                applied_commit=verdict.applied,
                head_commit=verdict.tip,
                verified=verdict.applied is not None,
                blocked_commit=verdict.blocked.commit if verdict.blocked is not None else None,
                signed_by=list(verdict.signers) or None,
            )
        return Source(
            metadata=ObjectMeta(name=SOURCE_NAME), spec=SourceSpec(branch=self.branch), status=status
        )
