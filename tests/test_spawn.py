"""store/git/spawn.py: git started without `subprocess`, as `subprocess` would start it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gitops_acp.errors import StoreError
from gitops_acp.store.git import process, spawn

ENV = dict(os.environ)


def test_output_returns_the_exit_code_and_both_streams() -> None:
    code, out, err = spawn.output(["sh", "-c", "echo out; echo err >&2; exit 3"], env=ENV)
    assert (code, out, err) == (3, b"out\n", b"err\n")


def test_a_full_stderr_never_blocks_the_reading_of_stdout() -> None:
    # 1 MB to stderr before a byte to stdout: a reader of stdout alone would wait forever.
    script = "import sys; sys.stderr.write('e' * 1_000_000); sys.stdout.write('o' * 1_000_000)"
    code, out, err = spawn.output([sys.executable, "-c", script], env=ENV)
    assert (code, len(out), len(err)) == (0, 1_000_000, 1_000_000)


def test_the_child_reads_nothing_and_dies_of_its_signals_as_subprocess_reports() -> None:
    assert spawn.output(["cat"], env=ENV) == (0, b"", b"")  # stdin is /dev/null
    code, _, _ = spawn.output(["sh", "-c", "kill -TERM $$"], env=ENV)
    assert code == -15


def test_sigpipe_is_back_to_its_default_and_no_descriptor_is_passed_on(tmp_path: Path) -> None:
    # Python ignores SIGPIPE; a child must not (git killed by it is what `subprocess` gives too).
    _, out, _ = spawn.output(["sh", "-c", "grep SigIgn /proc/$$/status"], env=ENV)
    ignored = int(out.split()[1], 16)
    assert not ignored & (1 << (13 - 1)), out  # SIGPIPE is 13
    held = tmp_path / "held"
    with open(held, "w"):  # open here: the child lists where its descriptors point, not its numbers
        _, out, _ = spawn.output(["sh", "-c", "for fd in /proc/$$/fd/*; do readlink $fd; done"], env=ENV)
        assert out, "nothing listed"
        assert str(held) not in out.decode(), out


def test_a_missing_program_raises_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        spawn.output(["no-such-program-gitops-acp"], env=ENV)
    with pytest.raises(FileNotFoundError):
        spawn.start(["no-such-program-gitops-acp"], env=ENV)


def test_a_started_child_answers_on_its_pipes_and_ends_when_its_stdin_closes() -> None:
    child = spawn.start(["cat"], env=ENV)
    child.stdin.write(b"one\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"one\n"
    assert child.poll() is None
    assert child.close() == 0
    assert child.poll() == 0  # reaped once, remembered


def test_process_run_runs_in_cwd_and_says_what_failed(tmp_path: Path) -> None:
    process.run(["init", "-q", "repo"], cwd=tmp_path)
    top = process.run(["rev-parse", "--show-toplevel"], cwd=tmp_path / "repo")
    assert top.stdout.decode().strip() == str((tmp_path / "repo").resolve())
    with pytest.raises(StoreError, match=r"git rev-parse failed in .*repo: fatal: Needed a single revision"):
        process.run(["rev-parse", "--verify", "bad-ref"], cwd=tmp_path / "repo")
    failed = process.run(["rev-parse", "--verify", "bad-ref"], cwd=tmp_path / "repo", check=False)
    assert failed.returncode == 128
    assert failed.args[:3] == ["git", "-C", str(tmp_path / "repo")]
