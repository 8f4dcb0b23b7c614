"""The one adapter between gitops-acp and git: objects, refs, logs, and commits made for a person.

Everything in gitops-acp that touches a repository goes through this module; it is the only one
allowed to import GitPython and gitdb (a ruff ``banned-api`` rule enforces it), so a change of
backend (pygit2, say) stays a change of one file. The API is blocking and small on purpose: the
status writer calls it from its own thread, the watcher and the command line call it directly.

What is used for what was measured (``GIT-NOTES.md``):

- objects are written as loose objects in-process, in git's format (zlib of "<type> <size>\\0"
  + data, named by its sha1): GitPython's ``repo.odb.store`` spawns a ``git hash-object`` per
  object, and gitdb's ``LooseObjectDB`` streams through Python-level chunked copies that cost a
  fifth of the reconciler's CPU at 1000 tasks; one ``zlib.compress`` and one ``hashlib.sha1``
  (both in C, releasing the GIL) do the same;
- objects are read through GitPython's persistent ``git cat-file --batch`` (0.13 ms per read),
  which also resolves ``<commit>:<path>`` in one round trip;
- a ref is moved only by ``git update-ref <ref> <new> <old>``: the compare-and-swap that keeps
  concurrent writers from overwriting each other (GitPython's ref writing has no CAS);
- refs are read from the loose ref files and ``packed-refs`` directly, because the watcher
  re-reads them on every wake-up; anything unusual falls back to ``git rev-parse``.

A ``GitRepo`` must be used by one thread at a time: a GitPython ``Repo`` shared across threads
returned wrong file contents. Concurrent use raises ``StoreError`` instead of corrupting reads.

``commit_as_user`` and ``init_repository`` are the other half: commits made *for a person* by the
command line (``task create``, ``approve``, ``init``), which go through a working tree or a
temporary clone exactly as that person would. The reconciler never calls them.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import itertools
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Concatenate, Literal, ParamSpec, Self, TypeVar

import git

from gitops_acp import faults
from gitops_acp.errors import ConflictError, LockedError, RemoteError, StoreError

__all__ = [
    "EMPTY_TREE",
    "TREE_MODE",
    "ZERO_OID",
    "CommitInfo",
    "GitRepo",
    "PushUpdate",
    "RefConflictError",
    "TreeBuilder",
    "commit_as_user",
    "init_bare",
    "init_repository",
    "is_url",
    "redact_url",
]

ZERO_OID = "0" * 40
# The well-known id of the empty tree (git knows it without storing it).
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
TREE_MODE = "40000"
_VALID_MODES = frozenset({"100644", "100755", "120000", TREE_MODE, "160000"})
_RESERVED_NAMES = frozenset({".", "..", ".git"})
_HEX40 = re.compile(r"[0-9a-f]{40}")
_SHORT_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
# Ref names the fast path reads as files; anything else (revision syntax, odd characters) goes to
# `git rev-parse`, which also keeps `..` and absolute paths from ever becoming file reads.
_SIMPLE_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
# Refs that live in a worktree's own git dir rather than the common dir (gitrepository-layout(5)).
_PER_WORKTREE_PREFIXES = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")
# Above this many directories one `git ls-tree -r` beats walking trees via cat-file (list_tree).
_WALK_MAX_TREES = 16
# A fetch or push that takes longer than this is treated as an unreachable remote (and retried).
_NETWORK_TIMEOUT = 120.0
_PACK_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3}  # object type codes in pack entries
# The user:password@ part of a URL: never printed (it may hold a token).
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_CONFLICT_AT = re.compile(r"is at ([0-9a-f]{40}) but expected")
# git's words for a lock file that is already there (lockfile.c): the ref is held, not moved.
_LOCKED = re.compile(r"Unable to create '([^']+\.lock)': File exists")
# Trailer lines as git writes them (`Key: value`); used to drop the trailer block from a body.
_TRAILER_LINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*: ")
# Environment variables that point git at some other repository, index or ref namespace (from
# `git rev-parse --local-env-vars`). Git sets them for hooks and aliases; inherited, they would
# redirect our commands. Config passed through the environment (GIT_CONFIG_COUNT...) is kept.
_REPO_ENV_VARS = (
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
# States of a working tree in which `git commit` would not make an ordinary one-parent commit.
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or git am",
}

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CommitInfo:
    """One commit as `git log` shows it."""

    sha: str
    timestamp: float  # committer time, seconds since the epoch
    author: str  # "Name <email>"
    subject: str
    body: str  # the message after the subject, without the trailing trailer block
    trailers: tuple[tuple[str, str], ...]  # (key, value) in message order, folded lines unfolded

    def trailer(self, key: str) -> list[str]:
        """Return the values of every trailer named `key` (case-insensitive), in order."""
        wanted = key.lower()
        return [value for k, value in self.trailers if k.lower() == wanted]


@dataclass(frozen=True)
class PushUpdate:
    """One ref to push: set `ref` on the remote to `sha` if it is at `expected` (None: absent)."""

    ref: str  # the full ref name, the same locally and on the remote (refs/heads/...)
    sha: str
    expected: str | None


class RefConflictError(ConflictError):
    """`update-ref` found the ref somewhere else than expected; `actual` is where it is now."""

    def __init__(self, ref: str, *, expected: str | None, actual: str | None) -> None:
        super().__init__(f"ref {ref} moved: expected {expected or 'no ref'}, found {actual or 'no ref'}")
        self.ref = ref
        self.expected = expected
        self.actual = actual


def _git_env() -> dict[str, str]:
    """Return the environment for git subprocesses: no redirecting variables, C locale messages."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV_VARS}
    # Conflicts are recognized from git's English messages.
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    return env


