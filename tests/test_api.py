"""The API's parts in-process: the tokens file, authentication and roles, and the writer of main
(group commit, compare-and-swap lost to another writer, a conflict refused for one request only)
on real git repositories. The whole API, served, is tests/e2e/test_api.py."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path

import pytest

from gitops_acp.api import tokens
from gitops_acp.api.errors import ApiError
from gitops_acp.api.tokens import Caller
from gitops_acp.api.writer import Base, Edit, MainWriter
from gitops_acp.errors import UserError
from tests.conftest import git

SHA = hashlib.sha256(b"s3cret-token").hexdigest()


def entry(**changes: object) -> str:
    fields = {"name": "Alice", "email": "alice@example.com", "roles": "[operator]", "sha256": SHA, **changes}
    return "- " + "\n  ".join(f"{key}: {value}" for key, value in fields.items() if value is not None) + "\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: Alice\n", "expected a YAML list of {name, email, roles, sha256} entries"),
        ("- just a string\n", "entry 1: expected a mapping with name, email, roles, sha256"),
        (entry(email=None), "entry 1 (Alice): email: missing"),
        (
            entry(token="abc"),
            "entry 1 (Alice): token: unknown field; allowed: name, email, roles, sha256 "
            "(write the token's sha256, never the token)",
        ),
        (entry(email="alice"), "entry 1 (Alice): email: expected an e-mail address"),
        (
            entry(roles="[admin]"),
            "entry 1 (Alice): roles: 'admin' is not a role; use viewer, operator, approver",
        ),
        (entry(roles="[]"), "entry 1 (Alice): roles: expected a list of viewer, operator, approver"),
        (entry(sha256="s3cret-token"), "entry 1 (Alice): sha256: expected 64 hex digits"),
        (entry(name='"Eve <eve@x>"'), "entry 1 (Eve <eve@x>): name: expected a person's name"),
        (entry() + entry(name="Bob"), "entry 2 (Bob): sha256: the same token as entry 1"),
        ("- [unclosed\n", "not YAML"),
    ],
)
def test_a_bad_tokens_file_is_one_line_naming_file_entry_and_field(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        tokens.load(path)
    message = str(caught.value)
    assert message.startswith(f"--api-tokens {path}: ")
    assert says in message
    assert "\n" not in message
    assert "s3cret-token" not in message.replace("sha256: expected", "")  # a token is never echoed


def test_a_missing_tokens_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"tokens.yaml: cannot read it \(No such file or directory\)"):
        tokens.load(tmp_path / "tokens.yaml")


def test_authentication_by_sha256_and_roles(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    viewer = hashlib.sha256(b"viewer-token").hexdigest()
    path.write_text(
        entry(roles="[operator]")
        + entry(name="Vic", email="vic@example.com", roles="[viewer]", sha256=viewer.upper())
        + entry(name="Ann", email="ann@example.com", roles="[approver]", sha256=tokens.digest("ann"))
    )
    loaded = tokens.load(path)
    assert len(loaded) == 3
    alice = loaded.authenticate("Bearer s3cret-token")
    assert alice == Caller("Alice", "alice@example.com", frozenset({"operator", "viewer"}))
    assert str(alice) == "Alice <alice@example.com>"
    assert loaded.authenticate("bearer   viewer-token ") is not None  # scheme case, spaces
    vic = loaded.authenticate("Bearer viewer-token")
    assert vic is not None
    assert vic.roles == {"viewer"}
    ann = loaded.authenticate("Bearer ann")
    assert ann is not None
    assert ann.has("viewer")
    assert ann.has("approver")
    assert not ann.has("operator")
    for header in (None, "", "Bearer", "Bearer wrong", "Basic s3cret-token", "s3cret-token", f"Bearer {SHA}"):
        assert loaded.authenticate(header) is None, header


# -- the writer of main, on a real bare repository ------------------------------------------------

ALICE = Caller("Alice", "alice@example.com", frozenset({"operator"}))
BOB = Caller("Bob", "bob@example.com", frozenset({"operator"}))
SERVICE = ("gitops-acp", "gitops-acp@localhost")


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "README").write_text("hello\n")
    git(work, "add", "README")
    git(work, "commit", "-q", "-m", "first")
    path = tmp_path / "served.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(path))
    return path


def adding(caller: Caller, name: str, *, hook: object = None) -> Edit:
    def prepare(base: Base) -> dict[str, bytes | None]:
        if callable(hook):
            hook()
        path = f"tasks/{name}.yaml"
        if path in base.taken or (base.commit and base.repo.read_file(base.commit, path) is not None):
            raise ApiError(409, f"{path} exists")
        return {path: f"name: {name}\n".encode()}

    return Edit(caller=caller, subject=f"Add task {name}", prepare=prepare)


def test_concurrent_edits_are_one_commit_per_caller_on_a_fast_forward(bare: Path) -> None:
    before = git(bare, "rev-parse", "main")
    pokes: list[int] = []
    writer = MainWriter(bare, branch="main", committer=SERVICE, on_commit=lambda: pokes.append(1))

    async def run() -> list[str]:
        edits = [adding(ALICE, f"a{i}") for i in range(5)] + [adding(BOB, "b0"), adding(ALICE, "a0")]
        results = await asyncio.gather(*(writer.submit(e) for e in edits), return_exceptions=True)
        await writer.aclose()
        return [r if isinstance(r, str) else f"{r.code}: {r.message}" for r in results]  # type: ignore[union-attr]

    results = asyncio.run(run())
    assert results[-1] == "409: tasks/a0.yaml exists"  # that request alone
    commits = git(bare, "rev-list", "--reverse", f"{before}..main").splitlines()
    assert len(commits) == 2  # seven requests, two callers: two commits, chained
    assert git(bare, "log", "--format=%an|%cn|%s", f"{before}..main").splitlines() == [
        "Bob|gitops-acp|Add task b0",
        "Alice|gitops-acp|Add 5 tasks",
    ]
    assert set(results[:5]) == {commits[0]}
    assert results[5] == commits[1]
    assert pokes == [1]
    assert git(bare, "rev-parse", f"{commits[0]}^") == before


def test_a_moved_main_is_rebuilt_upon_and_a_name_taken_meanwhile_is_409(bare: Path, tmp_path: Path) -> None:
    before = git(bare, "rev-parse", "main")
    moved: list[str] = []

    def someone_pushes() -> None:
        """Another writer commits tasks/taken.yaml to main while the batch is being built (once)."""
        if moved:
            return
        blob = (
            subprocess.run(
                ["git", "hash-object", "-w", "--stdin"],
                cwd=bare,
                input=b"mine\n",
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        tree = (
            subprocess.run(
                ["git", "mktree"],
                cwd=bare,
                input=f"100644 blob {blob}\ttaken.yaml\n".encode(),
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        root = git(bare, "rev-parse", "main^{tree}")
        listing = git(bare, "ls-tree", root) + f"\n040000 tree {tree}\ttasks\n"
        new_root = (
            subprocess.run(
                ["git", "mktree"], cwd=bare, input=listing.encode(), capture_output=True, check=True
            )
            .stdout.decode()
            .strip()
        )
        commit = git(bare, "commit-tree", new_root, "-p", before, "-m", "someone else")
        git(bare, "update-ref", "refs/heads/main", commit, before)
        moved.append(commit)

    writer = MainWriter(bare, branch="main", committer=SERVICE)

    async def run() -> list[object]:
        edits = [adding(ALICE, "mine", hook=someone_pushes), adding(ALICE, "taken")]
        results = await asyncio.gather(*(writer.submit(e) for e in edits), return_exceptions=True)
        await writer.aclose()
        return results

    first, second = asyncio.run(run())
    assert isinstance(second, ApiError)
    assert (second.code, second.message) == (409, "tasks/taken.yaml exists")
    assert isinstance(first, str)
    assert git(bare, "rev-parse", "main") == first
    assert git(bare, "rev-parse", f"{first}^") == moved[0]  # rebuilt on the other writer's commit
    assert git(bare, "show", "main:tasks/taken.yaml") == "mine"  # theirs, untouched
    assert git(bare, "show", "main:tasks/mine.yaml") == "name: mine"


def test_writes_refused_by_policy_are_409_before_anything(bare: Path) -> None:
    writer = MainWriter(bare, branch="main", committer=SERVICE, refused="main must be signed")

    async def run() -> ApiError:
        try:
            await writer.submit(adding(ALICE, "x"))
        except ApiError as exc:
            return exc
        finally:
            await writer.aclose()
        raise AssertionError("not refused")

    error = asyncio.run(run())
    assert (error.code, error.message) == (409, "main must be signed")


def test_with_a_signing_key_every_commit_is_signed_and_verifies(bare: Path, tmp_path: Path) -> None:
    from gitops_acp.store.git import signatures

    key = tmp_path / "serve-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "serve", "-f", str(key)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"serve@example.com {Path(f'{key}.pub').read_text().strip()}\n")
    writer = MainWriter(bare, branch="main", committer=SERVICE, sign=signatures.ssh_signer(key))

    async def run() -> str:
        try:
            return await writer.submit(adding(ALICE, "signed"))
        finally:
            await writer.aclose()

    sha = asyncio.run(run())
    verified = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", sha],
        cwd=bare,
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr
    assert 'Good "git" signature for serve@example.com' in verified.stderr
    assert git(bare, "log", "-1", "--format=%an <%ae>|%cn", sha) == "Alice <alice@example.com>|gitops-acp"


def test_signed_commits_are_never_made_through_a_work_tree(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "commit", "-q", "--allow-empty", "-m", "first")
    writer = MainWriter(work, branch="main", committer=SERVICE, sign=lambda data: b"")

    async def run() -> object:
        try:
            return await writer.submit(adding(ALICE, "x"))
        except ApiError as exc:
            return exc
        finally:
            await writer.aclose()

    error = asyncio.run(run())
    assert isinstance(error, ApiError)
    assert error.code == 409
    assert f"main must be signed and is checked out in {work}" in error.message
    assert git(work, "rev-list", "--count", "main") == "1"
