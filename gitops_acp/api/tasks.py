"""`/v1/tasks`: list, read, create, fork, cancel tasks and send follow-ups (DESIGN §11, §12).

A created Task is the document `gitops-acp task create` would commit (`tasks/<name>.yaml`), checked
by the loader `validate` uses (its messages, word for word), and committed to `main` as the caller
through the API's single writer (api/writer.py: many creates, one commit). Cancelling removes the
Task's file from `main` as the caller, as `git rm` would; the reconciler cancels what no longer is.
A fork (`forkFrom: {task, commit?}`) and a follow-up (`POST /v1/tasks/{name}/messages`) are
checked and written as `task create --fork-from` and `task send` do (store/forks.py,
store/followups.py), on the batch's base of `main`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gitops_acp.api.app import Service, body_of
from gitops_acp.api.errors import ApiError
from gitops_acp.api.tokens import Caller
from gitops_acp.api.writer import Base, Edit
from gitops_acp.errors import UserError
from gitops_acp.resources import selectors
from gitops_acp.resources.meta import API_VERSION, Kind, TaskPhase, check_name
from gitops_acp.store import followups, forks, readers, yamlio
from gitops_acp.telemetry import tracing
from gitops_acp.telemetry.tracing import ANNOTATION_TRACEPARENT

__all__ = ["ANNOTATION_TRACEPARENT", "cancel", "create", "get_task", "list_tasks", "send", "task_document"]

#: The body of POST /v1/tasks.
CREATE_FIELDS = (
    "name",
    "generateName",
    "agentRef",
    "userMessage",
    "contextWindow",
    "contactChannelRef",
    "responseUrl",
    "labels",
    "forkFrom",
)
_SPEC_FIELDS = ("agentRef", "userMessage", "contextWindow", "contactChannelRef", "responseUrl", "forkFrom")
#: The characters of a generated name's suffix (Kubernetes' generateName alphabet: no vowels).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: The longest `q` accepted (a Task's name has at most 63 characters).
MAX_SEARCH = 200


# -- reading ------------------------------------------------------------------------------------


def page_params(request: Request, kind: Kind) -> tuple[int, str | None, bool]:
    """`limit` (1..MAX_LIMIT, default DEFAULT_LIMIT), `continue` and `all` from the query."""
    query = request.query_params
    text = query.get("limit")
    limit = DEFAULT_LIMIT
    if text is not None:
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise ApiError(422, f"limit={text}: expected a number from 1 to {MAX_LIMIT}")
        limit = int(text)
    after = query.get("continue") or None
    if after is not None and check_name(after):
        raise ApiError(422, f"continue={after}: not a token this API gave (the last name of a page)")
    archived = query.get("all", "false").lower()
    if archived not in ("true", "false", "1", "0"):
        raise ApiError(422, f"all={archived}: expected true or false")
    return limit, after, archived in ("true", "1")


def phase_param(request: Request, kind: Kind, phases: list[str]) -> str | None:
    """The `phase` filter, checked against the kind's phases (the same words as `get --phase`)."""
    phase = request.query_params.get("phase") or None
    if phase is not None and phase not in phases:
        raise ApiError(422, f"phase={phase}: not a {kind} phase; use one of {', '.join(phases)}")
    return phase


def selector_param(request: Request) -> selectors.Selector:
    """The `selector` filter (kubectl's -l syntax)."""
    text = request.query_params.get("selector")
    if not text:
        return selectors.Selector()
    try:
        return selectors.parse(text)
    except ValueError as exc:
        raise ApiError(422, f"selector={text}: {exc}") from None


def search_param(request: Request) -> Callable[[str], bool] | None:
    """`q`: the names containing it, in any case (None: every name). Matched against the names the
    listing already has, so a search reads only the files of the names it keeps (DESIGN §9); the
    messages and outputs are not searched (that would read every task's file)."""
    text = (request.query_params.get("q") or "").strip()
    if not text:
        return None
    if len(text) > MAX_SEARCH:
        raise ApiError(
            422, f"q: {len(text)} characters; expected at most {MAX_SEARCH} (a part of a task's name)"
        )
    needle = text.lower()
    return lambda name: needle in name.lower()