def _run(
    args: Sequence[str],
    *,
    cwd: Path,
    stdin: bytes | None = None,
    check: bool = True,
    network: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command and return the finished process; raise StoreError if it fails and `check`.

    `network`: a fetch or push by the reconciler, which must never wait for a password prompt nor
    hang on a silent remote (it fails, and the caller retries with backoff).
    """
    env = _git_env()
    if network:
        env["GIT_TERMINAL_PROMPT"] = "0"
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            env=env,
            timeout=_NETWORK_TIMEOUT if network else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"git {args[0]} gave no answer within {_NETWORK_TIMEOUT:.0f}s") from exc
    except OSError as exc:
        raise StoreError(f"cannot run git: {exc}") from exc
    if check and proc.returncode != 0:
        raise StoreError(f"git {args[0]} failed in {cwd}: {_tail(proc)}")
    return proc


def _one_line(text: str) -> str:
    """git's message without its hint paragraphs, as one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2])[-500:] or "no message"


def _tail(proc: subprocess.CompletedProcess[bytes]) -> str:
    """Return the useful last lines of a failed git command's output, as one line."""
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("hint:")]
    return "; ".join(lines[-3:]) or f"exit code {proc.returncode}"


def _exclusive(method: Callable[Concatenate[GitRepo, P], R]) -> Callable[Concatenate[GitRepo, P], R]:
    """Refuse a call while another thread is inside this GitRepo (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: GitRepo, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # Re-entrant for the owning thread; a second thread fails at once instead of interleaving
        # its requests on the shared cat-file pipes.
        if not self._busy.acquire(blocking=False):
            raise StoreError(f"GitRepo {self.git_dir} used from two threads at once; open one per thread")
        try:
            return method(self, *args, **kwargs)
        finally:
            self._busy.release()

    return wrapper


def _write_new_file(path: str, content: bytes | bytearray) -> None:
    """Create `path` (it must not exist) read-only, holding `content`: how objects and packs are written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _parse_tree(data: bytes) -> dict[str, tuple[str, str]]:
    """Parse a raw tree object into name -> (mode, sha)."""
    entries: dict[str, tuple[str, str]] = {}
    pos, end = 0, len(data)
    while pos < end:
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        name = data[space + 1 : nul].decode("utf-8", "surrogateescape")
        entries[name] = (data[pos:space].decode("ascii"), data[nul + 1 : nul + 21].hex())
        pos = nul + 21
    return entries


def _signature(who: tuple[str, str], when: float) -> str:
    name, email = who
    for part in (name, email):
        if any(c in part for c in "<>\n\0"):
            raise StoreError(f"invalid identity {name!r} <{email}>: no '<', '>', newline or NUL allowed")
    seconds = int(when)
    offset = time.localtime(seconds).tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    return f"{name} <{email}> {seconds} {sign}{hours:02d}{minutes:02d}"


def _strip_trailer_block(body: str, trailers: tuple[tuple[str, str], ...]) -> str:
    """Drop the last paragraph of `body` when it is the trailer block git parsed."""
    text = body.rstrip("\n")
    if not trailers or not text:
        return text
    head, _sep, last = text.rpartition("\n\n")
    lines = last.splitlines()
    if lines and all(_TRAILER_LINE.match(line) or line[:1].isspace() for line in lines):
        return head.rstrip("\n")
    return text


def _tree_record(name: str, mode: str, sha: str) -> tuple[str, bytes, bytes]:
    """Check one tree entry; return its normalized mode, its sort key and its serialized record."""
    if mode not in _VALID_MODES:
        if mode != "040000":  # git writes trees without the leading 0
            raise StoreError(f"invalid tree entry {name!r}: mode {mode!r}")
        mode = TREE_MODE
    if not name or "/" in name or "\0" in name or name in _RESERVED_NAMES:
        raise StoreError(f"invalid tree entry name {name!r}")
    try:
        binsha = bytes.fromhex(sha)
    except ValueError:
        binsha = b""
    if len(binsha) != 20:
        raise StoreError(f"invalid tree entry {name!r}: sha {sha!r}")
    raw = name.encode("utf-8", "surrogateescape")
    # git compares a directory as if its name ended in "/" (so "a.b" sorts before "a/").
    key = raw + b"/" if mode == TREE_MODE else raw
    return mode, key, mode.encode() + b" " + raw + b"\0" + binsha


class TreeBuilder:
    """One tree level kept in git's serialized form, sorted, ready to be written again.

    The status writer rewrites `status/tasks/` and `status/toolcalls/` (thousands of entries, ever
    growing) on every checkpoint with one or two entries changed. Checking and encoding every entry
    again cost ~2.5 µs each (1.3 ms per commit at 500 files); keeping the records makes a rewrite
    one join. Not thread-safe, like everything here.
    """

    def __init__(self, entries: Mapping[str, tuple[str, str]] | None = None) -> None:
        """Start from `entries` (name -> (mode, sha)), or empty."""
        self._entries: dict[str, tuple[str, str]] = {}
        self._keys: dict[str, bytes] = {}  # name -> sort key
        self._records: dict[bytes, bytes] = {}  # sort key -> serialized entry
        self._order: list[bytes] | None = None  # sorted keys; None until first needed
        for name, (mode, sha) in (entries or {}).items():
            self.set(name, mode, sha)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> tuple[str, str] | None:
        """Return the (mode, sha) of entry `name`, or None."""
        return self._entries.get(name)

    def entries(self) -> dict[str, tuple[str, str]]:
        """Return a copy of the entries as name -> (mode, sha)."""
        return dict(self._entries)

    def set(self, name: str, mode: str, sha: str) -> None:
        """Add or replace entry `name`."""
        mode, key, record = _tree_record(name, mode, sha)
        old_key = self._keys.get(name)
        if old_key != key:
            if old_key is not None:
                self._drop_key(old_key)
            if self._order is not None:
                bisect.insort(self._order, key)
            self._keys[name] = key
        self._records[key] = record
        self._entries[name] = (mode, sha)

    def remove(self, name: str) -> bool:
        """Remove entry `name`; return False if there was none."""
        key = self._keys.pop(name, None)
        if key is None:
            return False
        self._drop_key(key)
        del self._entries[name]
        return True

    def _drop_key(self, key: bytes) -> None:
        del self._records[key]
        if self._order is not None:
            del self._order[bisect.bisect_left(self._order, key)]

    def data(self) -> bytes:
        """Return the tree object's content, entries in git's order."""
        if self._order is None:
            self._order = sorted(self._records)
        return b"".join(map(self._records.__getitem__, self._order))


