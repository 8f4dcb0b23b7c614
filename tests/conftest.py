"""Shared fixtures: an isolated HOME and git identity, and real git repositories in temp dirs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gitops_acp import redaction
from tests.fakes import openapi
from tests.fakes.openapi import GitHubOpenAPI


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every test its own HOME, git config and identity, so the developer's config never leaks in."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Human")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "human@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Human")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "human@example.com")
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test Human\n\temail = human@example.com\n[init]\n\tdefaultBranch = main\n"
    )


@pytest.fixture(autouse=True)
def forget_secrets() -> None:
    """Each test starts with no secret value known to the redaction (one process runs them all)."""
    redaction.clear()


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its stdout (raises on failure)."""
    out = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=os.environ.copy()
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A new non-bare repository with `main` checked out and one empty commit."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "commit", "-q", "--allow-empty", "-m", "initial")
    return path


def commit_files(repo: Path, files: dict[str, str], message: str = "update") -> str:
    """Write files into the work tree of `repo`, commit them on the current branch, return the sha."""
    for rel, text in files.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git(repo, "add", rel)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="session")
def github_openapi() -> GitHubOpenAPI:
    """GitHub's OpenAPI description (npm @octokit/openapi), cut down and built once per session."""
    path = openapi.spec_path()
    if path is None:
        pytest.fail(openapi.install_hint())
    return openapi.GitHubOpenAPI.load(path)
