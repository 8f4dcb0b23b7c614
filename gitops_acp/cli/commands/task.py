"""`gitops-acp task create NAME --agent A --message M`: commit a new Task to `main` as the local user."""

from __future__ import annotations

import argparse
from typing import Any

from gitops_acp.errors import UserError
from gitops_acp.resources.meta import API_VERSION, Kind, check_name


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(name, parents=[common], help="create tasks (`task create NAME ...`)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        parents=[common],
        help="commit a new Task to main",
        description="Commit tasks/<NAME>.yaml to main as the local git user (through the work tree, or a "
        "temporary clone of a bare repository).",
    )
    create.add_argument("name")
    create.add_argument("--agent", required=True, help="the Agent that runs the task")
    create.add_argument("--message", "-m", required=True, help="the user message")
    create.add_argument("--branch", default="main")
    create.set_defaults(run=run_create)


def run_create(args: argparse.Namespace) -> int:
    problem = check_name(args.name)
    if problem:
        raise UserError(f'task name "{args.name}": {problem}')
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli import views
    from gitops_acp.cli.commits import commit_as_user
    from gitops_acp.store import yamlio
    from gitops_acp.store.desired import DesiredReader

    repo = views.open_repo(args.repo)
    try:
        main = repo.resolve(f"refs/heads/{args.branch}")
        existing = DesiredReader(repo).read(main).get(Kind.Task, args.name)
        if existing is not None:
            raise UserError(
                f'Task "{args.name}" already exists on {args.branch} ({existing.path}:{existing.line})'
            )
        if DesiredReader(repo).read(main).get(Kind.Agent, args.agent) is None:
            print(
                f'warning: Agent "{args.agent}" is not declared on {args.branch}; the task will wait for it'
            )
    finally:
        repo.close()
    document = {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {"name": args.name},
        "spec": {"agentRef": {"name": args.agent}, "userMessage": args.message},
    }
    path = f"tasks/{args.name}.yaml"
    sha = commit_as_user(
        args.repo, files={path: yamlio.dump(document)}, message=f"Add task {args.name}", branch=args.branch
    )
    print(f"task/{args.name} created ({path}, {sha[:10]})")
    return 0