class GitRepo:
    """A git repository opened for reading and writing objects and refs (one thread at a time)."""

    def __init__(self, repo: git.Repo) -> None:
        """Wrap an opened GitPython repository; use `GitRepo.open`."""
        self._repo = repo
        self._busy = threading.RLock()
        self._git_dir = Path(repo.git_dir).resolve()
        self._common_dir = Path(repo.common_dir).resolve()
        self._work_tree = Path(repo.working_tree_dir).resolve() if repo.working_tree_dir else None
        self._objects = self._common_dir / "objects"
        self._objects_dir = str(self._objects)
        self._object_folders: set[str] = set()  # objects/<xx> folders known to exist
        self._tmp_names = itertools.count()
        self._pack: dict[str, tuple[int, bytes]] | None = None  # objects of an open `one_pack()`
        # A reftable repository has no ref files to read: always ask git.
        self._fast_refs = not (self._common_dir / "reftable").exists()
        self._packed_key: tuple[int, int, int] | None = None
        self._packed: dict[str, str] = {}
        self._prefer_ls_tree = False
        self._updater: subprocess.Popen[bytes] | None = None  # a long-lived `git update-ref --stdin`
        # Our subprocesses get the repository explicitly, so stray GIT_DIR & co never redirect them;
        # the same for GitPython's persistent cat-file.
        repo.git.update_environment(**{k: None for k in _REPO_ENV_VARS if k in os.environ})

    @classmethod
    def open(cls, path: str | Path) -> GitRepo:
        """Open a work tree, a `.git` directory or a bare repository at exactly `path`."""
        try:
            repo = git.Repo(str(path))
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise StoreError(f"not a git repository: {path}") from exc
        return cls(repo)

    _PACK_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3}

    # -- identity -----------------------------------------------------------------------------

    @property
    def git_dir(self) -> Path:
        """The git directory (for a linked worktree: its own, under the common dir's `worktrees/`)."""
        return self._git_dir

    @property
    def common_dir(self) -> Path:
        """The directory that holds objects, branches and `packed-refs`."""
        return self._common_dir

    @property
    def work_tree(self) -> Path | None:
        """The working tree, or None for a bare repository."""
        return self._work_tree

    @property
    def is_bare(self) -> bool:
        """True when the repository has no working tree."""
        return self._work_tree is None

    def __repr__(self) -> str:
        return f"GitRepo({str(self._work_tree or self._git_dir)!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the persistent `git cat-file` and `update-ref` processes (a few MB each until closed)."""
        self._stop_updater()
        self._repo.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _git(
        self, *args: str, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return _run([f"--git-dir={self._git_dir}", *args], cwd=self._git_dir, stdin=stdin, check=check)

    def config_value(self, key: str) -> str | None:
        """A git config value of this repository (e.g. `remote.origin.url`), or None when unset."""
        proc = self._git("config", "--get", key, check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    # -- refs ---------------------------------------------------------------------------------

    @_exclusive
    def resolve(self, ref: str) -> str | None:
        """Return the full sha `ref` points at, or None if there is no such ref or object.

        Full ref names, `HEAD` and short branch/tag names are read from the ref files directly
        (the watcher calls this on every wake-up); other revision syntax goes to `git rev-parse`.
        """
        if self._fast_refs and _SIMPLE_REF.fullmatch(ref) and not _HEX40.fullmatch(ref):
            found = self._read_ref_fast(ref)
            if found is not False:
                return found
        proc = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", ref, check=False)
        if proc.returncode != 0:
            return None
        return proc.stdout.decode("ascii").strip() or None

    def _read_ref_fast(self, ref: str) -> str | Literal[False] | None:
        """Resolve a plain ref name from files; False means "ask git" (the files were not conclusive)."""
        if ref == "HEAD" or ref.endswith("_HEAD") or ref.startswith("refs/"):
            candidates = [ref]
        else:
            # git's DWIM order for a short name (gitrevisions(7)); $GIT_DIR/<name> is left to git.
            candidates = [f"refs/{ref}", f"refs/tags/{ref}", f"refs/heads/{ref}", f"refs/remotes/{ref}"]
            candidates.append(f"refs/remotes/{ref}/HEAD")
        for name in candidates:
            found = self._read_one_ref(name, depth=0)
            if found is not None:
                return found
        # Not a ref: it may still be an abbreviated object name, which only git can expand.
        return False if _SHORT_HEX.fullmatch(ref) else None

    def _read_one_ref(self, name: str, *, depth: int) -> str | Literal[False] | None:
        if depth > 5:
            return False  # a symref loop or a long chain: let git report it
        per_worktree = "/" not in name or name.startswith(_PER_WORKTREE_PREFIXES)
        path = (self._git_dir if per_worktree else self._common_dir) / name
        try:
            content = path.read_bytes().decode("utf-8", "replace").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # No loose file: the ref is packed or missing. git writes packed-refs before deleting a
            # loose ref (pack-refs), so checking loose first and packed second never misses one.
            return self._packed_refs().get(name)
        except OSError:
            return False
        if content.startswith("ref:"):
            return self._read_one_ref(content[4:].strip(), depth=depth + 1)
        sha = content[:40]
        return sha if _HEX40.fullmatch(sha) else False

    def _packed_refs(self) -> dict[str, str]:
        path = self._common_dir / "packed-refs"
        try:
            st = path.stat()
        except FileNotFoundError:
            self._packed_key, self._packed = None, {}
            return self._packed
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._packed_key:
            packed: dict[str, str] = {}
            for line in path.read_bytes().decode("utf-8", "replace").splitlines():
                if line[:1] in ("#", "^", ""):  # header, peeled tag lines
                    continue
                sha, _space, name = line.partition(" ")
                packed[name] = sha
            self._packed_key, self._packed = key, packed
        return self._packed

    @_exclusive
    def update_ref(self, ref: str, new: str, old: str | None, *, message: str) -> None:
        """Move `ref` from `old` (None: it must not exist) to `new` atomically, or raise RefConflictError."""
        if not ref.startswith("refs/"):
            raise StoreError(f"refusing to update {ref!r}: give a full ref name (refs/...)")
        done, err = self._update_via_stdin(ref, new, old)
        if done:
            return
        if err is None:  # the persistent process is unusable: one process for this update
            reflog = message.splitlines()[0] if message else "gitops-acp"
            proc = self._git("update-ref", "-m", reflog, ref, new, old or ZERO_OID, check=False)
            if proc.returncode == 0:
                return
            err = proc.stderr.decode("utf-8", "replace")
        if match := _CONFLICT_AT.search(err):
            raise RefConflictError(ref, expected=old, actual=match.group(1))
        if match := _LOCKED.search(err):
            # Not a lost race: the ref did not move. Someone holds its lock, or a killed process left
            # it; the caller waits a bounded time and then says which (store/recovery.py).
            raise LockedError(f"{ref} is locked: {match.group(1)} exists", lock=match.group(1))
        actual = self.resolve(ref)
        # "reference already exists", "unable to resolve reference": lost races when the ref is
        # not where we expected it.
        if actual != old:
            raise RefConflictError(ref, expected=old, actual=actual)
        raise StoreError(f"git update-ref {ref} failed: {_one_line(err)}")

    def _update_via_stdin(self, ref: str, new: str, old: str | None) -> tuple[bool, str | None]:
        """Move the ref in a transaction of one long-lived `git update-ref --stdin`.

        The same compare-and-swap as `git update-ref <ref> <new> <old>` (git locks the ref and
        checks `old` in `prepare`), without a process start per checkpoint: 0.5 ms instead of 2-3 ms,
        most of a single checkpoint's cost. Returns (True, None) when the ref moved; (False, stderr)
        when git refused (the process then exits and is restarted on next use); (False, None) when
        the process could not be used at all.
        """
        proc = self._updater
        if proc is None or proc.poll() is not None:
            try:
                proc = self._updater = subprocess.Popen(
                    [
                        "git",
                        f"--git-dir={self._git_dir}",
                        "update-ref",
                        "--stdin",
                        "-m",
                        "gitops-acp checkpoint",
                    ],
                    cwd=self._git_dir,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=_git_env(),
                )
            except OSError:
                return False, None
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            if faults.armed("lock-taken"):  # tests: stop between taking the lock and moving the ref
                proc.stdin.write(f"start\nupdate {ref} {new} {old or ZERO_OID}\nprepare\n".encode())
                proc.stdin.flush()
                replies = [proc.stdout.readline() for _ in range(2)]
                if replies[-1] == b"prepare: ok\n":
                    faults.reached("lock-taken", children=[proc.pid])
                proc.stdin.write(b"commit\n")
                proc.stdin.flush()
                replies.append(proc.stdout.readline())
            else:
                proc.stdin.write(f"start\nupdate {ref} {new} {old or ZERO_OID}\nprepare\ncommit\n".encode())
                proc.stdin.flush()
                replies = [proc.stdout.readline() for _ in range(3)]
        except OSError:
            replies = []
        if replies == [b"start: ok\n", b"prepare: ok\n", b"commit: ok\n"]:
            faults.reached("ref-moved")
            return True, None
        err = self._stop_updater()
        return False, (err or None)

    def _stop_updater(self) -> str:
        """Stop the `update-ref --stdin` process; return what it wrote on stderr."""
        proc, self._updater = self._updater, None
        if proc is None:
            return ""
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = b""
        if proc.stderr is not None:
            err = proc.stderr.read()
            proc.stderr.close()
        if proc.stdout is not None:
            proc.stdout.close()
        return err.decode("utf-8", "replace")

    # -- reading objects ----------------------------------------------------------------------

    def _cat(self, name: str) -> tuple[str, str, bytes] | None:
        """Return (sha, type, data) of the object `name` names, or None if it does not exist."""
        for attempt in (1, 2):
            try:
                sha, kind, _size, data = self._repo.git.get_object_data(name)
                # GitPython passes the header through as bytes despite its str annotations.
                return _text(sha), _text(kind), data
            except ValueError:
                # Missing or ambiguous object, unless the persistent process died (then the header
                # line comes back empty): restart it once.
                proc = getattr(self._repo.git, "cat_file_all", None)
                if proc is None or proc.proc is None or proc.proc.poll() is None or attempt == 2:
                    return None
            except OSError as exc:  # broken pipe to a dead cat-file
                if attempt == 2:
                    raise StoreError(f"git cat-file failed in {self._git_dir}: {exc}") from exc
            self._repo.git.clear_cache()
        return None

    @_exclusive
    def read_blob(self, sha: str) -> bytes:
        """Return the content of blob `sha`."""
        found = self._cat(sha)
        if found is None or found[1] != "blob":
            raise StoreError(f"no blob {sha} in {self._git_dir}")
        return found[2]

    @_exclusive
    def read_file(self, commit: str, path: str) -> bytes | None:
        """Return the content of `path` in `commit`, or None if the file does not exist there."""
        found = self._cat(f"{commit}:{path}")
        if found is None:
            return None
        if found[1] != "blob":
            raise StoreError(f"{path} at {commit[:12]} is a {found[1]}, not a file")
        return found[2]

    @_exclusive
    def read_tree(self, treeish: str, path: str = "") -> dict[str, tuple[str, str]] | None:
        """Return one level of a tree as name -> (mode, sha); None if `path` is not in `treeish`.

        `treeish` is a tree or commit sha (or any revision); `path` a directory inside it ("" for
        the root).
        """
        found = self._cat(f"{treeish}:{path}") if path else self._cat(f"{treeish}^{{tree}}")
        if found is None:
            return None
        if found[1] != "tree":
            raise StoreError(f"{path} at {treeish[:12]} is a {found[1]}, not a directory")
        return _parse_tree(found[2])

    @_exclusive
    def list_tree(self, commit: str) -> dict[str, str]:
        """Return every file of `commit` as path -> blob sha (recursive; submodules left out).

        Measured (benchmarks/bench_checkpoint.py): walking the trees through the persistent
        cat-file costs ~0.2 ms per directory, one `git ls-tree -r` ~3.5 ms whatever the shape. So
        trees with few directories are walked, and once a repository shows more than
        `_WALK_MAX_TREES` directories this object switches to ls-tree (tree shapes are stable).
        """
        if not self._prefer_ls_tree:
            walked = self._walk_tree(commit)
            if walked is not None:
                return walked
            self._prefer_ls_tree = True
        return self._ls_tree(commit)

    def _walk_tree(self, commit: str, max_trees: int = _WALK_MAX_TREES) -> dict[str, str] | None:
        root = self._cat(f"{commit}^{{tree}}")
        if root is None:
            raise StoreError(f"no commit {commit} in {self._git_dir}")
        files: dict[str, str] = {}
        stack: list[tuple[str, bytes]] = [("", root[2])]
        trees = 0
        while stack:
            prefix, data = stack.pop()
            for name, (mode, sha) in _parse_tree(data).items():
                if mode == TREE_MODE:
                    trees += 1
                    if trees > max_trees:
                        return None
                    sub = self._cat(sha)
                    if sub is None:
                        raise StoreError(f"tree {sha} missing in {self._git_dir}")
                    stack.append((f"{prefix}{name}/", sub[2]))
                elif mode != "160000":
                    files[prefix + name] = sha
        return files

    def _ls_tree(self, commit: str) -> dict[str, str]:
        out = self._git("ls-tree", "-r", "-z", "--full-tree", "--end-of-options", commit).stdout
        files: dict[str, str] = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _tab, name = record.partition(b"\t")
            _mode, kind, sha = meta.split(b" ")
            if kind == b"blob":
                files[name.decode("utf-8", "surrogateescape")] = sha.decode("ascii")
        return files

    @_exclusive
    def commit_time(self, sha: str) -> float:
        """Return the committer time of commit `sha` (seconds since the epoch)."""
        found = self._cat(sha)
        if found is None or found[1] != "commit":
            raise StoreError(f"no commit {sha} in {self._git_dir}")
        for line in found[2].split(b"\n"):
            if line.startswith(b"committer "):
                return float(line.rsplit(b" ", 2)[1])
            if not line:
                break
        raise StoreError(f"commit {sha} has no committer line")

    @_exclusive
    def log(
        self, ref: str, *, path: str | None = None, n: int = 20, first_parent: bool = False
    ) -> list[CommitInfo]:
        """Return the newest `n` commits reachable from `ref` (touching `path` if given), newest first.

        Always bounded by `-n`: a path-limited log over a whole long history is slow (GIT-NOTES).
        `first_parent`: only the branch's own line (a merge shows as the commit that brought the change).
        """
        tip = self.resolve(ref)
        if tip is None:
            return []
        fields = ("%H", "%ct", "%an <%ae>", "%s", "%b", "%(trailers:only,unfold)")
        args = ["log", "-z", f"-n{max(n, 0)}", "--format=" + "%x00".join(fields)]
        args += ["--first-parent"] if first_parent else []
        args += ["--end-of-options", tip]
        if path is not None:
            args += ["--", path]
        raw = self._git(*args).stdout.decode("utf-8", "replace").split("\0")
        commits: list[CommitInfo] = []
        for i in range(0, len(raw) - len(fields) + 1, len(fields)):
            sha, ct, author, subject, body, trailer_text = raw[i : i + len(fields)]
            trailers = tuple(
                (key.strip(), value.strip())
                for key, _colon, value in (line.partition(":") for line in trailer_text.splitlines())
                if key
            )
            commits.append(
                CommitInfo(
                    sha=sha,
                    timestamp=float(ct),
                    author=author,
                    subject=subject,
                    body=_strip_trailer_block(body, trailers),
                    trailers=trailers,
                )
            )
        return commits

    # -- writing objects ----------------------------------------------------------------------

    def _store(self, kind: bytes, data: bytes) -> str:
        """Write one loose object (unless it exists) and return its sha.

        As git does: a temporary file in the object's folder renamed into place (readers never see
        half an object), read-only, no fsync (git does not fsync loose objects by default either).
        Compression uses level 1 (core.looseCompression's default) with a 4 KiB window: for
        status files of a few KB, setting up zlib's default 32 KiB window cost more than
        compressing (0.09 ms against 0.03 ms a checkpoint). Any zlib reader, git's included,
        inflates it. Plain `os` calls: this runs once per object of every checkpoint.
        """
        raw = kind + b" " + str(len(data)).encode() + b"\0" + data
        sha = hashlib.sha1(raw).hexdigest()
        if self._pack is not None:
            self._pack[sha] = (_PACK_TYPES[kind], data)
            return sha
        folder = f"{self._objects_dir}/{sha[:2]}"
        path = f"{folder}/{sha[2:]}"
        if os.path.exists(path):
            return sha
        compressor = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
        payload = compressor.compress(raw) + compressor.flush()
        tmp = f"{folder}/tmp_obj_{os.getpid()}_{threading.get_ident()}_{next(self._tmp_names)}"
        try:
            if sha[:2] not in self._object_folders:
                os.makedirs(folder, exist_ok=True)
                self._object_folders.add(sha[:2])
            _write_new_file(tmp, payload)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"cannot write a {kind.decode()} object in {self._common_dir}: {exc}") from exc
        return sha

    @contextlib.contextmanager
    def one_pack(self) -> Iterator[None]:
        """Objects written inside the block go to one new pack file at its end, not a file each.

        For the status writer's group commits: creating a file per object was the larger part of
        a checkpoint's cost on ext4 (0.1-0.5 ms each, every object of every checkpoint), against
        one pack and its index per commit. The pack lands before the block returns, so a ref may
        point at its objects right after; if the block raises, nothing is written (nothing can
        refer to those objects yet). Small packs pile up: `maintain()` has `gc --auto` merge them.
        """
        if self._pack is not None:
            raise StoreError("one_pack() blocks do not nest")
        self._pack = {}
        try:
            yield
            objects = self._pack
        finally:
            self._pack = None
        if objects:
            self._write_pack(objects)

    def _write_pack(self, objects: Mapping[str, tuple[int, bytes]]) -> None:
        """Write a version-2 pack of whole (undeltified) objects and its version-2 index."""
        body = bytearray(b"PACK" + struct.pack(">II", 2, len(objects)))
        entries: list[tuple[bytes, int, int]] = []  # (sha, crc32, offset), as the index lists them
        for sha, (type_code, data) in objects.items():
            offset = len(body)
            size = len(data)
            header = bytearray()
            byte = (type_code << 4) | (size & 0x0F)
            size >>= 4
            while size:
                header.append(byte | 0x80)
                byte = size & 0x7F
                size >>= 7
            header.append(byte)
            compressor = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
            record = bytes(header) + compressor.compress(data) + compressor.flush()
            entries.append((bytes.fromhex(sha), zlib.crc32(record), offset))
            body += record
        if len(body) >= 1 << 31:
            raise StoreError("one commit's objects exceed 2 GiB, too large for a pack without 64-bit offsets")
        checksum = hashlib.sha1(body).digest()
        body += checksum
        entries.sort()
        counts = [0] * 256
        for sha_bytes, _, _ in entries:
            counts[sha_bytes[0]] += 1
        fanout = list(itertools.accumulate(counts))
        index = bytearray(b"\xfftOc" + struct.pack(">I", 2) + struct.pack(">256I", *fanout))
        index += b"".join(sha_bytes for sha_bytes, _, _ in entries)
        index += struct.pack(f">{len(entries)}I", *(crc for _, crc, _ in entries))
        index += struct.pack(f">{len(entries)}I", *(offset for _, _, offset in entries))
        index += checksum
        index += hashlib.sha1(index).digest()
        # As git does: both files under temporary names, then the pack renamed into place before
        # its index (readers find packs by their index, which must never name a missing pack).
        # The temporary names must not end in .pack or .idx: git takes any *.idx in the folder for
        # a pack (a concurrent `repack` failed on one), and names its own tmp_pack_* / tmp_idx_*.
        folder = f"{self._objects_dir}/pack"
        name = f"{folder}/pack-{checksum.hex()}"
        unique = f"{os.getpid()}_{threading.get_ident()}_{next(self._tmp_names)}"
        files = [
            (f"{folder}/tmp_pack_{unique}", body, name + ".pack"),
            (f"{folder}/tmp_idx_{unique}", index, name + ".idx"),
        ]
        try:
            os.makedirs(folder, exist_ok=True)
            for temporary, content, _ in files:
                _write_new_file(temporary, content)
            faults.reached("objects-written")
            for temporary, _, final in files:
                os.replace(temporary, final)
                faults.reached("pack-renamed" if final.endswith(".pack") else "pack-written")
        except OSError as exc:
            for temporary, _, _ in files:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            raise StoreError(f"cannot write a pack in {self._common_dir}: {exc}") from exc

    @_exclusive
    def write_blob(self, data: bytes) -> str:
        """Store `data` as a blob and return its sha."""
        return self._store(b"blob", data)

    @_exclusive
    def write_tree(self, entries: Mapping[str, tuple[str, str]] | TreeBuilder) -> str:
        """Store a tree of name -> (mode, sha) entries (`100644` files, `40000` trees) and return its sha."""
        builder = entries if isinstance(entries, TreeBuilder) else TreeBuilder(entries)
        return self._store(b"tree", builder.data())

    @_exclusive
    def write_commit(
        self,
        *,
        tree: str,
        parents: Sequence[str],
        message: str,
        author: tuple[str, str],
        committer: tuple[str, str] | None = None,
        timestamp: float | None = None,
    ) -> str:
        """Store a commit object and return its sha (no ref moves: see `update_ref`).

        `author`/`committer` are (name, email); `timestamp` defaults to now, in the local time zone
        as git records it.
        """
        when = time.time() if timestamp is None else timestamp
        lines = [f"tree {tree}"]
        lines += [f"parent {parent}" for parent in parents]
        lines.append(f"author {_signature(author, when)}")
        lines.append(f"committer {_signature(committer or author, when)}")
        text = "\n".join(lines) + "\n\n" + message.rstrip("\n") + "\n"
        return self._store(b"commit", text.encode("utf-8"))

    # -- remotes ------------------------------------------------------------------------------

    @_exclusive
    def refs(self, *prefixes: str) -> dict[str, str]:
        """Return every ref under `prefixes` (such as `refs/heads/acp/`) as full name -> sha."""
        out = self._git("for-each-ref", "--format=%(objectname) %(refname)", *prefixes).stdout
        found: dict[str, str] = {}
        for line in out.decode("utf-8", "replace").splitlines():
            sha, _space, name = line.partition(" ")
            found[name] = sha
        return found

    @_exclusive
    def delete_ref(self, ref: str, old: str) -> None:
        """Delete `ref` if it still points at `old`, or raise RefConflictError."""
        proc = self._git("update-ref", "-d", ref, old, check=False)
        if proc.returncode != 0:
            actual = self.resolve(ref)
            if actual is None:
                return
            err = proc.stderr.decode("utf-8", "replace")
            if actual == old and (match := _LOCKED.search(err)):
                raise LockedError(f"cannot delete {ref}: {match.group(1)} exists", lock=match.group(1))
            raise RefConflictError(ref, expected=old, actual=actual)

    @_exclusive
    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether commit `ancestor` is `descendant` or one of its ancestors."""
        proc = self._git("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if proc.returncode not in (0, 1):
            raise StoreError(f"git merge-base failed in {self._git_dir}: {_tail(proc)}")
        return proc.returncode == 0

    @_exclusive
    def count(self, tip: str, *, exclude: str | None = None) -> int:
        """Return how many commits `tip` has that `exclude` (if given) does not."""
        args = ["rev-list", "--count", tip] + ([f"^{exclude}"] if exclude else [])
        return int(self._git(*args).stdout.decode().strip() or 0)

    @_exclusive
    def tree_of(self, commit: str) -> str:
        """Return the tree sha of `commit`."""
        found = self._cat(commit)
        if found is None or found[1] != "commit":
            raise StoreError(f"no commit {commit} in {self._git_dir}")
        return found[2][5:45].decode("ascii")  # a commit object starts with "tree <sha>"

    @_exclusive
    def config(self, key: str) -> str | None:
        """Return the repository's value of a config `key`, or None."""
        proc = self._git("config", "--get", key, check=False)
        return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else None

    @_exclusive
    def set_config(self, key: str, value: str) -> None:
        """Set a config `key` of this repository."""
        self._git("config", key, value)

    @_exclusive
    def fetch(self, remote: str, refspecs: Sequence[str], *, prune: bool = True) -> None:
        """Fetch `refspecs` from the remote named `remote`; raise RemoteError when it fails."""
        args = ["fetch", "-q", "--no-tags", "--no-write-fetch-head", *(["--prune"] if prune else [])]
        proc = _run(
            [f"--git-dir={self._git_dir}", *args, remote, *refspecs],
            cwd=self._git_dir,
            check=False,
            network=True,
        )
        if proc.returncode != 0:
            raise RemoteError(f"git fetch from {self._remote_name(remote)} failed: {self._redacted(proc)}")

    @_exclusive
    def push(self, remote: str, updates: Sequence[PushUpdate]) -> dict[str, str | None]:
        """Push each update with `--force-with-lease` (its expected value); return ref -> None or why refused.

        A ref whose remote value is not the expected one is rejected (nothing is overwritten); the
        others go through. Raises RemoteError when the push failed as a whole (unreachable, refused).
        """
        if not updates:
            return {}
        args = ["push", "--porcelain", "--no-verify"]
        args += [f"--force-with-lease={u.ref}:{u.expected or ''}" for u in updates]
        args += [remote, *(f"{u.sha}:{u.ref}" for u in updates)]
        proc = _run([f"--git-dir={self._git_dir}", *args], cwd=self._git_dir, check=False, network=True)
        results: dict[str, str | None] = {}
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            flag, _tab, rest = line.partition("\t")
            refspec, _tab, summary = rest.partition("\t")
            if len(flag) != 1 or ":" not in refspec:
                continue
            ref = refspec.rpartition(":")[2]
            results[ref] = (summary.strip() or "rejected") if flag == "!" else None
        missing = [u.ref for u in updates if u.ref not in results]
        if missing:
            raise RemoteError(f"git push to {self._remote_name(remote)} failed: {self._redacted(proc)}")
        return results

    def _remote_name(self, remote: str) -> str:
        url = self._repo.git.config("--get", f"remote.{remote}.url", with_exceptions=False)
        return redact_url(str(url).strip() or remote)

    def _redacted(self, proc: subprocess.CompletedProcess[bytes]) -> str:
        return redact_url(_tail(proc))

    # -- maintenance --------------------------------------------------------------------------

    @_exclusive
    def write_commit_graph(self) -> None:
        """Refresh the commit-graph with changed-path Bloom filters (path-limited logs get ~8x faster).

        Slow on big histories: run it in the background, never on the checkpoint path.
        """
        self._git("commit-graph", "write", "--reachable", "--changed-paths")

    @_exclusive
    def maintain(self, *, shared: bool = True) -> None:
        """Roll loose objects and small packs up and refresh the commit-graph; in a mirror, `gc --auto` too.

        Each group commit adds a small pack (`one_pack`); approval and question branches add loose
        objects (GIT-NOTES: gc shrank 7.9 MB of them to 365 KB). `repack --geometric=2` packs the
        loose objects and merges packs only until each is at least twice the size of the next
        smaller one, so its cost follows what was written since the last run, not the repository
        size, and it is safe beside a running writer (it only deletes what it rewrote).

        `shared`: people work in this repository too (a local repository served in place). Then
        nothing here may take a lock their git commands need: no `gc --auto` (its `pack-refs` and
        `reflog expire` lock each ref, and `git commit` fails on such a lock), and the commit-graph
        is written as a split chain (`git gc` fails on the `commit-graph.lock` a full write holds,
        not on the chain's). Pruning and ref packing are left to their own `git gc` / `git
        maintenance`. A mirror in the cache directory is the reconciler's alone: `gc --auto` (in
        the foreground: we are on a background thread already) keeps it packed and pruned.
        """
        self._git("repack", "-d", "-q", "--geometric=2")
        if not shared:
            self._git("-c", "gc.autoDetach=false", "gc", "--auto", "--quiet")
        self._git("commit-graph", "write", "--reachable", "--changed-paths", *(["--split"] if shared else []))


# -- commits made for a person (command line) --------------------------------------------------


def is_url(target: str) -> bool:
    """Whether `target` names a remote repository rather than a local path.

    "https://...", "git://...", "ssh://...", "file://..." and scp-like "user@host:path".
    """
    return "://" in target or bool(re.match(r"^[^/:]+@[^/:]+:", target))


def redact_url(text: str) -> str:
    """Drop the `user:password@` part of any URL in `text` (it may hold a token)."""
    return _USERINFO.sub("***@", text)


def init_bare(path: Path) -> None:
    """Create an empty bare repository at `path` (its parents too)."""
    path.mkdir(parents=True, exist_ok=True)
    _run(["init", "-q", "--bare", str(path)], cwd=path)


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
    work: Path, files: Mapping[str, bytes | None], message: str, config: Sequence[str] = ()
) -> str | None:
    """Stage exactly `files` in `work`, commit them, return the sha; None if nothing changed."""
    written = [p for p, data in files.items() if data is not None]
    deleted = [p for p, data in files.items() if data is None]
    # --literal-pathspecs: a name with `*` or `:` is a file name, not a pattern.
    if written:
        _run(["--literal-pathspecs", "add", "--force", "--", *written], cwd=work)
    if deleted:
        _run(["--literal-pathspecs", "rm", "-q", "--cached", "--ignore-unmatch", "--", *deleted], cwd=work)
    if _run(["diff", "--cached", "--quiet"], cwd=work, check=False).returncode == 0:
        return None
    _run([*config, "commit", "-q", "-F", "-"], cwd=work, stdin=message.encode("utf-8"))
    return _run(["rev-parse", "HEAD"], cwd=work).stdout.decode().strip()


