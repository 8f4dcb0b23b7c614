"""`gitops-acp get KIND [NAME] [-o wide|yaml|json]`: a kubectl-style view of declared and observed state."""

from __future__ import annotations

import sys
from collections.abc import Callable

from gitops_acp.errors import UserError
from gitops_acp.resources.meta import API_VERSION, Kind, TaskPhase, ToolCallPhase, resolve_kind

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:  # argparse and the selectors (dataclasses) only where a list needs them
    import argparse
    from typing import Any, NamedTuple

    from gitops_acp.resources import selectors
    from gitops_acp.store.git.readonly import ReadOnlyRepo
else:
    from gitops_acp.tuples import NamedTuple


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help=(
            "list resources with their status (llm, agent, mcpserver, contactchannel, task, "
            "taskschedule, toolcall)"
        ),
        description="List resources declared on main with their status from the status branch.",
    )
    parser.add_argument(
        "kind",
        help=(
            "llm(s), agent(s), mcpserver(s), contactchannel(s)/cc, task(s), taskschedule(s)/ts, "
            "toolcall(s)/tc"
        ),
    )
    parser.add_argument("name", nargs="?", help="one resource by name")
    parser.add_argument("-o", "--output", choices=["wide", "yaml", "json"], help="output format")
    parser.add_argument(
        "-l", "--selector", help="only objects whose labels match, e.g. acp.gitops.dev/task=t1,!x"
    )
    parser.add_argument("--phase", help="only tasks or tool calls in this phase, e.g. FinalAnswer")
    parser.add_argument("--search", metavar="TEXT", help="only objects whose name contains TEXT, in any case")
    parser.add_argument("--limit", type=int, help="at most this many, by name; says how to get the next page")
    parser.add_argument(
        "--continue", dest="after", metavar="TOKEN", help="the next page: the token --limit gave"
    )
    parser.add_argument(
        "-A",
        "--all",
        dest="archived",
        action="store_true",
        help="also archived tasks and tool calls (finished, moved out of the status branch's tip)",
    )
    parser.set_defaults(run=run, logs=False)  # reads only, and logs nothing (main.py)


def run(args: argparse.Namespace) -> int:
    many = args.selector or args.phase or args.search or args.limit is not None or args.after or args.archived
    if args.name and many:
        raise UserError(
            "--selector, --phase, --search, --limit, --continue and --all list many objects: leave out NAME"
        )
    page = Page(
        selector=_selector(args.selector),
        phase=args.phase,
        search=(args.search or "").strip() or None,
        limit=args.limit,
        after=args.after,
        archived=args.archived,
    )
    return show(args.repo, args.kind, args.name, output=args.output, page=page)


class Page(NamedTuple):
    """Which objects of a kind a list shows (kubectl's -l, --limit and --continue).

    A named tuple, not a dataclass: `get KIND NAME` imports no `dataclasses` (~8 ms of ~85)."""

    selector: selectors.Selector | None = None  # None: every label set
    phase: str | None = None
    limit: int | None = None
    after: str | None = None  # show names after this one (the last name of the previous page)
    archived: bool = False  # --all: archived objects too
    search: str | None = None  # --search: names containing it, in any case (matched before reading)

    def check(self, kind: Kind) -> None:
        """Refuse options that cannot apply to `kind`, before anything is read."""
        if self.phase is not None:
            phases = PHASES.get(kind)
            if phases is None:
                raise UserError(f"--phase: {kind} has no phases (tasks and tool calls do)")
            if self.phase not in phases:
                raise UserError(f"--phase {self.phase}: not a {kind} phase; use one of {', '.join(phases)}")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")
        if self.search is not None and len(self.search) > 200:
            raise UserError(
                f"--search: {len(self.search)} characters; expected at most 200 (a part of a name)"
            )

    def named(self) -> Callable[[str], bool] | None:
        """The names --search keeps (None: all), matched before any file of theirs is read."""
        if self.search is None:
            return None
        needle = self.search.lower()
        return lambda name: needle in name.lower()

    def unread(self, repo: ReadOnlyRepo, kind: Kind) -> Callable[[str], bool] | None:
        """With --phase, which status files it need not read, by blob: the finished tasks and tool
        calls whose phase the reconciler serving this repository saved (reactor/coldfacts.py), in
        another phase. None: every file is read (no --phase)."""
        if self.phase is None or kind not in (Kind.Task, Kind.ToolCall):
            return None
        from gitops_acp.reactor import coldfacts
        from gitops_acp.store import statusbranches

        def saved() -> dict[str, str]:
            branches = [branch.name for branch in statusbranches.status_branches(repo)]
            return coldfacts.saved_phases(repo.common_dir, branches)

        return coldfacts.other_phase(saved, self.phase)

    def accepts(self, document: dict[str, Any]) -> bool:
        """Whether the selector and the phase keep `document`."""
        labels = (document.get("metadata") or {}).get("labels")
        phase = (document.get("status") or {}).get("phase")
        selected = self.selector is None or self.selector.matches(labels)
        return selected and (self.phase is None or phase == self.phase)


