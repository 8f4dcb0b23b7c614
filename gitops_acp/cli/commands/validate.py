"""`gitops-acp validate [PATH...]`: check resource files without running anything (CI on pull requests).

Reads files from disk (the checked-out branch of a pull request), reports every problem as
`file:line: message`, and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gitops_acp.errors import UserError


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="check resource files (exit 1 on errors, `file:line: message` each)",
        description="Check resource files without running anything; for CI on pull requests.",
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or directories (default: the --repo directory)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.resources.loader import load_paths

    root = Path(args.repo).resolve()
    paths = [Path(p).resolve() for p in args.paths] or [root]
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or directory")
    if not all(_inside(path, root) for path in paths):
        root = Path("/")
    result = load_paths(paths, root)
    for error in result.errors:
        print(error)
    files = len({loaded.path for loaded in result.resources.values()})
    if result.errors:
        print(f"{len(result.errors)} error(s); {len(result.resources)} valid resource(s) in {files} file(s)")
        return 1
    print(f"ok: {len(result.resources)} resource(s) in {files} file(s)")
    return 0


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
