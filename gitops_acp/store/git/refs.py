"""Git refs: reading them fast, moving them only by compare-and-swap, and walking their history.

Refs are where the store's concurrency lives: several writers (the status writer, people's
``git commit``, a fetch) move the same branches, so a ref is moved only by ``git update-ref <ref>
<new> <old>`` semantics (GitPython's ref writing has no compare-and-swap), here through one
long-lived ``git update-ref --stdin`` per repository. Refs are read from the loose ref files and
``packed-refs`` directly, because the watcher re-reads them on every wake-up; anything unusual falls
back to ``git rev-parse``. ``GitRepo`` (``repo.py``) holds one `Refs`; the history readers
(``store/history.py``) get `CommitInfo` from `Refs.log`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence

from gitops_acp import faults
from gitops_acp.errors import ConflictError, LockedError, StoreError
from gitops_acp.store.git import process

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:  # the ref files are read with `os`: `history` loads no pathlib (readonly.py)
    import subprocess  # only the writer's `update-ref --stdin` (imported there: spawn.py)
    from pathlib import Path
    from typing import Literal, NamedTuple
else:
    from gitops_acp.tuples import NamedTuple

__all__ = ["ZERO_OID", "CommitInfo", "RefConflictError", "Refs"]

ZERO_OID = "0" * 40
_HEX40 = re.compile(r"[0-9a-f]{40}")
# Patterns of the rarer paths stay text: `re` compiles them on first use and keeps them, so a
# reader that never meets them (`history`) does not compile them at import.
_SHORT_HEX = r"[0-9a-fA-F]{4,40}"
# Ref names the fast path reads as files; anything else (revision syntax, odd characters) goes to
# `git rev-parse`, which also keeps `..` and absolute paths from ever becoming file reads.
_SIMPLE_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
# Refs that live in a worktree's own git dir rather than the common dir (gitrepository-layout(5)).
_PER_WORKTREE_PREFIXES = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")
_CONFLICT_AT = r"is at ([0-9a-f]{40}) but expected"
# git's words for a lock file that is already there (lockfile.c): the ref is held, not moved.
_LOCKED = r"Unable to create '([^']+\.lock)': File exists"
# Trailer lines as git writes them (`Key: value`); used to drop the trailer block from a body.
_TRAILER_LINE = r"[A-Za-z0-9][A-Za-z0-9-]*: "


class CommitInfo(NamedTuple):
    """One commit as `git log` shows it (a named tuple: `dataclasses` would cost `history` ~6 ms)."""

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


class RefConflictError(ConflictError):
    """`update-ref` found the ref somewhere else than expected; `actual` is where it is now."""

    def __init__(self, ref: str, *, expected: str | None, actual: str | None) -> None:
        super().__init__(f"ref {ref} moved: expected {expected or 'no ref'}, found {actual or 'no ref'}")
        self.ref = ref
        self.expected = expected
        self.actual = actual


def _strip_trailer_block(body: str, trailers: tuple[tuple[str, str], ...]) -> str:
    """Drop the last paragraph of `body` when it is the trailer block git parsed."""
    text = body.rstrip("\n")
    if not trailers or not text:
        return text
    head, _sep, last = text.rpartition("\n\n")
    lines = last.splitlines()
    if lines and all(re.match(_TRAILER_LINE, line) or line[:1].isspace() for line in lines):
        return head.rstrip("\n")
    return text


def _trailers(text: str) -> tuple[tuple[str, str], ...]:
    """`%(trailers:only,unfold)` as (key, value) pairs, in message order."""
    return tuple(
        (key.strip(), value.strip())
        for key, _colon, value in (line.partition(":") for line in text.splitlines())
        if key
    )


class Refs:
    """The refs of one repository: read, moved, deleted, listed, and their logs (not thread-safe)."""

    def __init__(self, git_dir: Path | str, common_dir: Path | str) -> None:
        """Work on the repository `git_dir` whose branches and `packed-refs` live in `common_dir`."""
        self._git_dir = git_dir
        self._common_dir = common_dir
        # A reftable repository has no ref files to read: always ask git.
        self._fast_refs = not os.path.exists(os.path.join(common_dir, "reftable"))
        self._packed_key: tuple[int, int, int] | None = None
        self._packed: dict[str, str] = {}
        self._updater: subprocess.Popen[bytes] | None = None  # a long-lived `git update-ref --stdin`

    def _git(self, *args: str, check: bool = True) -> process.Finished:
        return process.in_repo(self._git_dir, *args, check=check)

    # -- reading ------------------------------------------------------------------------------

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
        return False if re.fullmatch(_SHORT_HEX, ref) else None

    def _read_one_ref(self, name: str, *, depth: int) -> str | Literal[False] | None:
        if depth > 5:
            return False  # a symref loop or a long chain: let git report it
        per_worktree = "/" not in name or name.startswith(_PER_WORKTREE_PREFIXES)
        path = os.path.join(self._git_dir if per_worktree else self._common_dir, name)
        try:
            with open(path, "rb") as file:
                content = file.read().decode("utf-8", "replace").strip()
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
        path = os.path.join(self._common_dir, "packed-refs")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._packed_key, self._packed = None, {}
            return self._packed
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._packed_key:
            packed: dict[str, str] = {}
            with open(path, "rb") as file:
                text = file.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if line[:1] in ("#", "^", ""):  # header, peeled tag lines
                    continue
                sha, _space, name = line.partition(" ")
                packed[name] = sha
            self._packed_key, self._packed = key, packed
        return self._packed

    def under(self, *prefixes: str) -> dict[str, str]:
        """Return every ref under `prefixes` (such as `refs/heads/acp/`) as full name -> sha."""
        out = self._git("for-each-ref", "--format=%(objectname) %(refname)", *prefixes).stdout
        found: dict[str, str] = {}
        for line in out.decode("utf-8", "replace").splitlines():
            sha, _space, name = line.partition(" ")
            found[name] = sha
        return found

    # -- moving -------------------------------------------------------------------------------

    def update(self, ref: str, new: str, old: str | None, *, message: str) -> None:
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
        if match := re.search(_CONFLICT_AT, err):
            raise RefConflictError(ref, expected=old, actual=match.group(1))
        if match := re.search(_LOCKED, err):
            # Not a lost race: the ref did not move. Someone holds its lock, or a killed process left
            # it; the caller waits a bounded time and then says which (store/recovery.py).
            raise LockedError(f"{ref} is locked: {match.group(1)} exists", lock=match.group(1))
        actual = self.resolve(ref)
        # "reference already exists", "unable to resolve reference": lost races when the ref is
        # not where we expected it.
        if actual != old:
            raise RefConflictError(ref, expected=old, actual=actual)
        raise StoreError(f"git update-ref {ref} failed: {process.one_line(err)}")

    def _update_via_stdin(self, ref: str, new: str, old: str | None) -> tuple[bool, str | None]:
        """Move the ref in a transaction of one long-lived `git update-ref --stdin`.

        The same compare-and-swap as `git update-ref <ref> <new> <old>` (git locks the ref and
        checks `old` in `prepare`), without a process start per checkpoint: 0.5 ms instead of 2-3 ms,
        most of a single checkpoint's cost. Returns (True, None) when the ref moved; (False, stderr)
        when git refused (the process then exits and is restarted on next use); (False, None) when
        the process could not be used at all.
        """
        import subprocess

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
                    env=process.env(),
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
        err = self.close()
        return False, (err or None)

    def close(self) -> str:
        """Stop the `update-ref --stdin` process (restarted on next use); return what it wrote on stderr."""
        proc, self._updater = self._updater, None
        if proc is None:
            return ""
        import subprocess

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

    def delete(self, ref: str, old: str) -> None:
        """Delete `ref` if it still points at `old`, or raise RefConflictError."""
        proc = self._git("update-ref", "-d", ref, old, check=False)
        if proc.returncode != 0:
            actual = self.resolve(ref)
            if actual is None:
                return
            err = proc.stderr.decode("utf-8", "replace")
            if actual == old and (match := re.search(_LOCKED, err)):
                raise LockedError(f"cannot delete {ref}: {match.group(1)} exists", lock=match.group(1))
            raise RefConflictError(ref, expected=old, actual=actual)

    # -- history ------------------------------------------------------------------------------

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether commit `ancestor` is `descendant` or one of its ancestors."""
        proc = self._git("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if proc.returncode not in (0, 1):
            raise StoreError(f"git merge-base failed in {self._git_dir}: {process.tail(proc)}")
        return proc.returncode == 0

    def count(self, tip: str, *, exclude: str | None = None) -> int:
        """Return how many commits `tip` has that `exclude` (if given) does not."""
        args = ["rev-list", "--count", tip] + ([f"^{exclude}"] if exclude else [])
        return int(self._git(*args).stdout.decode().strip() or 0)

    def log(
        self,
        ref: str,
        *,
        path: str | Sequence[str] | None,
        n: int,
        first_parent: bool,
        since: float | None = None,
        trailers: bool = True,
    ) -> list[CommitInfo]:
        """Return the newest `n` commits reachable from `ref` (touching `path` if given), newest first.

        Always bounded by `-n`: a path-limited log over a whole long history is slow (GIT-NOTES).
        `since` (epoch seconds): stop walking at commits older than that; a path with fewer than
        `n` commits otherwise walks the whole history to be sure. Without `trailers`, each
        commit's are not parsed (an empty tuple) and its body keeps its trailer block: an archive
        commit has 2,000 of them, ~3 ms of git and Python that `history` does not need.
        """
        tip = self.resolve(ref)
        if tip is None:
            return []
        fields: tuple[str, ...] = ("%H", "%ct", "%an <%ae>", "%s", "%b")
        if trailers:
            fields += ("%(trailers:only,unfold)",)
        args = ["log", "-z", f"-n{max(n, 0)}", "--format=" + "%x00".join(fields)]
        args += ["--first-parent"] if first_parent else []
        args += [f"--since={int(since)}"] if since is not None else []
        args += ["--end-of-options", tip]
        if path is not None:
            args += ["--", *([path] if isinstance(path, str) else path)]
        raw = self._git(*args).stdout.decode("utf-8", "replace").split("\0")
        commits: list[CommitInfo] = []
        for i in range(0, len(raw) - len(fields) + 1, len(fields)):
            sha, ct, author, subject, body = raw[i : i + 5]
            parsed = _trailers(raw[i + 5]) if trailers else ()
            commits.append(
                CommitInfo(
                    sha=sha,
                    timestamp=float(ct),
                    author=author,
                    subject=subject,
                    body=_strip_trailer_block(body, parsed) if trailers else body.rstrip("\n"),
                    trailers=parsed,
                )
            )
        return commits