async def list_tasks(request: Request, service: Service, caller: Caller) -> Response:
    """GET /v1/tasks?q=&agent=&phase=&selector=&limit=&continue=&all= → {items, continue}."""
    limit, after, archived = page_params(request, Kind.Task)
    phase = phase_param(request, Kind.Task, [str(p) for p in TaskPhase])
    selector = selector_param(request)
    agent = request.query_params.get("agent") or None
    named = search_param(request)

    def accept(document: dict[str, Any]) -> bool:
        metadata = document.get("metadata") or {}
        spec = document.get("spec") or {}
        status = document.get("status") or {}
        return (
            selector.matches(metadata.get("labels"))
            and (phase is None or status.get("phase") == phase)
            and (agent is None or (spec.get("agentRef") or {}).get("name") == agent)
        )

    listed = await service.reads.run(
        lambda reads: reads.page(
            Kind.Task, accept, limit=limit, after=after, archived=archived, named=named, phase=phase
        )
    )
    return JSONResponse({"items": listed.documents, "continue": listed.next_after})


def name_param(request: Request, kind: Kind) -> str:
    """The `{name}` of the path, a DNS-1123 label (422 otherwise, as `task create` says it)."""
    name = str(request.path_params["name"])
    problem = check_name(name)
    if problem:
        raise ApiError(422, f'{kind.lower()} name "{name}": {problem}')
    return name


async def get_task(request: Request, service: Service, caller: Caller) -> Response:
    """GET /v1/tasks/{name}: the whole Task with its context window, archived ones too."""
    name = name_param(request, Kind.Task)
    found = await service.reads.run(lambda reads: reads.one(Kind.Task, name))
    if found is None:
        raise ApiError(404, f'Task "{name}" not found (neither on main nor on the status branch)')
    return JSONResponse(found.document)


# -- creating -----------------------------------------------------------------------------------


def task_document(body: dict[str, Any], name: str, *, traceparent: str | None) -> dict[str, Any]:
    """The Task a create body describes (not yet validated)."""
    metadata: dict[str, Any] = {"name": name}
    if body.get("labels") is not None:
        metadata["labels"] = body["labels"]
    if traceparent is not None:
        metadata["annotations"] = {ANNOTATION_TRACEPARENT: traceparent}
    spec = {key: body[key] for key in _SPEC_FIELDS if body.get(key) is not None}
    return {"apiVersion": API_VERSION, "kind": "Task", "metadata": metadata, "spec": spec}


def validated(document: dict[str, Any], path: str) -> bytes:
    """The Task's file, checked by the loader `validate` uses: 422 with its messages otherwise."""
    from gitops_acp.resources.loader import load_file

    data = yamlio.dump(document)
    result = load_file(path, data)
    if result.errors:
        raise ApiError(422, "; ".join(str(error) for error in result.errors))
    if len(result.loaded) != 1:  # cannot happen with one document of a known kind
        raise ApiError(422, f"{path}: not one Task")
    return data


def _traceparent(request: Request) -> str | None:
    """A valid W3C `traceparent` header (all-zero ids are invalid), else None (ignored)."""
    value = (request.headers.get("traceparent") or "").strip().lower()
    return value if tracing.parse_traceparent(value) is not None else None


def _generated(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(5))


