"""Reading a repository without GitPython: what `get`, `describe` and `history` of one object use.

A person's command is a new process every time, so whatever it imports is part of every figure
(DESIGN §9: `get task NAME` within 100 ms at 100,000 tasks). GitPython costs ~40 ms to import and
its `Repo` more to open, for what these commands need: a handful of objects and a `git log`. So
`ReadOnlyRepo` offers the reading half of `GitRepo`'s API (the `Reader` protocol) over

- its own `git cat-file --batch` process, started on the first read (one object per round trip,
  `<commit>:<path>` resolved by git, as `GitRepo` reads through GitPython's);
- `refs.Refs` for refs (read from the ref files) and `git log`, the very code `GitRepo` runs;
  listing refs reads the ref files too (a `git for-each-ref` is ~3 ms of a ~80 ms command),
  falling back to git for anything unusual (reftable, symbolic refs, `[...]` patterns).

The functions that read one resource (`statustree.read_status_file`, `history.events`,
`shards.status_branches`) take a `Reader`, so they run unchanged over either. One thread at a
time, like `GitRepo` (which guards it; this one is only for a command's single thread).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from types import TracebackType

from gitops_acp.errors import StoreError
from gitops_acp.store.git import process, spawn
from gitops_acp.store.git.objectreader import ObjectReader
from gitops_acp.store.git.refs import CommitInfo, Refs

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:  # made on first use (`ReadOnlyRepo._trees`); pathlib for `git_dir` only
    from pathlib import Path
    from typing import IO, Protocol, Self

    from gitops_acp.store.git.trees import TreeReader
else:
    Protocol = object  # `Reader` is for type checkers: a plain class at run time

__all__ = ["ReadOnlyRepo", "Reader"]


class Reader(Protocol):
    """What the readers (`get`, `describe`, `history`) need of a repository: `GitRepo` and
    `ReadOnlyRepo` both have it all."""

    @property
    def git_dir(self) -> Path:
        """The git directory."""

    def resolve(self, ref: str) -> str | None:
        """The full sha `ref` points at, or None."""

    def refs(self, *prefixes: str) -> dict[str, str]:
        """Every ref under `prefixes`, full name -> sha."""

    def log(
        self,
        ref: str,
        *,
        path: str | Sequence[str] | None = None,
        n: int = 20,
        first_parent: bool = False,
        since: float | None = None,
        trailers: bool = True,
    ) -> list[CommitInfo]:
        """The newest `n` commits of `ref` (touching `path` if given), newest first."""

    def read_blob(self, sha: str) -> bytes:
        """The content of blob `sha`."""

    def read_file(self, commit: str, path: str) -> bytes | None:
        """The content of `path` in `commit`, or None."""

    def read_first_files(self, wanted: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[int, bytes] | None]:
        """For each (commit, paths): the first of `paths` that is a file there, as (its index, its
        content), or None."""

    def commit_time(self, sha: str) -> float:
        """The committer time of commit `sha`."""

    def read_blobs(self, shas: Sequence[str]) -> dict[str, bytes]:
        """The content of each blob in `shas`, by sha."""

    def files_present(self, commit: str, paths: Sequence[str]) -> set[str]:
        """Which of `paths` are files in `commit`."""

    def read_tree(self, treeish: str, path: str = "") -> dict[str, tuple[str, str]] | None:
        """One level of a tree as name -> (mode, sha), or None."""

    def list_tree(self, commit: str, path: str = "") -> dict[str, str]:
        """Every file of `commit` (under `path`) as path -> blob sha."""

    def changed_files(self, old: str, new: str, path: str = "") -> dict[str, str | None]:
        """The files that differ between `old` and `new` (under `path`): path -> blob sha, or None."""

    def close(self) -> None:
        """Stop any process it started."""


def _git_dirs(path: str) -> tuple[str, str]:
    """The git directory and the common directory of the repository at exactly `path` (a work
    tree, a `.git` directory, a linked worktree's `.git` file or a bare repository), as
    `GitRepo.open` finds them: parent directories are not searched.

    With `os.path`, not `pathlib`: `history` does without pathlib (and the `urllib.parse` and
    `ipaddress` it loads, ~3.5 ms of a ~50 ms command).
    """
    join, isdir, isfile = os.path.join, os.path.isdir, os.path.isfile
    dot = join(path, ".git")
    if isdir(dot):
        git_dir = dot
    elif isfile(dot):
        text = _read_text(dot).strip()
        if not text.startswith("gitdir:"):
            raise StoreError(f"not a git repository: {path}")
        git_dir = join(path, text.removeprefix("gitdir:").strip())
    elif isfile(join(path, "HEAD")) and (isdir(join(path, "objects")) or isfile(join(path, "commondir"))):
        git_dir = path
    else:
        raise StoreError(f"not a git repository: {path}")
    git_dir = os.path.realpath(git_dir)
    try:
        common = os.path.realpath(join(git_dir, _read_text(join(git_dir, "commondir")).strip()))
    except FileNotFoundError:
        common = git_dir
    return git_dir, common


def _read_text(path: str) -> str:
    """A file's text, as `Path.read_text(encoding="utf-8", errors="replace")` reads it."""
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read()


#: Bytes of names written to cat-file at once (`cat_many`): a pipe holds 64 KB.
_PIPELINED = 16_384

_HEX40 = re.compile(r"[0-9a-f]{40}")


def _pattern(pattern: str) -> re.Pattern[str]:
    """for-each-ref's match: the whole name, a folder of it, or a glob within each part."""
    glob = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"{re.escape(pattern.rstrip('/'))}(/.*)?|{glob}")


