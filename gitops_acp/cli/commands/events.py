"""`gitops-acp events [KIND[/NAME]] [--watch] [-o json]`: checkpoint events from the status branch.

One event per resource per checkpoint commit, `{commit, time, kind, name, from, to}` (DESIGN §11;
store/events.py says how they are derived), oldest first: a table like `kubectl get --watch`, or
with `-o json` one JSON object per line. `--watch` then follows new commits until interrupted
(inotify on the refs, with a one-second poll as the safety net; with a URL, a fetch every
`--interval` seconds). With shards, every status branch is read and their events merged by time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gitops_acp.errors import UserError
from gitops_acp.resources.meta import Kind, resolve_kind

if TYPE_CHECKING:
    from gitops_acp.store.events import Event
    from gitops_acp.store.git import ReadOnlyRepo

DEFAULT_COUNT = 100  # commits shown before following, without --since


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="checkpoint events from the status branch (e.g. `events task/hello --watch`)",
        description="Show one event per resource per checkpoint commit of the status branch, oldest "
        "first: {commit, time, kind, name, from, to}.",
    )
    parser.add_argument(
        "resource", nargs="?", metavar="KIND[/NAME]", help="only this resource's (or kind's) events"
    )
    parser.add_argument(
        "-w", "--watch", action="store_true", help="then follow new commits until interrupted"
    )
    parser.add_argument("-o", "--output", choices=["json"], help="json: one JSON object per line")
    parser.add_argument("--since", metavar="COMMIT", help="only the events of commits after this one")
    parser.add_argument(
        "-n",
        "--max-count",
        type=int,
        help=f"the newest this many commits' events (default {DEFAULT_COUNT}; all after --since)",
    )
    parser.add_argument(
        "--status-branch", help="read this status branch only (default: acp/status, or every shard's)"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="--watch with a URL: seconds between fetches (default 2)"
    )
    parser.set_defaults(run=run, logs=False)  # reads only, and logs nothing (main.py)


def run(args: argparse.Namespace) -> int:
    kind, name = parse_resource(args.resource)
    if args.max_count is not None and args.max_count < 1:
        raise UserError("--max-count must be at least 1")
    if args.interval <= 0:
        raise UserError("--interval must be more than 0 seconds")
    count = args.max_count if args.max_count is not None else (None if args.since else DEFAULT_COUNT)
    return show(
        args.repo,
        kind=kind,
        name=name,
        since=args.since,
        count=count,
        json_lines=args.output == "json",
        watch=args.watch,
        branch=args.status_branch,
        interval=args.interval,
    )


def parse_resource(text: str | None) -> tuple[Kind | None, str | None]:
    """`task/hello` → (Task, "hello"); `tasks` → (Task, None); None → (None, None)."""
    if not text:
        return None, None
    kind_text, slash, name = text.partition("/")
    if slash and not name:
        raise UserError(f"{text}: expected KIND/NAME, e.g. task/hello")
    return resolve_kind(kind_text), (name or None)


def show(
    repo_path: str,
    *,
    kind: Kind | None = None,
    name: str | None = None,
    since: str | None = None,
    count: int | None = DEFAULT_COUNT,
    json_lines: bool = False,
    watch: bool = False,
    branch: str | None = None,
    interval: float = 2.0,
) -> int:
    """Print the events (then, with `watch`, follow the branch until interrupted)."""
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli import views

    printer = _Printer(json_lines=json_lines)
    with views.open_reader(repo_path) as repo:
        # Watching one resource that may not exist yet: every branch (it may appear on any shard).
        branches = _branches(repo, branch, kind, None if watch else name)
        cursors = {b: repo.resolve(_ref(b)) for b in branches}
        found = _initial(repo, cursors, kind=kind, name=name, since=since, count=count)
    if not found and not watch:
        print("No events found.", file=sys.stderr)  # as kubectl's "No resources found."
        return 0
    printer.print(found)
    if not watch:
        return 0
    import asyncio
    import contextlib

    following = _follow(repo_path, cursors, printer, kind=kind, name=name, fixed=branch, interval=interval)
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(following)
    return 0


def _ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


def _branches(repo: ReadOnlyRepo, fixed: str | None, kind: Kind | None, name: str | None) -> list[str]:
    """The status branches to read: the one asked for, else every branch of the family."""
    from gitops_acp.store import shards

    if fixed is not None:
        if repo.resolve(_ref(fixed)) is None:
            raise UserError(f"--status-branch {fixed}: no such branch")
        return [fixed]
    if kind is not None and name is not None:
        # One resource lives on one shard: read the branch holding it (as `history` does).
        return shards.history_order(repo, kind=str(kind), name=name)[:1]
    return [b.name for b in shards.status_branches(repo)] or [shards.UNSHARDED]


def _initial(
    repo: ReadOnlyRepo,
    cursors: dict[str, str | None],
    *,
    kind: Kind | None,
    name: str | None,
    since: str | None,
    count: int | None,
) -> list[Event]:
    from gitops_acp.store import events

    after_time: float | None = None
    full: str | None = None
    if since is not None:
        full = events.resolve_commit(repo, since)
        if full is None:
            raise UserError(f"--since {since}: no such commit in {repo.git_dir} (give a sha, as events show)")
        after_time = repo.commit_time(full)
    found: list[Event] = []
    held = False
    for branch, tip in cursors.items():
        if tip is None:
            continue
        try:
            read = events.read(repo, branch=branch, after=full, until=tip, n=count, kind=kind, name=name)
            held = True
        except events.UnknownCommitError:
            # --since names a commit of another shard's branch: this one's commits after its time.
            read = events.read(repo, branch=branch, until=tip, n=count, kind=kind, name=name)
            read = [event for event in read if after_time is not None and event.time > after_time]
        found.extend(read)
    if full is not None and not held:
        raise UserError(f"--since {since}: not a commit of {' or '.join(cursors)}")
    found.sort(key=lambda event: event.time)  # stable: each branch's own order is kept
    if count is not None and len(cursors) > 1:
        keep = set(events.commits(found)[-count:])
        found = [event for event in found if event.commit in keep]
    return found


async def _follow(
    repo_path: str,
    cursors: dict[str, str | None],
    printer: _Printer,
    *,
    kind: Kind | None,
    name: str | None,
    fixed: str | None,
    interval: float,
) -> None:
    """Print the events of every new commit of the status branches until interrupted."""
    import asyncio
    import contextlib
    import signal

    from gitops_acp.cli import views
    from gitops_acp.reactor.watcher import RefWatcher
    from gitops_acp.store import events, shards
    from gitops_acp.store.git import is_url

    # SIGINT and SIGTERM stop the watch cleanly (exit 0), as they stop `serve`: also where SIGINT
    # came ignored (a background job of a script ignores it, and Python then leaves it so) and
    # under a supervisor that sends SIGTERM.
    loop, following = asyncio.get_running_loop(), asyncio.current_task()
    assert following is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, following.cancel)
    remote = is_url(repo_path)
    with views.open_reader(repo_path) as repo:
        watcher = RefWatcher(repo.git_dir, poll_interval=interval if remote else 1.0)
        if not remote:
            watcher.start()
        try:
            while True:
                await watcher.wait()
                if remote:
                    views.open_reader(repo_path).close()  # fetches the view again
                if fixed is None and name is None:
                    for appeared in shards.status_branches(repo):
                        cursors.setdefault(appeared.name, None)  # a shard that appeared meanwhile
                found: list[Event] = []
                for branch, cursor in list(cursors.items()):
                    tip = repo.resolve(_ref(branch))
                    if tip is None or tip == cursor:
                        continue
                    try:
                        found += events.read(
                            repo, branch=branch, after=cursor, until=tip, kind=kind, name=name
                        )
                    except events.UnknownCommitError:
                        print(f"warning: {branch} was replaced; following its new tip", file=sys.stderr)
                    cursors[branch] = tip
                found.sort(key=lambda event: event.time)
                printer.print(found)
        finally:
            await watcher.stop()


class _Printer:
    """A table kubectl-style (the header once, columns sized by the first rows) or JSON lines."""

    HEADER = ("TIME", "COMMIT", "RESOURCE", "FROM", "TO")

    def __init__(self, *, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.widths: list[int] | None = None

    def print(self, found: Sequence[Event]) -> None:
        if self.json_lines:
            if found:
                import json

                out = "".join(json.dumps(event.to_json(), separators=(", ", ": ")) + "\n" for event in found)
                sys.stdout.write(out)
        else:
            rows = [_row(event) for event in found]
            if self.widths is None:
                self.widths = [
                    max(len(row[i]) for row in [self.HEADER, *rows]) for i in range(len(self.HEADER))
                ]
                rows = [list(self.HEADER), *rows]
            for row in rows:
                sys.stdout.write(
                    "   ".join(c.ljust(w) for c, w in zip(row, self.widths, strict=True)).rstrip() + "\n"
                )
        sys.stdout.flush()


def _row(event: Event) -> list[str]:
    when = datetime.fromtimestamp(event.time, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return [
        when,
        event.commit[:10],
        f"{event.kind}/{event.name}",
        event.old if event.old is not None else "<none>",
        event.new if event.new is not None else "<none>",
    ]