def exists(base: Base, name: str, path: str) -> str | None:
    """Why `name` cannot be a new Task at `base` (declared, written by this batch, or already ran)."""
    declared = base.desired.get(Kind.Task, name)
    if declared is not None:
        return f'Task "{name}" already exists on main ({declared.path}:{declared.line})'
    if path in base.taken or (base.commit is not None and base.repo.read_file(base.commit, path) is not None):
        return f'Task "{name}" already exists: {path} is on main'
    observed, branch, archived = readers.status_of(base.repo, Kind.Task, name)
    if observed is not None:
        where = "archived on" if archived else "on"
        return (
            f'Task "{name}" already ran (its status is {where} {branch}): a task name is never reused; '
            "choose another"
        )
    return None


async def create(request: Request, service: Service, caller: Caller) -> Response:
    """POST /v1/tasks: commit a new Task to main as the caller; 201 with the Task."""
    body = await body_of(request, CREATE_FIELDS)
    fork = _fork_param(body)
    name = body.get("name")
    prefix = body.get("generateName")
    if name is not None and prefix is not None:
        raise ApiError(422, "name, generateName: give one of them, not both")
    if name is not None and not isinstance(name, str):
        raise ApiError(422, "name: expected a string")
    if prefix is not None and (
        not isinstance(prefix, str) or check_name(prefix.rstrip("-") or "x") or len(prefix) > 57
    ):
        raise ApiError(422, f"generateName {prefix!r}: expected a name prefix such as task- (at most 57)")
    generate = name is None
    prefix = prefix if isinstance(prefix, str) else "task-"
    if name is not None:
        problem = check_name(name)
        if problem:
            raise ApiError(422, f'task name "{name}": {problem}')
    agent = (body.get("agentRef") or {}).get("name") if isinstance(body.get("agentRef"), dict) else None
    traceparent = _traceparent(request)
    chosen = name or _generated(prefix)
    # Checked before queueing, so bad input never waits for a batch: the same check runs again on
    # each base in prepare (with the name the batch settles on). A fork's commit and agent are
    # known only there: a stand-in checks the rest.
    stand_in = {**body, "agentRef": body.get("agentRef") or {"name": "x"}}
    if fork is not None:
        stand_in["forkFrom"] = {"task": fork[0], "commit": "0" * 40}
    validated(task_document(stand_in, chosen, traceparent=traceparent), f"tasks/{chosen}.yaml")
    document: dict[str, Any] = {}
    edit = Edit(caller=caller, subject=f"Add task {chosen}", prepare=lambda base: {})

    def prepare(base: Base) -> dict[str, bytes | None]:
        nonlocal chosen
        for _ in range(10 if generate else 1):
            path = f"tasks/{chosen}.yaml"
            why = exists(base, chosen, path)
            if why is None:
                break
            if not generate:
                raise ApiError(409, why)
            chosen = _generated(prefix)
        else:
            raise ApiError(409, f"no free name with generateName {prefix!r} after 10 tries")
        resolved = dict(body)
        agent_name = agent
        if fork is not None:
            try:
                point = forks.point(base.repo, *fork)
            except UserError as exc:
                raise ApiError(422, f"forkFrom: {exc}") from None
            resolved["forkFrom"] = {"task": fork[0], "commit": point.commit}
            agent_name = agent_name or point.agent
            resolved["agentRef"] = {"name": agent_name}
        if agent_name is not None and base.desired.get(Kind.Agent, agent_name) is None:
            raise ApiError(
                422,
                f'agentRef: Agent "{agent_name}" is not declared on main '
                "(`gitops-acp get agents` lists them)",
            )
        document.clear()
        document.update(task_document(resolved, chosen, traceparent=traceparent))
        edit.subject = f"Add task {chosen}"
        return {path: validated(document, path)}

    edit.prepare = prepare
    sha = await service.writer.submit(edit)
    return JSONResponse(
        document,
        status_code=201,
        headers={"Location": f"/v1/tasks/{chosen}", "X-Commit": sha},
    )


