"""Starting git with `os.posix_spawnp`, without `subprocess`.

Importing `subprocess` (and the `threading`, `selectors` and `locale` it brings) costs a reader ~4
ms, a tenth of `history`'s budget (issue 12: within 50 ms). Most git commands need no more than
this: arguments, an environment, the output and the exit code. `process.run` uses `output` for
those, and `ReadOnlyRepo` starts its `cat-file --batch` with `start`; commands that take input
or a timeout, and the long-lived `update-ref --stdin`, still go through `subprocess`.

As `subprocess` does for its children, SIGPIPE is set back to its default in the child (Python
ignores it), and file descriptors are not passed on (Python opens them non-inheritable). There is
no working directory argument in 3.11's `posix_spawn`: callers run `git -C DIR` instead.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Mapping, Sequence

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    from typing import IO

__all__ = ["Child", "output", "start"]

_CHUNK = 65536


class Child:
    """A started process and the pipes asked for."""

    __slots__ = ("pid", "returncode", "stdin", "stdout")

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Its exit code if it has exited (-N for signal N, as `subprocess` says), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        """Wait for it to exit; return its exit code."""
        if self.returncode is None:
            self.returncode = _wait(self.pid)
        return self.returncode

    def close(self) -> int:
        """Close its stdin (a `--batch` command then ends), wait for it, close its stdout."""
        with contextlib.suppress(OSError):  # it had stopped: the pipe was broken
            self.stdin.close()
        code = self.wait()
        self.stdout.close()
        return code


def output(argv: Sequence[str], *, env: Mapping[str, str]) -> tuple[int, bytes, bytes]:
    """Run `argv` to its end with no input; return (exit code, stdout, stderr).

    Both pipes are read as they fill (poll), so a command that writes much to one while the
    other is unread never blocks. Raises OSError when the program cannot be started.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = _spawn(argv, env, stdin=None, stdout=out_w, stderr=err_w)
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    try:
        remaining = len(chunks)
        while remaining:
            for fd, _event in poller.poll():
                data = os.read(fd, _CHUNK)
                if data:
                    chunks[fd].append(data)
                else:  # end of file: the child (and any it passed the pipe to) closed it
                    poller.unregister(fd)
                    remaining -= 1
    except BaseException:  # interrupted: the child does not outlive the call (as `subprocess.run`)
        os.kill(pid, signal.SIGKILL)
        _wait(pid)
        raise
    finally:
        for fd in chunks:
            os.close(fd)
    return _wait(pid), b"".join(chunks[out_r]), b"".join(chunks[err_r])


def start(argv: Sequence[str], *, env: Mapping[str, str]) -> Child:
    """Start `argv` with pipes to its stdin and stdout, its stderr to /dev/null (`cat-file --batch`).

    The caller writes requests and reads answers, then closes stdin and waits. Raises OSError
    when the program cannot be started.
    """
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        pid = _spawn(argv, env, stdin=in_r, stdout=out_w, stderr=None)
    except BaseException:
        os.close(in_w)
        os.close(out_r)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    return Child(pid, os.fdopen(in_w, "wb"), os.fdopen(out_r, "rb"))


def _spawn(
    argv: Sequence[str], env: Mapping[str, str], *, stdin: int | None, stdout: int, stderr: int | None
) -> int:
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
    if stdin is None:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    else:
        actions.append((os.POSIX_SPAWN_DUP2, stdin, 0))
    actions.append((os.POSIX_SPAWN_DUP2, stdout, 1))
    if stderr is None:
        actions.append((os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0))
    else:
        actions.append((os.POSIX_SPAWN_DUP2, stderr, 2))
    return os.posix_spawnp(argv[0], list(argv), env, file_actions=actions, setsigdef=(signal.SIGPIPE,))


def _wait(pid: int) -> int:
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
