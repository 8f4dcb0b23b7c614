"""Commit signatures as git itself verifies them (`git verify-commit` semantics), many in one process.

    git -c gpg.ssh.allowedSignersFile=F log --topo-order --format=<sha, parents, %G?, signer, key,
        Acp-Seal trailers> TIP ^BASE          (GNUPGHOME=<gpg home> when a keyring is configured)

`%G?` is git's verdict per commit: G good signature by a known signer; U good signature by a key
nobody vouched for (ssh: not in the allowed signers file; gpg: a key of unknown trust); N none;
B bad (the commit was changed after signing); X/Y expired signature/key; R revoked key; E cannot
be checked (no ssh-keygen or gpg, a missing key). Only G counts as signed. git picks ssh or gpg
from the signature itself, so both work side by side; ssh needs `ssh-keygen`, gpg needs `gpg`.

One `git log` for the whole range verifies every commit in it (one ssh-keygen or gpg call per
signed commit, a few milliseconds each: GIT-NOTES). Nothing here decides what to apply; that is
`store/source.py`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitops_acp.errors import StoreError
from gitops_acp.store.git import process

__all__ = ["SEAL_TRAILER", "Signed", "Signers", "signed_log", "ssh_signer", "verdict_of"]

# `git commit -S --trailer "Acp-Seal: <sha>"`: a signer vouches for <sha> and everything beneath it.
SEAL_TRAILER = "Acp-Seal"
_FIELDS = ("%H", "%P", "%G?", "%GS", "%GK", f"%(trailers:key={SEAL_TRAILER},valueonly,separator=%x20)", "%s")
_FORMAT = "%x1e" + "%x1f".join(_FIELDS)


@dataclass(frozen=True)
class Signers:
    """Who may sign: git's ssh allowed-signers file and/or a gpg home holding the trusted keys."""

    allowed_signers_file: Path | None = None
    gpg_home: Path | None = None

    def config(self) -> list[str]:
        """The `-c` options that point git's verification at the allowed signers and nothing else:
        the reconciler user's own git config or keyring must never vouch for anyone."""
        allowed = self.allowed_signers_file or "/dev/null"  # empty: no ssh key is allowed
        options = [f"gpg.ssh.allowedSignersFile={allowed}", "gpg.x509.program=false"]
        if self.gpg_home is None:
            options.append("gpg.openpgp.program=false")  # no gpg home: a gpg signature cannot be checked
        else:
            options.append("gpg.openpgp.program=gpg")
        return [arg for option in options for arg in ("-c", option)]

    def env(self) -> dict[str, str]:
        """The environment for git's gpg: the configured home, or none that could vouch for anyone."""
        return {"GNUPGHOME": str(self.gpg_home)} if self.gpg_home is not None else {}


@dataclass(frozen=True)
class Signed:
    """One commit and git's verdict on its signature."""

    commit: str
    parents: tuple[str, ...]
    verdict: str  # %G?
    signer: str  # %GS: the ssh principal or the gpg user id ("" when unsigned or unknown)
    key: str  # %GK: the key's fingerprint or id
    seals: tuple[str, ...]  # values of Acp-Seal trailers
    subject: str

    @property
    def good(self) -> bool:
        """Signed by an allowed signer, and unchanged since."""
        return self.verdict == "G"

    def why_not(self) -> str:
        """Why this commit does not count as signed, in a few words."""
        return _VERDICTS.get(self.verdict, f"signature status {self.verdict!r}")


_VERDICTS = {
    "G": "good signature",
    "U": "signed by a key that is not an allowed signer",
    "N": "not signed",
    "B": "bad signature (the commit was changed after it was signed)",
    "X": "the signature has expired",
    "Y": "signed by an expired key",
    "R": "signed by a revoked key",
    "E": "the signature cannot be checked (missing key, or no ssh-keygen/gpg)",
}


def verdict_of(git_dir: Path, commit: str, *, signers: Signers) -> Signed:
    """Git's verdict on one commit's signature."""
    found = _log(git_dir, ["--no-walk", commit], signers)
    if not found:
        raise ValueError(f"no commit {commit}")
    return found[0]


def signed_log(git_dir: Path, tip: str, *, exclude: Sequence[str] = (), signers: Signers) -> list[Signed]:
    """Every commit reachable from `tip` and not from `exclude`, newest first (children before
    parents), each with git's verdict on its signature."""
    return _log(git_dir, ["--topo-order", tip, *(f"^{sha}" for sha in exclude)], signers)


def _log(git_dir: Path, revisions: Sequence[str], signers: Signers) -> list[Signed]:
    args = [*signers.config(), f"--git-dir={git_dir}", "log", f"--format={_FORMAT}", *revisions, "--"]
    proc = process.run(args, cwd=git_dir, extra_env=signers.env())
    commits: list[Signed] = []
    for record in proc.stdout.decode("utf-8", "replace").split("\x1e"):
        if not record.strip():
            continue
        sha, parents, verdict, signer, key, seals, subject = (record.split("\x1f") + [""] * 7)[:7]
        commits.append(
            Signed(
                commit=sha.strip(),
                parents=tuple(parents.split()),
                verdict=verdict.strip() or "N",
                signer=signer.strip(),
                key=key.strip(),
                seals=tuple(seals.split()),
                subject=subject.strip(),
            )
        )
    return commits


def ssh_signer(key: Path) -> Callable[[bytes], bytes]:
    """Signs commit contents with the ssh private key `key`, as `git commit -S` with
    `gpg.format=ssh` does (`ssh-keygen -Y sign -n git`)."""

    def sign(data: bytes) -> bytes:
        try:
            proc = subprocess.run(
                ["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(key)],
                input=data,
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StoreError(f"cannot sign with {key}: {exc}") from exc
        if proc.returncode != 0 or b"BEGIN SSH SIGNATURE" not in proc.stdout:
            message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise StoreError(f"cannot sign with {key}: {message[-1] if message else proc.returncode}")
        return proc.stdout

    return sign