def _fork_param(body: dict[str, Any]) -> tuple[str, str | None] | None:
    """`forkFrom: {task, commit?}` of a create body (commit: any name git resolves; default: the
    task's newest checkpoint), or None."""
    fork = body.get("forkFrom")
    if fork is None:
        return None
    if not isinstance(fork, dict) or set(fork) - {"task", "commit"} or not isinstance(fork.get("task"), str):
        raise ApiError(
            422, "forkFrom: expected {task, commit?} (commit: default, the task's newest checkpoint)"
        )
    commit = fork.get("commit")
    if commit is not None and not isinstance(commit, str):
        raise ApiError(422, "forkFrom.commit: expected a string (a commit of the status branch)")
    problem = check_name(fork["task"])
    if problem:
        raise ApiError(422, f"forkFrom.task: {problem}")
    return fork["task"], commit or None


# -- follow-ups ---------------------------------------------------------------------------------


async def send(request: Request, service: Service, caller: Caller) -> Response:
    """POST /v1/tasks/{name}/messages: append `{content}` to the Task's spec.followUps as the caller."""
    name = name_param(request, Kind.Task)
    body = await body_of(request, ("content",))
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ApiError(422, "content: expected the follow-up message (a non-empty string)")
    sent: dict[str, Any] = {}

    def prepare(base: Base) -> dict[str, bytes | None]:
        declared = base.desired.get(Kind.Task, name)
        if declared is None:
            raise ApiError(
                404, f'Task "{name}" is not declared on main: follow-ups go to a Task file on main'
            )
        if declared.path in base.taken:
            raise ApiError(409, f"{declared.path} is changed by another request of this commit: try again")
        observed, _branch, archived = readers.status_of(base.repo, Kind.Task, name)
        why = followups.refusal(name, observed, archived=archived)
        if why is not None:
            raise ApiError(409, why)
        assert base.commit is not None
        data = base.repo.read_file(base.commit, declared.path)
        assert data is not None
        try:
            new = followups.appended(declared.path, data, name, content)
        except UserError as exc:
            raise ApiError(409, str(exc)) from None
        from gitops_acp.resources.loader import load_file

        result = load_file(declared.path, new)
        if result.errors:
            raise ApiError(422, "; ".join(str(error) for error in result.errors))
        sent.update(path=declared.path, followUp=len(getattr(declared.resource.spec, "follow_ups", ())) + 1)
        return {declared.path: new}

    edit = Edit(caller=caller, subject=f"Follow-up to task {name}", prepare=prepare)
    sha = await service.writer.submit(edit)
    return JSONResponse(
        {"name": name, "followUp": sent["followUp"], "path": sent["path"], "commit": sha},
        status_code=201,
        headers={"Location": f"/v1/tasks/{name}", "X-Commit": sha},
    )


# -- cancelling ---------------------------------------------------------------------------------


async def cancel(request: Request, service: Service, caller: Caller) -> Response:
    """DELETE /v1/tasks/{name}: remove the Task's file from main as the caller."""
    name = name_param(request, Kind.Task)
    removed: dict[str, str] = {}

    def prepare(base: Base) -> dict[str, bytes | None]:
        declared = base.desired.get(Kind.Task, name)
        if declared is None:
            raise ApiError(404, f'Task "{name}" is not declared on main: nothing to cancel')
        others = [
            f"{kind}/{other}"
            for (kind, other), loaded in base.desired.resources.items()
            if loaded.path == declared.path and (kind, other) != (Kind.Task, name)
        ]
        if others:
            raise ApiError(
                409,
                f'Task "{name}" is declared in {declared.path} with {", ".join(sorted(others)[:5])}: '
                "remove it from that file with a commit of your own",
            )
        if declared.path in base.taken:
            raise ApiError(409, f"{declared.path} is changed by another request of this commit: try again")
        removed["path"] = declared.path
        return {declared.path: None}

    sha = await service.writer.submit(Edit(caller=caller, subject=f"Cancel task {name}", prepare=prepare))
    return JSONResponse({"name": name, "cancelled": True, "removed": removed.get("path"), "commit": sha})
