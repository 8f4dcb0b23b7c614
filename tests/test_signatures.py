"""Commit signatures as git verifies them, and which commit of main may be applied (store/source.py).

Keys are made by ssh-keygen in the test; commits are made by git (`commit -S`) and by our own writer
(`write_commit(sign=...)`), and checked by git's `%G?`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gitops_acp.store import source
from gitops_acp.store.git import GitRepo
from gitops_acp.store.git.signatures import Signers, signed_log, ssh_signer, verdict_of
from tests.conftest import git


def _key(base: Path, name: str) -> Path:
    path = base / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path


class Repo:
    """A repository where people commit signed or not; `main` is its only branch."""

    def __init__(self, base: Path) -> None:
        self.path = base / "repo"
        self.path.mkdir()
        git(self.path, "init", "-q", "-b", "main")
        self.alice = _key(base, "alice")
        self.mallory = _key(base, "mallory")
        self.allowed = base / "allowed_signers"
        self.allowed.write_text(f"alice@example.com {Path(f'{self.alice}.pub').read_text()}")
        self.signers = Signers(self.allowed)

    def commit(self, message: str, *, key: Path | None = None, trailer: str | None = None) -> str:
        args = ["-c", "gpg.format=ssh"]
        if key is not None:
            args += ["-c", f"user.signingkey={key}"]
        args += ["commit", "-q", "--allow-empty", "-m", message]
        if key is not None:
            args.append("-S")
        if trailer:
            args += ["--trailer", trailer]
        git(self.path, *args)
        return self.head()

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def verdict(self, tip: str, base: str | None) -> source.Verdict:
        with GitRepo.open(self.path) as repo:
            return source.verify(repo, tip, base=base, signers=self.signers)


@pytest.fixture
def r(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_git_verdicts_good_unknown_unsigned_and_tampered(r: Repo) -> None:
    good = r.commit("alice", key=r.alice)
    unknown = r.commit("mallory", key=r.mallory)
    unsigned = r.commit("nobody")
    # The same commit with its message changed after signing: the signature no longer matches.
    raw = git(r.path, "cat-file", "commit", good).replace("\nalice", "\nalice, edited")
    tampered = subprocess.run(
        ["git", "hash-object", "-w", "-t", "commit", "--stdin"],
        input=raw + "\n",
        cwd=r.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    found = {s.commit: s for s in signed_log(r.path / ".git", unsigned, signers=r.signers)}
    assert found[good].verdict == "G"
    assert found[good].signer == "alice@example.com"
    assert found[unknown].verdict == "U"
    assert not found[unknown].good
    assert found[unsigned].verdict == "N"
    bad = verdict_of(r.path / ".git", tampered, signers=r.signers)
    assert bad.verdict == "B"
    assert "changed after it was signed" in bad.why_not()


def test_our_own_writer_signs_commits_git_accepts(r: Repo) -> None:
    tip = r.commit("start", key=r.alice)
    with GitRepo.open(r.path) as repo:
        sha = repo.write_commit(
            tree=repo.tree_of(tip),
            parents=[tip],
            message="proposal\n\nwith a body",
            author=("bot", "bot@example.com"),
            sign=ssh_signer(r.alice),
        )
    assert verdict_of(r.path / ".git", sha, signers=r.signers).verdict == "G"
    # git's own check agrees
    check = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={r.allowed}", "verify-commit", sha],
        cwd=r.path,
        capture_output=True,
    )
    assert check.returncode == 0, check.stderr


def test_everything_signed_applies_the_tip(r: Repo) -> None:
    base = r.commit("one", key=r.alice)
    r.commit("two", key=r.alice)
    tip = r.commit("three", key=r.alice)
    verdict = r.verdict(tip, base)
    assert verdict.verified
    assert verdict.applied == tip
    assert verdict.checked == 2
    assert verdict.signers == ("alice@example.com",)


def test_a_signed_commit_on_top_of_an_unsigned_one_is_not_applied(r: Repo) -> None:
    base = r.commit("one", key=r.alice)
    good = r.commit("two", key=r.alice)
    bad = r.commit("unsigned")
    tip = r.commit("on top", key=r.alice)
    verdict = r.verdict(tip, base)
    assert verdict.applied == good  # right before the first bad commit
    assert verdict.blocked is not None
    assert verdict.blocked.commit == bad
    assert not verdict.verified
    assert f"commit {bad[:12]}" in verdict.detail()
    assert "not signed" in verdict.detail()


def test_nothing_new_verified_keeps_the_base(r: Repo) -> None:
    base = r.commit("one", key=r.alice)
    tip = r.commit("mallory", key=r.mallory)
    assert r.verdict(tip, base).applied == base


def test_first_start_walks_to_the_root_and_a_seal_adopts_history(r: Repo) -> None:
    old = r.commit("before signing")
    tip = r.commit("signed", key=r.alice)
    assert r.verdict(tip, None).applied is None  # nothing verifies: nothing is applied
    seal = r.commit("adopt", key=r.alice, trailer=f"Acp-Seal: {old[:10]}")
    verdict = r.verdict(seal, None)
    assert verdict.applied == seal
    assert verdict.sealed == (old,)


def test_a_seal_by_someone_not_allowed_or_naming_nothing_adopts_nothing(r: Repo) -> None:
    base = r.commit("one", key=r.alice)
    bad = r.commit("unsigned")
    r.commit("mallory seals", key=r.mallory, trailer=f"Acp-Seal: {bad}")
    tip = r.commit("short seal", key=r.alice, trailer=f"Acp-Seal: {bad[:4]}")
    verdict = r.verdict(tip, base)
    assert verdict.applied == base
    assert verdict.blocked is not None
    assert verdict.blocked.commit == bad


def test_a_bad_commit_on_a_merged_branch_taints_the_merge(r: Repo) -> None:
    base = r.commit("one", key=r.alice)
    git(r.path, "checkout", "-q", "-b", "feature")
    r.commit("feature, unsigned")
    git(r.path, "checkout", "-q", "main")
    good = r.commit("main moves on", key=r.alice)
    git(
        r.path,
        "-c",
        "gpg.format=ssh",
        "-c",
        f"user.signingkey={r.alice}",
        "merge",
        "-q",
        "--no-ff",
        "-S",
        "-m",
        "merge feature",
        "feature",
    )
    merge = r.head()
    verdict = r.verdict(merge, base)
    assert verdict.applied == good  # the first-parent line stops before the tainted merge


def test_choose_without_new_commits_stays(r: Repo) -> None:
    base = r.commit("one", key=r.alice)
    assert r.verdict(base, base).applied == base


def _gpg(home: Path, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        ["gpg", "--batch", "--quiet", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GNUPGHOME": str(home)},
    )
    return out.stdout


def test_gpg_signatures_count_when_the_key_is_trusted_in_the_configured_home(tmp_path: Path) -> None:
    """gpg: the keyring of `signers.gpgHome` is the list of allowed signers, and only a key it
    trusts counts (an imported key of unknown trust is `U`, like an ssh key not in the file)."""
    signer, operator = tmp_path / "carol-gnupg", tmp_path / "acp-gnupg"
    for home in (signer, operator):
        home.mkdir(mode=0o700)
    try:
        _gpg(
            signer,
            "--passphrase",
            "",
            "--quick-gen-key",
            "Carol <carol@example.com>",
            "ed25519",
            "sign",
            "never",
        )
        fingerprint = next(
            line.split(":")[9]
            for line in _gpg(signer, "--with-colons", "--list-keys", "carol@example.com").splitlines()
            if line.startswith("fpr:")
        )
        repo = tmp_path / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        subprocess.run(
            [
                "git",
                "-c",
                f"user.signingkey={fingerprint}",
                "commit",
                "-q",
                "--allow-empty",
                "-S",
                "-m",
                "gpg",
            ],
            cwd=repo,
            check=True,
            env={**os.environ, "GNUPGHOME": str(signer)},
        )
        sha = git(repo, "rev-parse", "HEAD")
        signers = Signers(gpg_home=operator)
        assert verdict_of(repo / ".git", sha, signers=signers).verdict in ("E", "N")  # key unknown
        _gpg(operator, "--import", stdin=_gpg(signer, "--export", "--armor", fingerprint))
        assert verdict_of(repo / ".git", sha, signers=signers).verdict == "U"  # known, not trusted
        _gpg(operator, "--import-ownertrust", stdin=f"{fingerprint}:6:\n")
        good = verdict_of(repo / ".git", sha, signers=signers)
        assert good.good
        assert good.signer == "Carol <carol@example.com>"
        # Without a gpg home, gpg signatures count for nothing, even from a keyring that trusts the key.
        os.environ["GNUPGHOME"] = str(operator)
        try:
            assert not verdict_of(repo / ".git", sha, signers=Signers(tmp_path / "allowed")).good
        finally:
            del os.environ["GNUPGHOME"]
    finally:
        for home in (signer, operator):  # gpg starts an agent per home: stop it
            subprocess.run(
                ["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False
            )
