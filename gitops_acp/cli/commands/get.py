"""`gitops-acp get KIND [NAME] [-o wide|yaml|json]`: a kubectl-style view of declared and observed state."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gitops_acp.cli import views
from gitops_acp.errors import UserError
from gitops_acp.resources.meta import API_VERSION, resolve_kind
from gitops_acp.store import yamlio


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="list resources with their status (llm, agent, mcpserver, contactchannel, task, toolcall)",
        description="List resources declared on main with their status from the status branch.",
    )
    parser.add_argument(
        "kind", help="llm(s), agent(s), mcpserver(s), contactchannel(s)/cc, task(s), toolcall(s)/tc"
    )
    parser.add_argument("name", nargs="?", help="one resource by name")
    parser.add_argument("-o", "--output", choices=["wide", "yaml", "json"], help="output format")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return show(args.repo, args.kind, args.name, output=args.output)


def show(repo_path: str, kind_text: str, name: str | None = None, *, output: str | None = None) -> int:
    """Print resources of a kind (one, with `name`) as a table, or as YAML or JSON; return the exit code."""
    kind = resolve_kind(kind_text)
    repo = views.open_repo(repo_path)
    try:
        if name:  # one object: read only it, however many resources the repository holds
            found = views.lookup(repo, kind, name)
            if found is None:
                raise UserError(f'{kind} "{name}" not found (neither on main nor on the status branch)')
            documents = [found.document]
        else:
            documents = views.snapshot(repo).of_kind(kind)
    finally:
        repo.close()
    if output in ("yaml", "json"):
        payload: dict[str, Any] = (
            documents[0] if name else {"apiVersion": API_VERSION, "kind": "List", "items": documents}
        )
        if output == "json":
            print(json.dumps(payload, indent=2))
        else:
            print(yamlio.dump(payload).decode(), end="")
        return 0
    if not documents:
        print(f"No {kind} resources found.")
        return 0
    print(views.render_table(views.table_rows(kind, documents, wide=output == "wide")))
    return 0