def _checked_out_at(repo: GitRepo, branch: str) -> Path | None:
    """Return the working tree where `branch` is checked out, if any."""
    out = repo._git("worktree", "list", "--porcelain").stdout.decode("utf-8", "replace")
    for block in out.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("worktree ") and f"branch refs/heads/{branch}" in lines:
            path = Path(lines[0].removeprefix("worktree "))
            if path.is_dir():
                return path
    return None


def _commit_in_work_tree(work: Path, files: Mapping[str, bytes | None], message: str) -> str:
    """Commit `files` through the working tree `work`, refusing to mix in anyone's pending changes."""
    git_dir = Path(_run(["rev-parse", "--absolute-git-dir"], cwd=work).stdout.decode().strip())
    for marker, what in _IN_PROGRESS.items():
        if (git_dir / marker).exists():
            raise StoreError(f"{what} is in progress in {work}: finish or abort it first")
    diff = _run(["diff", "--cached", "--name-only", "-z"], cwd=work).stdout.decode("utf-8", "replace")
    staged = [p for p in diff.split("\0") if p]
    if staged:
        raise StoreError(
            f"the index of {work} has staged changes ({', '.join(staged[:5])}) that a commit would mix in: "
            "commit or unstage them first"
        )
    # Untracked and ignored files count too: writing over them would destroy someone's work.
    status_args = ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching"]
    status = _run(["--literal-pathspecs", *status_args, "--", *files], cwd=work).stdout
    dirty = [entry[3:] for entry in status.decode("utf-8", "replace").split("\0") if entry]
    if dirty:
        raise StoreError(
            f"uncommitted changes to {', '.join(dirty[:5])} in {work}: commit, stash or remove them first"
        )
    _write_files(work, files)
    try:
        sha = _stage_and_commit(work, files, message)
    except StoreError:
        _restore(work, files)
        raise
    if sha is None:
        return _run(["rev-parse", "HEAD"], cwd=work).stdout.decode().strip()
    return sha


