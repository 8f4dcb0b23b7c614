"""The `Source` kind: which commit of `main` the reconciler runs, and whether its signatures were
verified (DESIGN §10); status branch only (`status/sources/main.yaml`).

The reconciler writes it whenever it looks at a new tip of `main`: the commit it applied, the tip it
saw, and, under `signers.requireSignedMain`, the first commit that failed verification and why. A
restart continues verifying from `appliedCommit` when `verified` is true.
"""

from __future__ import annotations

from typing import Literal

from gitops_acp.resources.common import Resource, SpecModel, StatusModel
from gitops_acp.resources.meta import Condition

__all__ = ["Source", "SourceSpec", "SourceStatus"]


class SourceSpec(SpecModel):
    """What is watched: the branch people commit resources to."""

    branch: str
    """The branch (`main`, or `serve --branch`)."""


class SourceStatus(StatusModel):
    """What the reconciler applied, and what it refused."""

    status: Condition | None = None
    """Ready: the tip is applied; Error: a commit was refused and an older one runs."""
    status_detail: str | None = None
    """Which commit was applied, or which commit stopped applying and why."""
    applied_commit: str | None = None
    """The commit whose resources run."""
    head_commit: str | None = None
    """The tip of the branch when it was last read."""
    verified: bool = False
    """Whether every commit up to `appliedCommit` was checked against the allowed signers."""
    blocked_commit: str | None = None
    """The first commit refused (absent when none is)."""
    signed_by: list[str] | None = None
    """The signers of the commits verified when the tip last moved."""


class Source(Resource):
    """A `Source` resource (status branch only)."""

    kind: Literal["Source"] = "Source"
    spec: SourceSpec
    status: SourceStatus | None = None
