"""The command line: parse, dispatch to one module per command, and funnel errors into one line.

Exit codes: 0 success; 1 an error the user can act on (`error: ...` on stderr, no traceback
unless --debug); 2 bad usage (argparse); 3 an internal error (a bug: the traceback with --debug);
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from gitops_acp import __version__, redaction
from gitops_acp.cli.commands import (
    approve,
    demo,
    describe,
    get,
    history,
    init,
    llm_stub,
    respond,
    serve,
    task,
    validate,
)
from gitops_acp.errors import ACPError

__all__ = ["COMMANDS", "build_parser", "main"]

#: The visible registry of commands: name → module with `add_parser(subparsers)` and `run(args)`.
COMMANDS: dict[str, ModuleType] = {
    "init": init,
    "serve": serve,
    "get": get,
    "describe": describe,
    "history": history,
    "task": task,
    "approve": approve,
    "reject": approve,
    "respond": respond,
    "validate": validate,
    "demo": demo,
    "llm-stub": llm_stub,
}


def _common_options(*, defaults: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (only the top level sets defaults,
    so `gitops-acp --repo X get` is not undone by the subcommand's own default)."""

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="gitops-acp",
        description="An Agent Control Plane whose database is a git repository.",
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options(defaults=False)
    for name, module in COMMANDS.items():
        module.add_parser(subparsers, name, common)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
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
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        code: int = args.run(args)
        return code
    except ACPError as exc:
        if args.debug:
            traceback.print_exc()
        print(redaction.text(f"error: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(
            redaction.text(
                f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for details)"
            ),
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