def _selector(text: str | None) -> selectors.Selector | None:
    if not text:
        return None
    from gitops_acp.resources import selectors

    try:
        return selectors.parse(text)
    except ValueError as exc:
        raise UserError(f"--selector: {exc}") from None


#: The phases `--phase` accepts, per kind.
PHASES: dict[Kind, list[str]] = {
    Kind.Task: [str(p) for p in TaskPhase],
    Kind.ToolCall: [str(p) for p in ToolCallPhase],
}


def show(
    repo_path: str,
    kind_text: str,
    name: str | None = None,
    *,
    output: str | None = None,
    page: Page | None = None,
) -> int:
    """Print resources of a kind (one, with `name`) as a table, or as YAML or JSON; return the exit code.

    One object reads only it (through a `ReadOnlyRepo`: no GitPython, no pydantic unless its file
    on `main` must be parsed); a list reads the names, then only the status files its page shows.
    """
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli import views

    kind = resolve_kind(kind_text)
    page = page or Page()
    page.check(kind)
    token: str | None = None
    if name:  # one object: read only it, however many resources the repository holds
        with views.open_reader(repo_path) as reader:
            found = views.lookup(reader, kind, name)
        if found is None:
            raise UserError(f'{kind} "{name}" not found (neither on main nor on the status branch)')
        documents = [found.document]
    else:
        with views.open_reader(repo_path) as repo:  # no GitPython: `git` and its cat-file serve a list too
            listed = views.listing(
                repo,
                kind,
                page.accepts,
                limit=page.limit,
                after=page.after,
                archived=page.archived,
                named=page.named(),
                skip=page.unread(repo, kind),
            )
        documents, token = listed.documents, listed.next_after
    print(render(kind, documents, one=bool(name), output=output, token=token))
    if token is not None and output not in ("yaml", "json"):
        print(f"more: add --continue {token} for the next page", file=sys.stderr)
    return 0


def render(
    kind: Kind, documents: list[dict[str, Any]], *, one: bool, output: str | None, token: str | None = None
) -> str:
    """What `get` prints of plain documents (as `views.lookup` and `views.listing` give them): one
    object or a List in YAML or JSON, or a table with ACP's columns (more with `wide`)."""
    from gitops_acp.cli import views
    from gitops_acp.store import yamlio

    if output in ("yaml", "json"):
        payload: dict[str, Any] = (
            documents[0] if one else {"apiVersion": API_VERSION, "kind": "List", "items": documents}
        )
        if token is not None:
            payload["metadata"] = {"continue": token}  # as kubectl's List carries it
        if output == "json":
            import json  # here: a table or YAML does without it (~1.2 ms of a `get task`)

            return json.dumps(payload, indent=2)
        return yamlio.dump(payload).decode().removesuffix("\n")
    if not documents:
        return f"No {kind} resources found."
    return views.render_table(views.table_rows(kind, documents, wide=output == "wide"))
