"""The command line: parse, dispatch to one module per command, and funnel errors into one line.

Exit codes: 0 success; 1 an error the user can act on (`error: ...` on stderr, no traceback
unless --debug); 2 bad usage (argparse); 3 an internal error (a bug: the traceback with --debug);
130 interrupted.

A command is a new process each time, so what it imports is part of every figure (DESIGN §9:
`get task NAME` within 100 ms). The registry names modules, not imports them: a run builds the
parser of its own command only (`--help` builds them all), each command module imports its
dependencies when it runs, and logging is imported only by commands that log.

`history KIND NAME [-n N]` (DESIGN §9 / issue 12: within 50 ms) and `describe KIND NAME` are not
even parsed by argparse when they are written plainly (`_plain`): argparse, with the `shutil` of
its help formatter and the `locale` of its messages, is ~8 ms of a ~50 ms `history`. Anything else
(help, an abbreviation, another option, a mistake) goes to argparse, which reads or refuses it as
always; tests/test_cli_plain.py checks that both read every plain command line alike. (`get`
is left to argparse: its many options would repeat the parser's defaults here.)
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from gitops_acp import __version__
from gitops_acp.errors import ACPError

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)

if TYPE_CHECKING:
    import argparse

__all__ = ["COMMANDS", "build_parser", "main", "run"]

#: The visible registry of commands: name → the module (under `gitops_acp.cli.commands`) with
#: `add_parser(subparsers, name, common)`, which sets `run(args)`.
COMMANDS: dict[str, str] = {
    "init": "init",
    "serve": "serve",
    "get": "get",
    "describe": "describe",
    "history": "history",
    "events": "events",
    "task": "task",
    "approve": "approve",
    "reject": "approve",
    "respond": "respond",
    "validate": "validate",
    "demo": "demo",
    "llm-stub": "llm_stub",
}


def _common_options(*, defaults: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (only the top level sets defaults,
    so `gitops-acp --repo X get` is not undone by the subcommand's own default)."""
    import argparse

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--repo",
        default=default(os.environ.get("GITOPS_ACP_REPO", ".")),
        help="the repository: a path (work tree, .git or bare); default: the current directory",
    )
    common.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks and debug logs"
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log every checkpoint"
    )
    return common


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of every command; given `argv`, of the command it runs only (unless it
    asks for help: then of all of them, as without)."""
    import argparse

    chosen = _command_of(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="gitops-acp",
        description="An Agent Control Plane whose database is a git repository.",
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options(defaults=False)
    for name, module in COMMANDS.items():
        if chosen is None or name == chosen:
            importlib.import_module(f"gitops_acp.cli.commands.{module}").add_parser(subparsers, name, common)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command `argv` runs, read as the real parser reads it; None when it asks for help or the
    version (every command is listed then), or names none."""
    import argparse

    class _Peek(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise ValueError(message)  # let the real parser say it

    if any(arg in ("-h", "--help", "--version") for arg in argv):
        return None
    peek = _Peek(add_help=False, parents=[_common_options(defaults=True)])
    peek.add_argument("command", nargs="?")
    try:
        known, _rest = peek.parse_known_args(argv)
    except ValueError:
        return None
    return known.command if known.command in COMMANDS else None


#: The plain command lines `_plain` reads: the command's option (long, short) for a value, and the
#: attributes its parser sets that the line does not (their defaults).
_PLAIN_COMMANDS: dict[str, tuple[tuple[str, str] | None, dict[str, object]]] = {
    "history": (("--max-count", "-n"), {"max_count": 100}),  # commands/history.py
    "describe": (None, {}),
    "get": (  # commands/get.py
        ("--output", "-o"),
        dict.fromkeys(("output", "selector", "phase", "search", "limit", "after")) | {"archived": False},
    ),
}
_OUTPUTS = ("wide", "yaml", "json")  # get's `choices`


def _plain(arguments: Sequence[str]) -> SimpleNamespace | None:
    """`history KIND NAME` (with `-n N`/`--max-count N` after the command), `describe KIND NAME` or
    `get KIND NAME` (with `-o FORMAT`/`--output FORMAT`), and `--repo PATH` anywhere (`--opt=value`
    too), as the parser would read them; None for anything else, left to argparse (~6 ms of a
    ~80 ms command: argparse imports shutil, and with it the compression modules)."""
    repo = os.environ.get("GITOPS_ACP_REPO", ".")
    words: list[str] = []
    given: list[tuple[str, str]] = []
    split = False  # an option between the second and third word
    at = 0
    while at < len(arguments):
        argument = arguments[at]
        if argument.startswith("-"):
            split = split or len(words) == 2
            option, equals, value = argument.partition("=")
            own = _PLAIN_COMMANDS[words[0]][0] if words and words[0] in _PLAIN_COMMANDS else None
            if option != "--repo" and not (own is not None and option in own):
                return None
            if not equals:
                if at + 1 == len(arguments) or arguments[at + 1].startswith("-"):
                    return None  # no value, or one that looks like an option: argparse decides
                at += 1
                value = arguments[at]
            if option == "--repo":
                repo = value
            else:
                given.append((option, value))
        else:
            words.append(argument)
        at += 1
    if len(words) != 3 or words[0] not in _PLAIN_COMMANDS:
        return None
    command, kind, name = words
    if split and command == "get":
        return None  # its NAME is optional: argparse takes KIND alone there, then refuses NAME
    values = dict(_PLAIN_COMMANDS[command][1])
    for _option, value in given:  # each one given is applied, as argparse does: the last one stays
        if command == "history":
            try:
                values["max_count"] = int(value)  # the parser's `type=int`
            except ValueError:
                return None
        elif value in _OUTPUTS:
            values["output"] = value
        else:
            return None  # not one of the choices: argparse says so
    module = importlib.import_module(f"gitops_acp.cli.commands.{command}")
    return SimpleNamespace(
        repo=repo,
        debug=False,
        verbose=False,
        command=command,
        kind=kind,
        name=name,
        **values,
        run=module.run,
        logs=False,
    )


def _configure_logging(args: argparse.Namespace | SimpleNamespace) -> None:
    if not getattr(args, "logs", True) and not (args.debug or args.verbose):
        # A reader (`get`, `describe`, `history`): nothing it runs logs, so logging (~8 ms of a
        # ~80 ms command) is not even imported. Should a record ever be emitted, Python's last
        # resort prints warnings to stderr unfiltered: such a process resolves no secret, so
        # `redaction` would have nothing to take out of it.
        return
    import logging

    from gitops_acp import redaction

    level = logging.DEBUG if args.debug else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redaction.LogFilter())  # no secret value in any line (DESIGN §10)
    if not args.debug:
        # Third-party request logs would print URLs on every LLM call; our own lines say what matters.
        for noisy in ("httpx", "httpx2", "openai", "mcp", "uvicorn", "watchfiles"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not (args.verbose or args.debug):
        logging.getLogger("gitops_acp").setLevel(logging.WARNING if args.command != "serve" else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = _plain(arguments) or build_parser(arguments).parse_args(arguments)
    _configure_logging(args)
    try:
        code: int = args.run(args)
        return code
    except ACPError as exc:
        if args.debug:
            _traceback()
        from gitops_acp import redaction

        print(redaction.text(f"error: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            _traceback()
        from gitops_acp import redaction

        print(
            redaction.text(
                f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for details)"
            ),
            file=sys.stderr,
        )
        return 3


def run() -> None:
    """The `gitops-acp` program (and `python -m gitops_acp`): `main`, then out without the
    interpreter's teardown when nothing is left for it to do.

    Tearing the interpreter down (every module's objects freed, the readers' `git cat-file`
    closed and waited for) took ~5 ms of a ~48 ms `history -n 20` (DESIGN §9: within 50 ms),
    for nothing a reader needs. So, once the command has returned, its output is flushed and the
    process ends with `os._exit`, unless something asked for work at exit: a callback registered
    with `atexit` (logging flushing its handlers, an exporter sending its last spans) or a thread
    still running that is not a daemon. Then it exits as any Python program does, which runs
    them. A child process we leave (`cat-file`) reads the end of its input and exits by itself.
    Only the program does this: `main` returns, for tests and callers in-process.
    """
    try:
        code = main()
    except SystemExit as exc:  # argparse's: help, version, bad usage (a message is Python's to print)
        if exc.code is not None and not isinstance(exc.code, int):
            raise
        code = exc.code or 0
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the interpreter's exit says so, as always
        raise SystemExit(code) from None
    if _work_at_exit():
        raise SystemExit(code)
    os._exit(code)


def _work_at_exit() -> bool:
    """Whether an exit must run the interpreter's teardown: `atexit` callbacks, or threads to join."""
    import atexit

    count = getattr(atexit, "_ncallbacks", None)  # CPython's; without it, assume there is work
    if count is None or count() > 0:
        return True
    threading = sys.modules.get("threading")
    if threading is None:
        return False
    main_thread = threading.main_thread()
    return any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate())


def _traceback() -> None:
    import traceback

    traceback.print_exc()


if __name__ == "__main__":
    run()
