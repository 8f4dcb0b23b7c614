"""Running one git command: the environment it gets, its timeout, and its errors as one line.

The bottom of ``store/git/``: every module that starts a git process (refs, trees, transfer,
maintenance, and the person-side commits in ``store/usercommits.py``) goes through `run`, so the scrubbed
environment, the C locale whose messages the conflict checks match, and the network timeout are
decided here once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

from gitops_acp.errors import RemoteError, StoreError
from gitops_acp.store.git import spawn

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import NamedTuple
else:
    from gitops_acp.tuples import NamedTuple

__all__ = ["NETWORK_TIMEOUT", "REPO_ENV_VARS", "Finished", "env", "in_repo", "one_line", "run", "tail"]

# A fetch or push that takes longer than this is treated as an unreachable remote (and retried).
NETWORK_TIMEOUT = 120.0
# Environment variables that point git at some other repository, index or ref namespace (from
# `git rev-parse --local-env-vars`). Git sets them for hooks and aliases; inherited, they would
# redirect our commands. Config passed through the environment (GIT_CONFIG_COUNT...) is kept.
REPO_ENV_VARS = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


@functools.cache
def _niced() -> tuple[str, ...]:
    """Return the prefix that runs background git work (repacks, commit-graphs) niced.

    So the reconciler keeps the CPU it needs; looked up on first use, so the readers (``history``
    within 50 ms) never import shutil.
    """
    import shutil

    nice = shutil.which("nice")
    return (nice, "-n", "10") if nice else ()


def env() -> dict[str, str]:
    """Return the environment for git subprocesses: no redirecting variables, C locale messages."""
    scrubbed = {k: v for k, v in os.environ.items() if k not in REPO_ENV_VARS}
    # Conflicts are recognized from git's English messages.
    scrubbed["LC_ALL"] = "C"
    scrubbed["LANGUAGE"] = "C"
    return scrubbed


class Finished(NamedTuple):
    """A git command run to its end (the fields of `subprocess.CompletedProcess` we use)."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes


def run(
    args: Sequence[str],
    *,
    cwd: Path | str,
    stdin: bytes | None = None,
    check: bool = True,
    network: bool = False,
    extra_env: Mapping[str, str] | None = None,
    background: bool = False,
) -> Finished:
    """Run one git command and return the finished process; raise StoreError if it fails and `check`.

    `network`: a fetch or push by the reconciler, which must never wait for a password prompt nor
    hang on a silent remote (it fails, and the caller retries with backoff). `extra_env`: set on
    top (a person's identity for a commit made for them). `background`: maintenance nobody waits
    for, run at a lower CPU priority (`nice`, inherited by the processes git starts).

    A command with no input and no timeout is started by `spawn` (`git -C cwd`, as a change of
    directory would), the others by `subprocess` (imported then: readers never need it).
    """
    environment = {**env(), **(extra_env or {})}
    if network:
        environment["GIT_TERMINAL_PROMPT"] = "0"
        environment.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    git = [*(_niced() if background else ()), "git"]
    try:
        if stdin is None and not network:
            argv = [*git, "-C", os.fspath(cwd), *args]
            proc = Finished(argv, *spawn.output(argv, env=environment))
        else:
            proc = _with_subprocess(
                [*git, *args], command=args[0], cwd=cwd, stdin=stdin, env=environment, network=network
            )
    except OSError as exc:
        raise StoreError(f"cannot run git: {exc}") from exc
    if check and proc.returncode != 0:
        raise StoreError(f"git {args[0]} failed in {cwd}: {tail(proc)}")
    return proc


def _with_subprocess(
    argv: list[str], *, command: str, cwd: Path | str, stdin: bytes | None, env: dict[str, str], network: bool
) -> Finished:
    """`argv` through `subprocess`: with input to write, or a network timeout."""
    import subprocess

    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            env=env,
            timeout=NETWORK_TIMEOUT if network else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"git {command} gave no answer within {NETWORK_TIMEOUT:.0f}s") from exc
    return Finished(argv, done.returncode, done.stdout, done.stderr)


def in_repo(
    git_dir: Path | str,
    *args: str,
    stdin: bytes | None = None,
    check: bool = True,
    network: bool = False,
    background: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> Finished:
    """Run `git <args>` on the repository `git_dir`, named explicitly (stray GIT_DIR & co never count)."""
    return run(
        [f"--git-dir={git_dir}", *args],
        cwd=git_dir,
        stdin=stdin,
        check=check,
        network=network,
        background=background,
        extra_env=extra_env,
    )


def one_line(text: str) -> str:
    """Return git's message without its hint paragraphs, as one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2])[-500:] or "no message"


def tail(proc: Finished) -> str:
    """Return the useful last lines of a failed git command's output, as one line."""
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("hint:")]
    return "; ".join(lines[-3:]) or f"exit code {proc.returncode}"