def _restore(work: Path, files: Mapping[str, bytes | None]) -> None:
    """Put `files` back as they were in HEAD after a failed commit (they were clean before)."""
    paths = list(files)
    _run(["--literal-pathspecs", "reset", "-q", "--", *paths], cwd=work, check=False)
    for rel in paths:
        restored = _run(["--literal-pathspecs", "checkout", "-q", "HEAD", "--", rel], cwd=work, check=False)
        if restored.returncode != 0:  # not in HEAD: it was absent before
            (work / rel).unlink(missing_ok=True)


def _commit_via_clone(
    source: str, files: Mapping[str, bytes | None], message: str, branch: str, identity: Sequence[str]
) -> str:
    """Commit `files` on `branch` of `source` through a temporary clone, then push it back."""
    with tempfile.TemporaryDirectory(prefix="gitops-acp-commit-") as tmp:
        for attempt in range(3):
            work = Path(tmp) / f"clone-{attempt}"
            heads = _run(["ls-remote", "--heads", "--", source, f"refs/heads/{branch}"], cwd=Path(tmp)).stdout
            if heads.strip():
                clone_args = ["clone", "-q", "--no-tags", "--single-branch", "--branch", branch]
                _run([*clone_args, "--", source, str(work)], cwd=Path(tmp))
            else:  # a new branch (or an empty repository): start from nothing
                _run(["init", "-q", "-b", branch, str(work)], cwd=Path(tmp))
                _run(["remote", "add", "origin", source], cwd=work)
            _write_files(work, files)
            sha = _stage_and_commit(work, files, message, identity)
            if sha is None:
                return _run(["rev-parse", "HEAD"], cwd=work).stdout.decode().strip()
            pushed = _run(["push", "-q", "origin", f"HEAD:refs/heads/{branch}"], cwd=work, check=False)
            if pushed.returncode == 0:
                return sha
            err = pushed.stderr.decode("utf-8", "replace")
            if "rejected" not in err and "fetch first" not in err:
                raise StoreError(f"git push to {source} failed: {_tail(pushed)}")
            shutil.rmtree(work, ignore_errors=True)  # someone pushed first: redo it on their commit
    raise StoreError(f"{branch} of {source} kept moving while committing; try again")


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
        # The clone would not see this repository's own user.name/email (only the global ones).
        identity: list[str] = []
        for key in ("user.name", "user.email"):
            value = repo._git("config", "--get", key, check=False).stdout.decode().strip()
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
    _run(["init", "-q", "-b", "main", str(root)], cwd=root)
    _write_files(root, files)
    if files:
        _run(["--literal-pathspecs", "add", "--force", "--", *files], cwd=root)
    _run(["commit", "-q", "--allow-empty", "-F", "-"], cwd=root, stdin=message.encode("utf-8"))
    return _run(["rev-parse", "HEAD"], cwd=root).stdout.decode().strip()
