"""The example resources `init` and `demo` commit.

They live in `example-repo/` in a checkout, and in `gitops_acp/examples` in a wheel.
"""

from __future__ import annotations

from pathlib import Path

from gitops_acp.errors import ACPError

__all__ = ["example_files"]


def _root() -> Path:
    packaged = Path(__file__).resolve().parents[1] / "examples"  # the wheel maps example-repo/ here
    checkout = Path(__file__).resolve().parents[2] / "example-repo"
    for candidate in (packaged, checkout):
        if candidate.is_dir():
            return candidate
    raise ACPError("the example resources are missing from this installation (example-repo/)")


def example_files(variant: str) -> dict[str, bytes]:
    """The files of one example set (`getting-started` or `offline`), keyed by repository path."""
    base = _root() / variant
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*.yaml"))}
