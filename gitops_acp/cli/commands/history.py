"""`gitops-acp history KIND NAME`: one line per checkpoint commit of a resource, oldest first."""

from __future__ import annotations

import time
from collections.abc import Sequence

from gitops_acp.errors import UserError
from gitops_acp.resources.meta import resolve_kind

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from gitops_acp.store.history import Event


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="one line per checkpoint commit of a resource (e.g. `history task hello`)",
        description="Show the checkpoint commits of one resource on the status branch, oldest first.",
    )
    parser.add_argument("kind", help="task, toolcall, agent, llm, ...")
    parser.add_argument("name")
    parser.add_argument(
        "-n", "--max-count", type=int, default=100, help="at most this many (the newest); default 100"
    )
    parser.set_defaults(run=run, logs=False)  # reads only, and logs nothing (main.py)


def run(args: argparse.Namespace) -> int:
    return show(args.repo, args.kind, args.name, max_count=args.max_count)


def show(repo_path: str, kind_text: str, name: str, *, max_count: int = 100) -> int:
    """Print one line per checkpoint commit of a resource, oldest first (the newest `max_count`)."""
    # Imported when the command runs, not when main.py builds the parsers; the readers once git
    # cat-file is starting (`open_reader`), which they then wait for less.
    from gitops_acp.cli import repos

    kind = resolve_kind(kind_text)
    with repos.open_reader(repo_path) as repo:
        from gitops_acp.store import history, statusbranches

        events: list[history.Event] = []
        # Unsharded: acp/status alone. With shards: the branch holding the resource first.
        for branch in statusbranches.history_order(repo, kind=str(kind), name=name):
            events = history.events(repo, branch=branch, kind=str(kind), name=name, n=max_count)
            if events:
                break
    if not events:
        raise UserError(f'{kind} "{name}" has no checkpoints on the status branch')
    print(render(events))
    return 0


def render(events: Sequence[Event]) -> str:
    """One line per checkpoint (given newest first, as `history.events` returns them), oldest first."""
    lines = []
    for event in reversed(events):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.timestamp))  # UTC; no `datetime`
        detail = f"  {event.detail}" if event.detail else ""
        lines.append(f"{event.sha[:10]}  {when}  {event.old_phase} -> {event.new_phase}{detail}")
    return "\n".join(lines)
