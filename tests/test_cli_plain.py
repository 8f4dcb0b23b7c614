"""`history KIND NAME [-n N]`, `describe KIND NAME` and `get KIND NAME [-o FORMAT]` read without
argparse: as argparse reads them, or left to it."""

from __future__ import annotations

import contextlib
import io
import itertools
import random

import pytest

from gitops_acp.cli import main as cli_main

WORDS = ["history", "task", "toolcall", "hello", "get", "", "x y", "2_0", " 7", "-", "--", "-5", "-n5"]
WORDS += ["-n", "--max-count", "--max-count=3", "-n=4", "--max-count=", "--max", "--repo", "--repo=/s"]
WORDS += [
    "--repo=",
    "--rep",
    "/r",
    "-h",
    "--help",
    "--version",
    "--debug",
    "-v",
    "--verbose",
    "-x",
    "0",
    "12",
]
WORDS += ["-o", "--output", "yaml", "json", "wide", "-o=json", "--output=yaml", "-ojson", "--out", "table"]
WORDS += ["-l", "--limit", "--all", "-A"]


def _argparse(argv: list[str]) -> dict[str, object] | None:
    """What the real parser makes of `argv` (None: it refuses it, or prints help or the version)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return vars(cli_main.build_parser(argv).parse_args(argv))
    except SystemExit:
        return None


def _check(argv: list[str]) -> bool:
    plain = cli_main._plain(argv)
    if plain is None:
        return False
    assert vars(plain) == _argparse(argv), argv
    return True


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "task", "hello"],
        ["history", "task", "hello", "-n", "20"],
        ["--repo", "/r", "history", "tc", "hello", "--max-count", "3"],
        ["history", "-n", "5", "task", "--repo=/r", "hello"],
        ["history", "task", "-n", "5", "hello", "-n", "7"],
        ["history", "task", "hello", "--max-count=+2_0"],
        ["--repo=", "history", "", "hello"],
        ["describe", "task", "hello"],
        ["describe", "--repo", "/r", "toolcall", "hello"],
        ["get", "task", "hello"],
        ["get", "task", "hello", "-o", "yaml"],
        ["--repo", "/r", "get", "-o", "json", "tc", "hello", "--output=wide"],
    ],
)
def test_plain_command_lines_are_read_as_argparse_reads_them(argv: list[str]) -> None:
    assert _check(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "task", "hello", "-h"],
        ["history", "task", "hello", "--max", "3"],  # an abbreviation: argparse's to accept
        ["history", "task", "hello", "-n", "-5"],
        ["history", "task", "hello", "-n", "five"],
        ["history", "task", "hello", "--debug"],
        ["history", "task"],
        ["history", "task", "hello", "extra"],
        ["-n", "3", "history", "task", "hello"],  # the top level has no -n
        ["get", "task"],  # a list
        ["get", "task", "hello", "-o", "table"],  # not one of the choices
        ["get", "task", "hello", "-ojson"],  # argparse's to read
        ["get", "task", "hello", "-n", "3"],  # get has no -n
        ["history", "task", "hello", "-o", "json"],  # history has no -o
        ["history", "task", "hello", "--", "x"],
        ["describe", "task", "hello", "-n", "3"],  # describe has no -n
        ["describe", "task"],
    ],
)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert cli_main._plain(argv) is None


def test_random_command_lines_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(12)
    read = 0
    for environment in (None, "/from/env"):
        if environment is not None:
            monkeypatch.setenv("GITOPS_ACP_REPO", environment)
        for _ in range(1500):
            argv = [rnd.choice(WORDS) for _ in range(rnd.randint(0, 7))]
            if rnd.random() < 0.7:  # most lines name the command and two words
                at = rnd.randint(0, len(argv))
                command = rnd.choice(["history", "describe", "get"])
                argv[at:at] = [command, rnd.choice(["task", "tc"]), rnd.choice(["a", "b-1"])]
            read += _check(argv)
        for argv in itertools.permutations(["history", "task", "a", "-n", "2", "--repo", "/r"]):
            read += _check(list(argv))
        for argv in itertools.permutations(["describe", "task", "a", "--repo", "/r"]):
            read += _check(list(argv))
        for argv in itertools.permutations(["get", "task", "a", "-o", "yaml", "--repo", "/r"]):
            read += _check(list(argv))
    assert read > 300  # many of them plain
