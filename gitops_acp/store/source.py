"""Which commit of `main` may be applied (DESIGN §10: signed `main`).

    new tip ──► git log TIP ^APPLIED, every commit with git's verdict (store/git/signatures.py)
            ──► a commit is *tainted* if it, or any of its ancestors in the range, is not signed by
                an allowed signer and not vouched for by a seal
            ──► applied = the newest commit on the tip's first-parent line that is not tainted
                (the tip itself when everything verifies; the last applied one when nothing does)

Every commit between the last applied one and the new tip is checked, not only the tip (Flux
verifies only the tip, which is how an unsigned change slips in under a signed one): a signed
commit on top never adopts a bad one beneath it. Recovering needs no history rewrite, only an
explicit act of an allowed signer: a *seal*, a commit with a good signature and the trailer

    Acp-Seal: <sha>

vouches for `<sha>` and everything beneath it (Argo CD's strict mode has the same shape). A person
seals after reviewing what the bad commit changed, e.g.
`git commit --allow-empty -S -m "Seal after review" --trailer "Acp-Seal: $(git rev-parse HEAD)"`.
The seal is itself a signed commit on `main`, so `git log` shows who adopted what, and when.

At the first start (no verified applied commit recorded in `status/sources/main.yaml`), the whole
history is walked back to its root or to a seal: a repository whose history predates signing is
adopted by one seal of its tip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gitops_acp.store.git import GitRepo
from gitops_acp.store.git.signatures import Signed, Signers, signed_log

__all__ = ["Verdict", "choose", "verify"]

#: A seal must name its commit by at least this many hex digits (git's short form).
_MIN_SEAL_PREFIX = 7


@dataclass(frozen=True)
class Verdict:
    """What verifying a new tip found."""

    tip: str
    applied: str | None  # the newest commit that may be applied (None: none verified yet)
    blocked: Signed | None = None  # the oldest refused commit on the way to the tip
    signers: tuple[str, ...] = ()  # who signed the commits checked (sorted, without repeats)
    checked: int = 0  # how many commits were checked
    sealed: tuple[str, ...] = field(default=())  # commits vouched for by seals in the range

    @property
    def verified(self) -> bool:
        """Whether the tip itself may be applied."""
        return self.applied == self.tip

    def detail(self) -> str:
        """One line for `get source`: what is applied, or what stopped and why."""
        if self.blocked is None:
            by = f", signed by {', '.join(self.signers)}" if self.signers else ""
            seal = f"; sealed {', '.join(s[:12] for s in self.sealed)}" if self.sealed else ""
            return f"verified {self.tip[:12]}: {self.checked} new commit(s){by}{seal}"
        bad = self.blocked
        where = f"applying {self.applied[:12]}" if self.applied else "nothing applied yet"
        return (
            f"commit {bad.commit[:12]} ({bad.subject[:60]!r}) is refused: {bad.why_not()}; {where}; "
            f"an allowed signer can adopt it with a signed commit carrying 'Acp-Seal: {bad.commit}'"
        )


def verify(repo: GitRepo, tip: str, *, base: str | None, signers: Signers) -> Verdict:
    """Check every commit from `base` (exclusive; None: from the root) to `tip`."""
    if tip == base:
        return Verdict(tip=tip, applied=tip)
    commits = signed_log(repo.git_dir, tip, exclude=[base] if base else [], signers=signers)
    return choose(commits, tip=tip, base=base)


def choose(commits: Sequence[Signed], *, tip: str, base: str | None) -> Verdict:
    """The verdict on `commits` (newest first, children before parents: `git log --topo-order`)."""
    by_sha = {c.commit: c for c in commits}
    if tip not in by_sha:  # the tip is already applied, or beneath what is
        return Verdict(tip=tip, applied=base if base is not None else tip)
    sealed = _sealed(commits, by_sha)
    tainted: set[str] = set()
    blocked: Signed | None = None
    for c in reversed(commits):  # parents before children
        bad = not c.good and c.commit not in sealed
        if bad and blocked is None:
            blocked = c
        if bad or any(p in tainted for p in c.parents):
            tainted.add(c.commit)
    applied: str | None = None
    current: str | None = tip
    while current is not None and current in by_sha:
        if current not in tainted:
            applied = current
            break
        parents = by_sha[current].parents
        current = parents[0] if parents else None
    else:
        applied = base  # every commit of the range on the way is tainted: stay where we were
    signers = tuple(sorted({c.signer for c in commits if c.good and c.signer}))
    return Verdict(
        tip=tip,
        applied=applied,
        blocked=blocked if applied != tip else None,
        signers=signers,
        checked=len(commits),
        sealed=tuple(sorted(s for s in sealed if s in by_sha and not by_sha[s].good)),
    )


def _sealed(commits: Sequence[Signed], by_sha: dict[str, Signed]) -> set[str]:
    """Commits of the range vouched for by a good seal: the named commit and its ancestors."""
    sealed: set[str] = set()
    for seal in commits:
        if not seal.good or not seal.seals:
            continue
        reachable = _ancestors(seal.commit, by_sha)
        for value in seal.seals:
            value = value.lower()
            if len(value) < _MIN_SEAL_PREFIX:
                continue
            named = [sha for sha in reachable if sha.startswith(value) and sha != seal.commit]
            if len(named) == 1:
                sealed |= _ancestors(named[0], by_sha)
    return sealed


def _ancestors(sha: str, by_sha: dict[str, Signed]) -> set[str]:
    """`sha` and its ancestors, within the range."""
    seen: set[str] = set()
    stack = [sha]
    while stack:
        current = stack.pop()
        if current in seen or current not in by_sha:
            continue
        seen.add(current)
        stack.extend(by_sha[current].parents)
    return seen
