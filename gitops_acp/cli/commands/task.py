"""`gitops-acp task create|send`: commit a new Task, a fork of one, or a follow-up to `main` as the
local user (DESIGN §6, §12; docs/conversations.md)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gitops_acp.errors import UserError
from gitops_acp.resources.meta import API_VERSION, Kind, check_name


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name, parents=[common], help="create tasks and send follow-ups (`task create|send NAME ...`)"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        parents=[common],
        help="commit a new Task to main",
        description="Commit tasks/<NAME>.yaml to main as the local git user (through the work tree, or a "
        "temporary clone of a bare repository). With --fork-from TASK[@COMMIT] the task starts from "
        "TASK's context window at that checkpoint commit (default: its newest), with TASK's agent "
        "unless --agent says otherwise; --message then adds a user message to it.",
    )
    create.add_argument("name")
    create.add_argument("--agent", help="the Agent that runs the task (a fork: the forked task's)")
    create.add_argument("--message", "-m", help="the user message (a fork: optional, the next message)")
    create.add_argument(
        "--fork-from", metavar="TASK[@COMMIT]", help="start from TASK's context window at a checkpoint"
    )
    create.add_argument("--branch", default="main")
    create.set_defaults(run=run_create)
    send = actions.add_parser(
        "send",
        parents=[common],
        help="send a follow-up message to a task",
        description="Append {content: MESSAGE} to the Task's spec.followUps on main as the local git user. "
        "The task answers it after its current answer, with its whole conversation (DESIGN §12).",
    )
    send.add_argument("name")
    send.add_argument("--message", "-m", required=True, help="the follow-up message")
    send.add_argument("--branch", default="main")
    send.set_defaults(run=run_send)


def run_create(args: argparse.Namespace) -> int:
    problem = check_name(args.name)
    if problem:
        raise UserError(f'task name "{args.name}": {problem}')
    if args.fork_from is None and (args.agent is None or args.message is None):
        raise UserError("task create needs --agent and --message (or --fork-from TASK[@COMMIT])")
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli import views
    from gitops_acp.cli.commits import commit_as_user
    from gitops_acp.store import forks, yamlio
    from gitops_acp.store.desired import DesiredReader

    spec: dict[str, Any] = {}
    repo = views.open_repo(args.repo)
    try:
        main = repo.resolve(f"refs/heads/{args.branch}")
        desired = DesiredReader(repo).read(main)
        existing = desired.get(Kind.Task, args.name)
        if existing is not None:
            raise UserError(
                f'Task "{args.name}" already exists on {args.branch} ({existing.path}:{existing.line})'
            )
        agent = args.agent
        if args.fork_from is not None:
            task, commit = forks.parse_target(args.fork_from)
            point = forks.point(repo, task, commit)
            agent = agent or point.agent
            if agent is None:
                raise UserError(f'Task "{task}" at {point.commit[:12]} names no agent: give --agent')
            spec["forkFrom"] = {"task": task, "commit": point.commit}
        if desired.get(Kind.Agent, agent) is None:
            print(f'warning: Agent "{agent}" is not declared on {args.branch}; the task will wait for it')
    finally:
        repo.close()
    spec = {"agentRef": {"name": agent}, **({"userMessage": args.message} if args.message else {}), **spec}
    document = {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": args.name}, "spec": spec}
    path = f"tasks/{args.name}.yaml"
    sha = commit_as_user(
        args.repo, files={path: yamlio.dump(document)}, message=f"Add task {args.name}", branch=args.branch
    )
    fork = spec.get("forkFrom")
    where = f", forked from {fork['task']}@{fork['commit'][:10]}" if fork else ""
    print(f"task/{args.name} created ({path}, {sha[:10]}{where})")
    return 0


def run_send(args: argparse.Namespace) -> int:
    problem = check_name(args.name)
    if problem:
        raise UserError(f'task name "{args.name}": {problem}')
    from gitops_acp.cli import views

    repo = views.open_repo(args.repo)
    where = Path(repo.common_dir)
    repo.close()
    with _sending(where):
        return _send(args)


@contextlib.contextmanager
def _sending(git_dir: Path) -> Iterator[None]:
    """One `task send` at a time per repository on this machine: each reads the file the previous
    one committed (two reading the same file would each drop the other's follow-up)."""
    folder = git_dir / "gitops-acp"
    folder.mkdir(exist_ok=True)
    with (folder / "task-send.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _send(args: argparse.Namespace) -> int:
    from gitops_acp.cli import views
    from gitops_acp.cli.commits import commit_as_user
    from gitops_acp.store import followups, readers
    from gitops_acp.store.desired import DesiredReader

    repo = views.open_repo(args.repo)
    try:
        main = repo.resolve(f"refs/heads/{args.branch}")
        declared = DesiredReader(repo).read(main).get(Kind.Task, args.name) if main else None
        if declared is None:
            raise UserError(
                f'Task "{args.name}" is not declared on {args.branch}: follow-ups go to a Task file on main '
                "(`gitops-acp get tasks` lists them)"
            )
        observed, _branch, archived = readers.status_of(repo, Kind.Task, args.name)
        why = followups.refusal(args.name, observed, archived=archived)
        if why is not None:
            raise UserError(why)
        assert main is not None
        data = repo.read_file(main, declared.path)
        assert data is not None
        content = followups.appended(declared.path, data, args.name, args.message)
    finally:
        repo.close()
    count = len(getattr(declared.resource.spec, "follow_ups", ())) + 1
    sha = commit_as_user(
        args.repo,
        files={declared.path: content},
        message=f"Follow-up {count} to task {args.name}",
        branch=args.branch,
    )
    sha = _keep_concurrent(args, declared.path, data, sha)
    print(f"task/{args.name}: follow-up {count} sent ({declared.path}, {sha[:10]})")
    return 0


def _keep_concurrent(args: argparse.Namespace, path: str, based_on: bytes, sha: str) -> str:
    """Put back follow-ups someone else committed between our read and our commit.

    The commit writes the file as read plus ours; if its parent's file was not what we read (a
    sender on another machine pushing to the same remote at the same moment), their follow-up would
    be dropped from main: commit it again, before ours. The API needs none of this (it builds each
    commit on the tip with compare-and-swap); senders on one machine are serialized (`_sending`).
    """
    from gitops_acp.cli import views
    from gitops_acp.cli.commits import commit_as_user
    from gitops_acp.store import followups

    repo = views.open_repo(args.repo)
    try:
        parent = repo.read_file(f"{sha}^", path)
    finally:
        repo.close()
    if parent is None or parent == based_on:
        return sha
    theirs = followups.contents(parent)
    ours = [*followups.contents(based_on), args.message]
    if ours[: len(theirs)] == theirs:
        return sha  # nothing of theirs was dropped (the file changed otherwise)
    return commit_as_user(
        args.repo,
        files={path: followups.appended(path, parent, args.name, args.message)},
        message=f"Follow-up to task {args.name} (after another sent at the same time)",
        branch=args.branch,
    )