class ReadOnlyRepo:
    """A repository opened for reading only, without GitPython (see the module docstring)."""

    def __init__(self, git_dir: str | os.PathLike[str], common_dir: str | os.PathLike[str]) -> None:
        """Read the repository `git_dir`; use `ReadOnlyRepo.open`."""
        self._git_dir = os.fspath(git_dir)
        self._common_dir = os.fspath(common_dir)
        self._refs = Refs(self._git_dir, self._common_dir)
        self._cat: spawn.Child | None = None
        self._objects = ObjectReader(self.cat, self._git_dir, self.cat_many)
        self._tree_reader: TreeReader | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ReadOnlyRepo:
        """Open a work tree, a `.git` directory or a bare repository at exactly `path`."""
        return cls(*_git_dirs(os.fspath(path)))

    @property
    def git_dir(self) -> Path:
        """The git directory."""
        from pathlib import Path

        return Path(self._git_dir)

    @property
    def common_dir(self) -> Path:
        """The directory that holds objects, branches and `packed-refs` (a worktree's main git dir)."""
        from pathlib import Path

        return Path(self._common_dir)

    def __repr__(self) -> str:
        return f"ReadOnlyRepo({str(self._git_dir)!r})"

    def close(self) -> None:
        """Stop the `git cat-file` process, if one was started."""
        cat, self._cat = self._cat, None
        if cat is not None:
            cat.close()
        self._refs.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- refs and history (refs.Refs, as GitRepo) -----------------------------------------------

    def resolve(self, ref: str) -> str | None:
        """Return the full sha `ref` points at, or None if there is no such ref or object."""
        return self._refs.resolve(ref)

    def refs(self, *prefixes: str) -> dict[str, str]:
        """Return every ref under `prefixes` (such as `refs/heads/acp/`) as full name -> sha.

        `prefixes` as `git for-each-ref` takes them: a ref, a folder, or a pattern whose `*` and
        `?` stay within one part of the name.
        """
        found = self._refs_from_files(prefixes)
        return found if found is not None else self._refs.under(*prefixes)

    def _refs_from_files(self, patterns: Sequence[str]) -> dict[str, str] | None:
        """`refs` from the loose ref files and `packed-refs`; None when only git can tell."""
        reftable = os.path.exists(os.path.join(self._common_dir, "reftable"))
        if not patterns or reftable or any("[" in p for p in patterns):
            return None
        if any(not p.startswith("refs/") or ".." in p for p in patterns):
            return None
        matches = [_pattern(p).fullmatch for p in patterns]
        names: dict[str, str] = {}
        try:
            packed = _read_text(os.path.join(self._common_dir, "packed-refs"))
        except FileNotFoundError:
            packed = ""
        for line in packed.splitlines():
            sha, _space, name = line.partition(" ")
            if line[:1] not in ("#", "^", "") and any(match(name) for match in matches):
                names[name] = sha
        for pattern in patterns:  # loose files win over packed-refs, as in git
            parts = pattern.rstrip("/").split("/")
            plain = list(itertools.takewhile(lambda part: "*" not in part and "?" not in part, parts))
            folder = os.path.join(self._common_dir, *plain)
            if len(plain) == len(parts) and not os.path.isdir(folder):
                folder = os.path.dirname(folder)  # the pattern names a ref: its folder holds it
            for top, _dirs, files in os.walk(folder):
                for file in files:
                    name = os.path.relpath(os.path.join(top, file), self._common_dir).replace(os.sep, "/")
                    if name.endswith(".lock") or not any(match(name) for match in matches):
                        continue
                    content = _read_text(os.path.join(self._common_dir, name)).strip()
                    if not _HEX40.fullmatch(content):
                        return None  # a symbolic ref, or one being written: git knows
                    names[name] = content
        return names

    def log(
        self,
        ref: str,
        *,
        path: str | Sequence[str] | None = None,
        n: int = 20,
        first_parent: bool = False,
        since: float | None = None,
        trailers: bool = True,
    ) -> list[CommitInfo]:
        """Return the newest `n` commits reachable from `ref` (touching `path`, or any of several,
        if given), newest first; bounded by `-n` and `since` (see `GitRepo.log`)."""
        return self._refs.log(ref, path=path, n=n, first_parent=first_parent, since=since, trailers=trailers)

    # -- its `git cat-file --batch` ---------------------------------------------------------------

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        stopped = self._cat
        if stopped is not None and stopped.poll() is not None:  # it stopped: start another
            self._cat = None
            stopped.close()
        if self._cat is None:
            try:
                self._cat = spawn.start(
                    ["git", "-C", self._git_dir, f"--git-dir={self._git_dir}", "cat-file", "--batch"],
                    env=process.env(),
                )
            except OSError as exc:
                raise StoreError(f"cannot run git: {exc}") from exc
        return self._cat.stdin, self._cat.stdout

    def start(self) -> None:
        """Start the `git cat-file` process now rather than at the first read: git's start-up
        (~1.5 ms, and more on a busy machine) then runs on another core while the command
        imports what it reads with (`cli/repos.open_reader`)."""
        self._pipes()

    def cat(self, name: str) -> tuple[str, str, bytes] | None:
        """Return (sha, type, data) of the object `name` names (a sha, `<commit>:<path>`), or None
        (`objectreader.CatFile`)."""
        return self.cat_many((name,))[0]

    def cat_many(self, names: Sequence[str]) -> list[tuple[str, str, bytes] | None]:
        """`cat` of each of `names` in one round trip: every name written, then every answer read
        (`objectreader.CatMany`). Names go at most _PIPELINED bytes at a time, far less than a
        pipe holds, so writing them never waits for git while git waits for us to read."""
        lines = [name.encode("utf-8", "surrogateescape") + b"\n" for name in names if "\n" not in name]
        stdin, stdout = self._pipes()
        answers: list[tuple[str, str, bytes] | None] = []
        while len(answers) < len(lines):
            first = len(answers)
            last, size = first + 1, len(lines[first])
            while last < len(lines) and size + len(lines[last]) <= _PIPELINED:
                size += len(lines[last])
                last += 1
            try:
                stdin.write(b"".join(lines[first:last]))
                stdin.flush()
                answers += [self._answer(stdout) for _ in range(first, last)]
            except OSError as exc:
                raise StoreError(f"git cat-file failed in {self._git_dir}: {exc}") from exc
        given = iter(answers)
        return [None if "\n" in name else next(given) for name in names]

    def _answer(self, stdout: IO[bytes]) -> tuple[str, str, bytes] | None:
        """Read cat-file's answer to one name."""
        header = stdout.readline()
        if not header:
            raise StoreError(f"git cat-file stopped in {self._git_dir}")
        if header.endswith((b" missing\n", b" ambiguous\n")):
            return None
        sha, kind, size = header.split()
        data = stdout.read(int(size))
        stdout.read(1)  # the newline after the content
        return sha.decode("ascii"), kind.decode("ascii"), data

    # -- objects (`ObjectReader` over this cat-file, as GitRepo), and trees ------------------------

    def read_blob(self, sha: str) -> bytes:
        """Return the content of blob `sha`."""
        return self._objects.blob(sha)

    def read_file(self, commit: str, path: str) -> bytes | None:
        """Return the content of `path` in `commit`, or None if the file does not exist there."""
        return self._objects.file(commit, path)

    def read_first_files(self, wanted: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[int, bytes] | None]:
        """For each (commit, paths): the first of `paths` that is a file there, as (its index, its
        content), or None; every name asked in one round trip (see `ObjectReader.first_files`)."""
        return self._objects.first_files(wanted)

    def commit_time(self, sha: str) -> float:
        """Return the committer time of commit `sha` (seconds since the epoch)."""
        return self._objects.commit_time(sha)

    def _trees(self) -> TreeReader:
        """Made on first use: one object and `history` never need it (trees.py loads pathlib)."""
        if self._tree_reader is None:
            from gitops_acp.store.git.trees import TreeReader

            self._tree_reader = TreeReader(self._objects, self.git_dir)
        return self._tree_reader

    def read_blobs(self, shas: Sequence[str]) -> dict[str, bytes]:
        """Return the content of each blob in `shas`, by sha (see `GitRepo.read_blobs`)."""
        return self._objects.blobs(shas)

    def read_trees(self, shas: Sequence[str]) -> dict[str, bytes]:
        """Return each tree in `shas` as git stores it, by sha (see `GitRepo.read_trees`)."""
        return self._objects.many(shas, "tree")

    def files_present(self, commit: str, paths: Sequence[str]) -> set[str]:
        """Which of `paths` are files in `commit` (none read; see `GitRepo.files_present`)."""
        return self._objects.files_present(commit, paths)

    def tree_of(self, commit: str) -> str:
        """Return the tree sha of `commit`."""
        return self._objects.tree_of(commit)

    def read_tree(self, treeish: str, path: str = "") -> dict[str, tuple[str, str]] | None:
        """Return one level of a tree as name -> (mode, sha); None if `path` is not in `treeish`.
        Not through `TreeReader` (trees.py loads pathlib): `history` of an archived task lists
        bookmarks with it."""
        return self._objects.level(treeish, path)

    def list_tree(self, commit: str, path: str = "") -> dict[str, str]:
        """Return every file of `commit` (under directory `path`) as path -> blob sha (see
        `GitRepo.list_tree`)."""
        trees = self._trees()
        return trees.ls_tree(commit, path) if path else trees.files(commit)

    def changed_files(self, old: str, new: str, path: str = "") -> dict[str, str | None]:
        """Return the files that differ between commits `old` and `new` (under directory `path`):
        path -> blob sha in `new`, None if not in `new` (see `GitRepo.changed_files`)."""
        return self._trees().changed_files(old, new, path)
