"""Commits made for a person: `task create`, `approve`, `respond`, `init`, `demo`, and the HTTP API.

The reconciler writes its own commits through ``GitRepo`` (objects, then a compare-and-swap on a
ref). A person's commit is different: it must look and behave as if they had typed ``git add`` and
``git commit`` themselves (their identity, their hooks, their working tree left consistent), so
these go through that working tree, or through a temporary clone and a push when the branch is
not checked out anywhere (a bare repository, a URL). They only run git, through
``store/git/process.py``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from gitops_acp.errors import StoreError
from gitops_acp.store.git import GitRepo, is_url, process

__all__ = ["checked_out_at", "commit_as_user", "commit_in_work_tree", "git_as_user", "init_repository"]

# States of a working tree in which `git commit` would not make an ordinary one-parent commit.
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or git am",
}


def git_as_user(work: Path, *args: str, identity: tuple[str, str] | None = None) -> str:
    """Run one git command in the working tree `work` as a person would; return what it printed.

    `identity` (name, email) makes that person the author and committer (the demo's reviewer
    merging an approval branch). The reconciler never calls this.
    """
    people = {}
    if identity is not None:
        name, email = identity
        people = {
            f"GIT_{role}_{field}": value
            for role in ("AUTHOR", "COMMITTER")
            for field, value in (("NAME", name), ("EMAIL", email))
        }
    return process.run(list(args), cwd=work, extra_env=people).stdout.decode("utf-8", "replace").strip()


def commit_as_user(
    path: str | Path, *, files: Mapping[str, bytes | None], message: str, branch: str = "main"
) -> str:
    """Commit `files` (path -> content, None deletes) on `branch` as the local git user; return the sha.

    Where `branch` is checked out, this goes through that working tree with `git add` and `git
    commit` (hooks run, as for the person), refusing when the index has staged changes or those
    paths have uncommitted ones. Otherwise (a bare repository, a branch not checked out, a URL)
    it commits in a temporary clone and pushes, redoing the commit if someone pushed first. When
    the files already have that content nothing is committed and the branch's tip is returned.
    """
    if not files:
        raise StoreError("nothing to commit: no files given")
    _check_paths(list(files))
    target = str(path)
    if is_url(target) and not Path(target).exists():
        return _commit_via_clone(target, files, message, branch, ())
    with GitRepo.open(path) as repo:
        work = _checked_out_at(repo, branch)
        if work is not None:
            return _commit_in_work_tree(work, files, message)
        # The clone would not see this repository's own identity and signing settings (only the
        # global ones): a person who signs their commits here signs this one too (signed main).
        identity: list[str] = []
        for key in ("user.name", "user.email", "user.signingkey", "gpg.format", "commit.gpgsign"):
            value = repo.config(key)
            if value:
                identity += ["-c", f"{key}={value}"]
        return _commit_via_clone(str(repo.common_dir), files, message, branch, identity)


def init_repository(path: str | Path, *, files: Mapping[str, bytes], message: str) -> str:
    """Create a repository at `path` on main with `files` committed as the local user; return the sha."""
    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise StoreError(f"{root} already exists and is not an empty directory")
    _check_paths(list(files))
    root.mkdir(parents=True, exist_ok=True)
    process.run(["init", "-q", "-b", "main", "."], cwd=root)  # `.`: `root` may be relative to us
    _write_files(root, files)
    if files:
        process.run(["--literal-pathspecs", "add", "--force", "--", *files], cwd=root)
    process.run(["commit", "-q", "--allow-empty", "-F", "-"], cwd=root, stdin=message.encode("utf-8"))
    return process.run(["rev-parse", "HEAD"], cwd=root).stdout.decode().strip()


def _check_paths(paths: Sequence[str]) -> None:
    for path in paths:
        parts = PurePosixPath(path).parts
        if (
            not path
            or path.startswith("/")
            or "\\" in path
            or any(p in ("..", ".", ".git") for p in parts)
            or any(c in path for c in "\0\n")
        ):
            raise StoreError(f"invalid repository path {path!r}: must be relative, inside the repository")


def _write_files(root: Path, files: Mapping[str, bytes | None]) -> None:
    for rel, data in files.items():
        target = root / rel
        if data is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _stage_and_commit(
    work: Path,
    files: Mapping[str, bytes | None],
    message: str,
    config: Sequence[str] = (),
    people: Mapping[str, str] | None = None,
) -> str | None:
    """Stage exactly `files` in `work`, commit them, return the sha; None if nothing changed."""
    written = [p for p, data in files.items() if data is not None]
    deleted = [p for p, data in files.items() if data is None]
    # --literal-pathspecs: a name with `*` or `:` is a file name, not a pattern.
    if written:
        process.run(["--literal-pathspecs", "add", "--force", "--", *written], cwd=work)
    if deleted:
        process.run(
            ["--literal-pathspecs", "rm", "-q", "--cached", "--ignore-unmatch", "--", *deleted], cwd=work
        )
    if process.run(["diff", "--cached", "--quiet"], cwd=work, check=False).returncode == 0:
        return None
    process.run(
        [*config, "commit", "-q", "-F", "-"], cwd=work, stdin=message.encode("utf-8"), extra_env=people
    )
    return process.run(["rev-parse", "HEAD"], cwd=work).stdout.decode().strip()


def checked_out_at(path: Path, branch: str) -> Path | None:
    """The working tree where `branch` of the repository at `path` is checked out, if any."""
    with GitRepo.open(path) as repo:
        return _checked_out_at(repo, branch)


def commit_in_work_tree(
    work: Path,
    files: Mapping[str, bytes | None],
    message: str,
    *,
    author: tuple[str, str],
    committer: tuple[str, str],
) -> str:
    """Commit `files` through the working tree `work` as `author` (the HTTP API's caller), committed
    by `committer`; the same refusals as a person's `task create` there. Returns the new sha."""
    people = {
        f"GIT_{role}_{field}": value
        for role, (name, email) in (("AUTHOR", author), ("COMMITTER", committer))
        for field, value in (("NAME", name), ("EMAIL", email))
    }
    return _commit_in_work_tree(work, files, message, people)


def _checked_out_at(repo: GitRepo, branch: str) -> Path | None:
    """Return the working tree where `branch` is checked out, if any."""
    listed = process.in_repo(repo.git_dir, "worktree", "list", "--porcelain")
    for block in listed.stdout.decode("utf-8", "replace").split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("worktree ") and f"branch refs/heads/{branch}" in lines:
            path = Path(lines[0].removeprefix("worktree "))
            if path.is_dir():
                return path
    return None


def _commit_in_work_tree(
    work: Path, files: Mapping[str, bytes | None], message: str, people: Mapping[str, str] | None = None
) -> str:
    """Commit `files` through the working tree `work`, refusing to mix in anyone's pending changes."""
    git_dir = Path(process.run(["rev-parse", "--absolute-git-dir"], cwd=work).stdout.decode().strip())
    for marker, what in _IN_PROGRESS.items():
        if (git_dir / marker).exists():
            raise StoreError(f"{what} is in progress in {work}: finish or abort it first")
    diff = process.run(["diff", "--cached", "--name-only", "-z"], cwd=work).stdout.decode("utf-8", "replace")
    staged = [p for p in diff.split("\0") if p]
    if staged:
        raise StoreError(
            f"the index of {work} has staged changes ({', '.join(staged[:5])}) that a commit would mix in: "
            "commit or unstage them first"
        )
    # Untracked and ignored files count too: writing over them would destroy someone's work.
    status_args = ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching"]
    status = process.run(["--literal-pathspecs", *status_args, "--", *files], cwd=work).stdout
    dirty = [entry[3:] for entry in status.decode("utf-8", "replace").split("\0") if entry]
    if dirty:
        raise StoreError(
            f"uncommitted changes to {', '.join(dirty[:5])} in {work}: commit, stash or remove them first"
        )
    _write_files(work, files)
    try:
        sha = _stage_and_commit(work, files, message, people=people)
    except StoreError:
        _restore(work, files)
        raise
    if sha is None:
        return process.run(["rev-parse", "HEAD"], cwd=work).stdout.decode().strip()
    return sha


def _restore(work: Path, files: Mapping[str, bytes | None]) -> None:
    """Put `files` back as they were in HEAD after a failed commit (they were clean before)."""
    paths = list(files)
    process.run(["--literal-pathspecs", "reset", "-q", "--", *paths], cwd=work, check=False)
    for rel in paths:
        restored = process.run(
            ["--literal-pathspecs", "checkout", "-q", "HEAD", "--", rel], cwd=work, check=False
        )
        if restored.returncode != 0:  # not in HEAD: it was absent before
            (work / rel).unlink(missing_ok=True)


def _commit_via_clone(
    source: str, files: Mapping[str, bytes | None], message: str, branch: str, identity: Sequence[str]
) -> str:
    """Commit `files` on `branch` of `source` through a temporary clone, then push it back."""
    # A clone left behind (something still writing in it as it is removed) must not turn a
    # commit that was pushed into a reported failure.
    with tempfile.TemporaryDirectory(prefix="gitops-acp-commit-", ignore_cleanup_errors=True) as tmp:
        for attempt in range(3):
            work = Path(tmp) / f"clone-{attempt}"
            heads = process.run(
                ["ls-remote", "--heads", "--", source, f"refs/heads/{branch}"], cwd=Path(tmp)
            ).stdout
            if heads.strip():
                clone_args = ["clone", "-q", "--no-tags", "--single-branch", "--branch", branch]
                process.run([*clone_args, "--", source, str(work)], cwd=Path(tmp))
            else:  # a new branch (or an empty repository): start from nothing
                process.run(["init", "-q", "-b", branch, str(work)], cwd=Path(tmp))
                process.run(["remote", "add", "origin", source], cwd=work)
            # A local clone hard-links the source's packs: a busy repository's many packs would
            # start a detached `gc --auto` here, writing in the clone while it is being removed.
            for key, value in (("gc.auto", "0"), ("maintenance.auto", "false")):
                process.run(["config", key, value], cwd=work)
            _write_files(work, files)
            sha = _stage_and_commit(work, files, message, identity)
            if sha is None:
                return process.run(["rev-parse", "HEAD"], cwd=work).stdout.decode().strip()
            pushed = process.run(["push", "-q", "origin", f"HEAD:refs/heads/{branch}"], cwd=work, check=False)
            if pushed.returncode == 0:
                return sha
            err = pushed.stderr.decode("utf-8", "replace")
            if "rejected" not in err and "fetch first" not in err:
                raise StoreError(f"git push to {source} failed: {process.tail(pushed)}")
            shutil.rmtree(work, ignore_errors=True)  # someone pushed first: redo it on their commit
    raise StoreError(f"{branch} of {source} kept moving while committing; try again")
