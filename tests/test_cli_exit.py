"""How the `gitops-acp` program ends (`cli.main.run`): without the interpreter's teardown when
nothing is left for it, and as any Python program otherwise.

Each case runs a small program in a new process whose `main` is replaced by the case's command:
what is checked is what a shell sees (the output, the exit code) and what ran at exit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _program(body: str) -> subprocess.CompletedProcess[str]:
    source = "import gitops_acp.cli.main as cli\n" + textwrap.dedent(body) + "\ncli.run()\n"
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60)


def test_output_and_exit_code_arrive_whole() -> None:
    done = _program(
        """
        import sys
        def main():
            sys.stdout.write("x" * 1_000_000)  # far more than a pipe holds: all of it is flushed
            print("error: the last line", file=sys.stderr)
            return 3
        cli.main = main
        """
    )
    assert done.returncode == 3
    assert done.stdout == "x" * 1_000_000
    assert done.stderr == "error: the last line\n"


def test_nothing_left_to_do_skips_the_teardown() -> None:
    # An object's finalizer runs in the teardown: without one, it never runs (the ~5 ms saved).
    done = _program(
        """
        import sys
        class Held:
            def __del__(self):
                sys.stderr.write("torn down\\n")
        kept = Held()
        cli.main = lambda: 0
        """
    )
    assert done.returncode == 0
    assert "torn down" not in done.stderr


def test_atexit_callbacks_still_run(tmp_path: Path) -> None:
    marker = tmp_path / "flushed"
    done = _program(
        f"""
        import atexit, pathlib
        def main():
            atexit.register(pathlib.Path({str(marker)!r}).write_text, "yes")
            return 1
        cli.main = main
        """
    )
    assert done.returncode == 1
    assert marker.read_text() == "yes"


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    done = _program(
        f"""
        import pathlib, threading, time
        def late():
            time.sleep(0.3)
            pathlib.Path({str(marker)!r}).write_text("yes")
        def main():
            threading.Thread(target=late).start()
            return 0
        cli.main = main
        """
    )
    assert done.returncode == 0
    assert marker.read_text() == "yes"


def test_a_daemon_thread_is_not_waited_for() -> None:
    done = _program(
        """
        import threading, time
        def main():
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
            return 0
        cli.main = main
        """
    )
    assert done.returncode == 0  # and within the timeout: the daemon is left, as Python leaves it


def test_usage_errors_and_help_keep_their_exit_codes() -> None:
    for body, code in (
        ("import sys\ndef main():\n    sys.exit(2)\ncli.main = main", 2),
        ("import sys\ndef main():\n    sys.exit()\ncli.main = main", 0),
    ):
        assert _program(body).returncode == code
    done = _program("import sys\ndef main():\n    sys.exit('a message')\ncli.main = main")
    assert (done.returncode, done.stderr) == (1, "a message\n")


def test_the_real_program_help_and_bad_usage() -> None:
    run = [sys.executable, "-m", "gitops_acp"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert "history" in shown.stdout
    refused = subprocess.run([*run, "no-such-command"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "invalid choice" in refused.stderr
