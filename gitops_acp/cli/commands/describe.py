"""`gitops-acp describe KIND NAME`: the object, its context window, and its events.

Events are the checkpoint commits that touched the resource on the status branch (newest 20),
which, unlike Kubernetes events, never expire. With shards, on the branch the status came from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gitops_acp.errors import UserError
from gitops_acp.resources.meta import Kind, resolve_kind

TYPE_CHECKING = False  # not `typing`'s: a command reading one object does without it (tuples.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from gitops_acp.store.history import Event


def add_parser(subparsers: Any, name: str, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help="show one resource in detail: spec, status, context window, events",
        description="Show one resource: spec, status, context window and events (checkpoint commits).",
    )
    parser.add_argument("kind")
    parser.add_argument("name")
    parser.set_defaults(run=run, logs=False)  # reads only, and logs nothing (main.py)


def _indent(text: str, by: int = 2) -> str:
    return "\n".join((" " * by + line) if line else line for line in text.splitlines())


def run(args: argparse.Namespace) -> int:
    return show(args.repo, args.kind, args.name)


def show(repo_path: str, kind_text: str, name: str) -> int:
    """Print one resource: spec, status, its context window (tasks) and its newest events."""
    # Imported when the command runs, not when main.py builds the parsers.
    from gitops_acp.cli import views

    kind = resolve_kind(kind_text)
    with views.open_reader(repo_path) as repo:
        from gitops_acp.store import history  # once git cat-file is starting (`open_reader`)

        found = views.lookup(repo, kind, name)  # reads only this object (docs/decisions.md)
        if found is None:
            raise UserError(f'{kind} "{name}" not found (neither on main nor on the status branch)')
        events = history.events(repo, branch=found.branch, kind=str(kind), name=name, n=20)
    print(render(kind, name, found.document, archived=found.archived, events=events))
    return 0


def render(
    kind: Kind, name: str, document: dict[str, Any], *, archived: bool, events: Sequence[Event]
) -> str:
    """What `describe` prints of one object (a plain document as `views.lookup` gives it), and its
    events, newest last."""
    from gitops_acp.cli import views
    from gitops_acp.store import yamlio

    metadata = document.get("metadata") or {}
    status = dict(document.get("status") or {})
    window = status.pop("contextWindow", None) if kind == Kind.Task else None
    lines = [
        f"Name:         {name}",
        f"Kind:         {kind}",
        *(
            ["Archived:     yes (finished; its last status is in archive/ on the status branch)"]
            if archived
            else []
        ),
        f"API Version:  {document.get('apiVersion', '')}",
        f"Labels:       {_pairs(metadata.get('labels'))}",
        f"Annotations:  {_pairs(metadata.get('annotations'))}",
        "Spec:",
        _indent(yamlio.dump(document.get("spec") or {}).decode().rstrip()),
        "Status:",
        _indent(yamlio.dump(status).decode().rstrip()) if status else "  <none: not reconciled yet>",
    ]
    if window is not None:
        lines.append("Context Window:")
        for index, message in enumerate(window, start=1):
            lines.append(
                f"  [{index}] {message.get('role', '?')}"
                + (f" (tool call {message['toolCallId']})" if message.get("toolCallId") else "")
            )
            if message.get("content"):
                lines.append(_indent(str(message["content"]), 6))
            for call in message.get("toolCalls") or []:
                function = call.get("function") or {}
                lines.append(
                    f"      -> {function.get('name')}({function.get('arguments')})  id={call.get('id')}"
                )
    if kind == Kind.Task:
        lines += _conversation(document.get("spec") or {}, status, window or [])
    lines.append("Events:")
    if not events:
        lines.append("  <none>")
    else:
        rows = [["TIME", "FROM", "TO", "COMMIT", "DETAIL"]]
        for event in reversed(events):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.timestamp))  # UTC; no `datetime`
            rows.append([when, event.old_phase, event.new_phase, event.sha[:10], event.detail or ""])
        lines.append(_indent(views.render_table(rows)))
    return "\n".join(lines)


def _conversation(spec: dict[str, Any], status: dict[str, Any], window: list[dict[str, Any]]) -> list[str]:
    """Each exchange of a task with follow-ups or a fork (DESIGN §12): what was sent, what answered."""
    follow_ups = [f.get("content", "") for f in spec.get("followUps") or [] if isinstance(f, dict)]
    fork = spec.get("forkFrom") or {}
    applied = int(status.get("followUpsApplied") or 0)
    if not follow_ups and not fork and not applied:
        return []
    users = [i for i, message in enumerate(window) if message.get("role") == "user"]
    starts = users[len(users) - applied :] if applied else []
    first = users[len(users) - applied - 1] if len(users) > applied else None
    lines = ["Conversation:"]
    if fork:
        lines.append(f"  forked from: {fork.get('task')}@{str(fork.get('commit', ''))[:12]}")
    exchanges: list[tuple[str, int | None]] = []
    if first is not None:
        exchanges.append(("message", first))
    exchanges += [(f"follow-up {n}", start) for n, start in enumerate(starts, start=1)]
    if not window and spec.get("userMessage"):  # not started yet
        lines += [f"  message: {_one_line(spec['userMessage'])}", "    answer: <not started>"]
    for label, start in exchanges:
        assert start is not None
        lines.append(f"  {label}: {_one_line(window[start].get('content'))}")
        lines.append(f"    answer: {_answer(window, start)}")
    phase = status.get("phase")
    for n, content in enumerate(follow_ups[applied:], start=applied + 1):
        lines.append(f"  follow-up {n}: {_one_line(content)}")
        waiting = phase in ("Failed", "Cancelled")
        lines.append(
            f"    {'not taken: the task is ' + str(phase) if waiting else 'waiting for the answer before it'}"
        )
    return lines


def _answer(window: list[dict[str, Any]], start: int) -> str:
    """The final answer to the user message at `start`, or what it waits for."""
    answer = None
    for message in window[start + 1 :]:
        if message.get("role") == "user":
            break
        if message.get("role") == "assistant" and not message.get("toolCalls"):
            answer = message.get("content")
    return _one_line(answer) if answer is not None else "<being answered>"


def _one_line(text: object, width: int = 100) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _pairs(mapping: object) -> str:
    if not isinstance(mapping, dict) or not mapping:
        return "<none>"
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items()))
