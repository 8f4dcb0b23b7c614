"""The command line's basics: help everywhere, one-line errors, `task create` as a person, `init`.

Short commands are run side by side (`cli_many`): their cost is the interpreter's startup.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import git
from tests.e2e.conftest import AcpRepo, cli_many, one_error_line

pytestmark = pytest.mark.e2e

#: The commands that exist today (DESIGN §6; approve and reject are not built yet).
COMMANDS = ["init", "serve", "get", "describe", "history", "task", "validate", "demo", "llm-stub"]
_LISTED = re.compile(r"^ {4}([a-z][a-z-]*)(?:\s|$)")


def _listed_commands(help_text: str) -> list[str]:
    return [m[1] for line in help_text.splitlines() if (m := _LISTED.match(line))]


def test_help_errors_task_create_and_init(acp_repo: AcpRepo, tmp_path: Path) -> None:
    repo = str(acp_repo.path)
    main_before = acp_repo.main_sha()
    not_a_repo = tmp_path / "plain-directory"
    not_a_repo.mkdir()
    fresh = tmp_path / "fresh"
    helps = [["--help"], *([name, "--help"] for name in COMMANDS), ["task", "create", "--help"]]
    first = cli_many(
        [
            *helps,
            ["--repo", repo, "get", "widgets"],
            ["--repo", str(not_a_repo), "get", "tasks"],
            ["--repo", str(tmp_path / "does-not-exist"), "describe", "task", "x"],
            ["init", str(fresh)],
            ["--repo", repo, "task", "create", "hello", "--agent", "e2e-agent", "--message", "Hi there"],
        ]
    )
    help_results, (unknown_kind, plain_dir, missing_dir, init, create) = (
        first[: len(helps)],
        first[len(helps) :],
    )

    # Every command's --help exits 0 and describes that command.
    for argv, result in zip(helps, help_results, strict=True):
        assert result.returncode == 0, (argv, result.stderr)
        assert result.stdout.startswith("usage: gitops-acp"), argv
        assert result.stderr == "", argv
    top = help_results[0].stdout
    listed = _listed_commands(top)
    assert set(COMMANDS) <= set(listed), listed
    for name, result in zip(COMMANDS, help_results[1:], strict=False):
        assert result.stdout.startswith(f"usage: gitops-acp {name} "), result.stdout

    # Errors: exit 1, one line, `error: ...`, and it names what was wrong.
    assert "widgets" in one_error_line(unknown_kind)
    assert str(not_a_repo) in one_error_line(plain_dir)
    assert "does-not-exist" in one_error_line(missing_dir)

    # task create: a commit on main, through the work tree, by the local git user.
    assert create.returncode == 0, create.stderr
    main_after = acp_repo.main_sha()
    assert git(acp_repo.path, "rev-parse", f"{main_after}^") == main_before
    assert (
        git(acp_repo.path, "log", "-1", "--format=%an <%ae>", main_after) == "Test Human <human@example.com>"
    )
    assert (
        git(acp_repo.path, "diff-tree", "--no-commit-id", "--name-only", "-r", main_after)
        == "tasks/hello.yaml"
    )
    task = yaml.safe_load(git(acp_repo.path, "show", f"{main_after}:tasks/hello.yaml"))
    assert task["kind"] == "Task"
    assert task["metadata"]["name"] == "hello"
    assert task["spec"] == {"agentRef": {"name": "e2e-agent"}, "userMessage": "Hi there"}
    assert git(acp_repo.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert (acp_repo.path / "tasks" / "hello.yaml").is_file()  # the work tree follows main

    # init: a repository with the examples committed on main, which validates.
    assert init.returncode == 0, init.stderr
    assert git(fresh, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(fresh, "ls-files")
    assert git(fresh, "status", "--porcelain") == ""

    # Uncommitted work is never swept into a commit made for a person.
    mine = "# my draft, not committed yet\n"
    (acp_repo.path / "tasks" / "draft.yaml").write_text(mine)
    (fresh / "NOTES.md").write_text("staged, not committed\n")
    git(fresh, "add", "NOTES.md")
    fresh_main = git(fresh, "rev-parse", "refs/heads/main")
    extra = [[name, "--help"] for name in listed if name not in COMMANDS]
    second = cli_many(
        [
            ["--repo", str(fresh), "validate"],
            ["--repo", repo, "task", "create", "draft", "--agent", "e2e-agent", "--message", "Overwrite?"],
            ["--repo", str(fresh), "task", "create", "mixed", "--agent", "my-assistant", "--message", "Hi"],
            *extra,
        ]
    )
    validate, untracked, staged = second[:3]
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert validate.stdout.startswith("ok: ")

    assert "draft.yaml" in one_error_line(untracked)
    assert (acp_repo.path / "tasks" / "draft.yaml").read_text() == mine
    assert acp_repo.main_sha() == main_after

    one_error_line(staged)
    assert git(fresh, "rev-parse", "refs/heads/main") == fresh_main
    assert git(fresh, "diff", "--cached", "--name-only") == "NOTES.md"

    for argv, result in zip(extra, second[3:], strict=True):
        assert result.returncode == 0, (argv, result.stderr)
