"""Tool calls an MCP server runs as a task: followed durably, asked for input through git, cancelled.

    Running ── tools/call answers with a task handle ──► mcpTask{server, taskId} committed (before
        any wait) ──► tasks/get every pollIntervalMs (a requeue timer; nothing sleeps in a worker)
            working ─────────────► statusMessage noted when it changes
            completed ───────────► Succeeded with its result (Failed when the result is isError)
            failed | cancelled ──► Failed with the server's error
            input_required ──────► an elicitation: a question on the task's contact channel
                                   (branch acp/questions/<toolcall>, a pull request with a forge),
                                   AwaitingHumanInput ── merged answer ──► tasks/update {accept}
                                                      ── branch deleted ─► tasks/update {cancel}
                                   no git contact channel ──► tasks/update {decline}, and why
    found Running with an mcpTask at start-up ──► tasks/get again: the same task, never a new run
        the server does not know the task (a stdio server restarted with serve) ──► idempotent
        tool: called again; otherwise Failed "interrupted: outcome unknown, not re-run"
    the call ends first (its Task cancelled) ──► tasks/cancel, recorded in mcpTask.cancelRequestedAt

The server may speak the 2026-07-28 tasks extension or the tasks of 2025-11-25; gitops_acp/mcp/
hides which (`mcpTask.session` is where a 2025-11-25 server keeps the task, passed back as is).

A kill between the server creating the task and the commit of its id leaves a call `Running`
without `mcpTask`: that is the ordinary unknown outcome (controllers/mcptools.py) and the task
runs on, unfollowed, on the server (docs/tools.md).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gitops_acp import redaction
from gitops_acp.controllers import deciders, pullrequests
from gitops_acp.controllers.base import DONE, Context, Result, parse_rfc3339, rfc3339
from gitops_acp.controllers.calls import finish
from gitops_acp.controllers.catalog import Entry
from gitops_acp.errors import MCPError, MCPRefusedError
from gitops_acp.humans.questions import response_path
from gitops_acp.mcp.models import InputRequest, TaskState
from gitops_acp.resources.kinds.toolcall import MCP_TASK_TERMINAL, ToolCallMCPTask
from gitops_acp.resources.meta import API_VERSION, Condition, Kind, ToolCallPhase
from gitops_acp.resources.models import (
    Agent,
    ContactChannel,
    MCPServer,
    Task,
    ToolCall,
    ToolCallHumanContact,
    ToolCallStatus,
)
from gitops_acp.telemetry import metrics

__all__ = ["INTERRUPTED_TASK", "answer_content", "cancel_if_unfinished", "check_answer", "follow", "started"]

log = logging.getLogger("gitops_acp")

INTERRUPTED_TASK = "interrupted: outcome unknown, not re-run"
#: Bounds on the time between two looks at a task (the server's pollIntervalMs, within these).
_MIN_POLL, _DEFAULT_POLL, _MAX_POLL = 0.05, 1.0, 30.0
#: How soon a look that could not be made (a timeout, a connection lost) is tried again.
_RETRY = 2.0
#: A task's progress (a new statusMessage, same status) is committed at most this often: a server
#: reporting progress on every poll would otherwise make a commit every pollIntervalMs.
_PROGRESS_EVERY = 30.0
#: Time allowed for one tasks/* request.
_REQUEST_TIMEOUT = 30.0


def _poll(state: TaskState | None) -> Result:
    interval = state.poll_interval if state is not None and state.poll_interval else _DEFAULT_POLL
    return Result(max(_MIN_POLL, min(interval, _MAX_POLL)))


def _detail(task: ToolCallMCPTask) -> str:
    said = f": {task.status_message}" if task.status_message else ""
    return f"MCP task {task.task_id} on MCP server {task.server} is {task.status or 'working'}{said}"


async def _commit(call: ToolCall, ctx: Context, **update: Any) -> ToolCall:
    status = call.status or ToolCallStatus()
    changed = call.model_copy(update={"status": status.model_copy(update=update)})
    if changed != call:
        await ctx.state.checkpoint(changed)
    return changed


async def started(call: ToolCall, entry: Entry, ctx: Context, handle: TaskState) -> Result:
    """The server answered the call with a task: commit its id before anything waits for it."""
    task = ToolCallMCPTask(
        server=entry.target,
        task_id=handle.task_id,
        session=handle.session,
        status=handle.status,
        status_message=handle.status_message,
        noted_at=rfc3339(ctx.now()),
    )
    await _commit(call, ctx, mcp_task=task, status_detail=_detail(task))
    return _poll(handle)


async def follow(call: ToolCall, entry: Entry, ctx: Context) -> Result:
    """Look at the call's MCP task once and act on what it says (a Running call with an mcpTask)."""
    status = call.status or ToolCallStatus()
    task = status.mcp_task
    assert task is not None
    state = ctx.mcp.state(task.server)
    if state is None or not state.connected:
        why = (state.error if state is not None else None) or "starting"
        await _commit(call, ctx, status_detail=f"{_detail(task)}; waiting for the server to connect ({why})")
        return DONE  # the server's status change wakes the call (dependency index)
    try:
        current = await ctx.mcp.get_task(
            task.server, task.task_id, timeout=_REQUEST_TIMEOUT, session=task.session
        )
    except MCPRefusedError as exc:
        return await _gone(call, entry, ctx, str(exc))
    except MCPError as exc:
        await _commit(call, ctx, status_detail=f"{_detail(task)}; cannot look at it now: {exc}")
        return Result(_RETRY)
    seen = task.model_copy(update={"status": current.status, "status_message": current.status_message})
    call = call.model_copy(update={"status": status.model_copy(update={"mcp_task": seen})})
    if current.terminal:
        ok = current.status == "completed" and current.result is not None and not current.result.is_error
        began = parse_rfc3339(status.start_time) if status.start_time else ctx.now()
        metrics.tool_call(task.server, entry.tool, max(0.0, ctx.now() - began), ok=ok)
    if current.status == "completed":
        result = current.result
        if result is None:
            await finish(call, ctx, error=f"MCP task {task.task_id} completed without a result")
        elif result.is_error:
            await finish(call, ctx, error=result.text or "the tool reported an error")
        else:
            await finish(call, ctx, result=result.text)
        return DONE
    if current.status == "failed":
        await finish(
            call, ctx, error=f"MCP task {task.task_id} failed: {current.error or current.status_message}"
        )
        return DONE
    if current.status == "cancelled":
        said = f": {current.status_message}" if current.status_message else ""
        await finish(call, ctx, error=f"MCP server {task.server} cancelled task {task.task_id}{said}")
        return DONE
    if current.status == "input_required":
        # Keys are unique over a task's life; one already answered may show until the server moves on.
        pending = [r for r in current.input_requests if r.key not in task.answered_inputs]
        if pending:
            return await _ask(call, entry, ctx, pending[0])
    if seen.status != task.status or (
        seen.status_message != task.status_message and _progress_due(task, ctx.now())
    ):
        seen = seen.model_copy(update={"noted_at": rfc3339(ctx.now())})
        await _commit(call, ctx, mcp_task=seen, status_detail=_detail(seen))
    return _poll(current)


def _progress_due(task: ToolCallMCPTask, now: float) -> bool:
    """Whether a changed statusMessage alone is worth a commit (at most one each _PROGRESS_EVERY)."""
    return task.noted_at is None or now - parse_rfc3339(task.noted_at) >= _PROGRESS_EVERY


async def _gone(call: ToolCall, entry: Entry, ctx: Context, why: str) -> Result:
    """The server does not know the task (it restarted, or dropped it after its TTL)."""
    status = call.status or ToolCallStatus()
    task = status.mcp_task
    assert task is not None
    if entry.idempotent:
        # Safe to run again, as a call interrupted by a crash is: the executor calls it anew.
        detail = f"MCP task {task.task_id} is gone ({why}); {entry.tool} is idempotent: calling it again"
        await _commit(call, ctx, mcp_task=None, status_detail=detail)
        return Result(0.0)
    await finish(call, ctx, error=f"{INTERRUPTED_TASK} (MCP task {task.task_id}: {why})")
    return DONE


# --- requests for input (elicitation) ------------------------------------------------------------


def _channel(call: ToolCall, ctx: Context) -> tuple[ContactChannel | None, str]:
    """The contact channel the task's questions go to, or None with the reason there is none."""
    task_name = call.spec.task_ref.name
    loaded = ctx.state.desired(Kind.Task, task_name)
    task = loaded.resource if loaded is not None else ctx.state.observed(Kind.Task, task_name)
    name: str | None = None
    if isinstance(task, Task):
        if task.spec.contact_channel_ref is not None:
            name = task.spec.contact_channel_ref.name
        else:
            agent = ctx.state.desired(Kind.Agent, task.spec.agent_ref.name)
            resource = agent.resource if agent is not None else None
            if isinstance(resource, Agent) and resource.spec.human_contact_channels:
                name = resource.spec.human_contact_channels[0].name
    if name is None:
        return None, f"task {task_name} has no contact channel (spec.contactChannelRef, or its agent's)"
    channel = ctx.state.desired(Kind.ContactChannel, name)
    found = channel.resource if channel is not None else None
    if not isinstance(found, ContactChannel):
        return None, f'the contact channel "{name}" does not exist'
    if str(found.spec.type) != "git":
        return None, f'the contact channel "{name}" is {found.spec.type}: questions from tools go through git'
    return found, ""


async def _answer(call: ToolCall, ctx: Context, key: str, reply: dict[str, Any]) -> bool:
    """Send `reply` for input request `key`; False when the server cannot be told now."""
    task = (call.status or ToolCallStatus()).mcp_task
    assert task is not None
    try:
        await ctx.mcp.answer_task(
            task.server, task.task_id, {key: reply}, timeout=_REQUEST_TIMEOUT, session=task.session
        )
    except MCPRefusedError as exc:
        log.info("%s: the answer to %s was refused: %s", call.metadata.name, key, exc)
    except MCPError as exc:
        log.info("%s: answering %s later: %s", call.metadata.name, key, exc)
        return False
    return True


async def _ask(call: ToolCall, entry: Entry, ctx: Context, request: InputRequest) -> Result:
    """Put the server's request for input to a person, or decline it and say why."""
    status = call.status or ToolCallStatus()
    task = status.mcp_task
    assert task is not None
    channel, why = _channel(call, ctx)
    if request.method != "elicitation/create":
        channel, why = None, f"the server asked for {request.method}, which gitops-acp does not answer"
    if channel is None:
        if not await _answer(call, ctx, request.key, {"action": "decline"}):
            return Result(_RETRY)
        declined = task.model_copy(
            update={
                "declined": why,
                "answered_inputs": [*task.answered_inputs, request.key],
                "input_request": None,
            }
        )
        await _commit(
            call,
            ctx,
            mcp_task=declined,
            status_detail=f"{_detail(declined)}; declined its request for input: {why}",
        )
        return Result(_MIN_POLL)
    toolcall = call.metadata.name
    asked = len(task.answered_inputs)
    question = toolcall if asked == 0 else f"{toolcall}-input-{asked + 1}"
    task_name = call.spec.task_ref.name
    document = {
        "apiVersion": API_VERSION,
        "kind": "HumanResponse",
        "metadata": {"name": question},
        "spec": {
            "task": task_name,
            "toolCall": toolcall,
            "question": request.message,
            "requestedSchema": request.schema or {},
            "response": "",
        },
    }
    fields = ", ".join(sorted((request.schema or {}).get("properties", {}))) or "a text answer"
    title = f"Question from tool {entry.tool} (task {task_name}): {request.message.strip()[:60]}"
    message = (
        f"{title}\n\n{request.message}\n\n"
        f"The MCP server {entry.target} asks this while running {entry.tool} for task {task_name}\n"
        f"(tool call {toolcall}, MCP task {task.task_id}). It wants: {fields}.\n\n"
        f"To answer, write `response:` in {response_path(question)} on this branch (text for one\n"
        f"field, a mapping for several) and merge it into main,\n"
        f"or run: gitops-acp respond {question} --message '...'\n"
        "To decline, merge it with an empty response; to cancel, delete the branch without merging.\n"
    )
    # The server's words go into a branch of the repository: no resolved secret goes with them.
    document, message, title = redaction.document(document), redaction.text(message), redaction.text(title)
    branch = await ctx.humans.propose_question(question, document, message)
    contact = ToolCallHumanContact(channel=channel.metadata.name, branch=branch)
    where = branch
    if pullrequests.has_forge(channel):
        body = message.split("\n\n", 1)[1].replace("\n", " \n")
        opened = await pullrequests.open_for(call, channel, ctx, branch=branch, title=title, body=body)
        if isinstance(opened, Result):
            return opened
        if isinstance(opened, pullrequests.Refused):
            if not await _answer(call, ctx, request.key, {"action": "decline"}):
                return Result(_RETRY)
            reason = f"could not open the question's pull request: {opened.reason}"
            declined = task.model_copy(
                update={
                    "declined": reason,
                    "answered_inputs": [*task.answered_inputs, request.key],
                    "input_request": None,
                }
            )
            await _commit(
                call, ctx, mcp_task=declined, status_detail=f"{_detail(declined)}; declined: {reason}"
            )
            return Result(_MIN_POLL)
        contact = contact.model_copy(update={"pull_request": opened.number, "pull_request_url": opened.url})
        where = f"pull request #{opened.number} ({opened.url})"
    asking = task.model_copy(
        update={
            "status": "input_required",
            "input_request": request.key,
            "question": question,
            "declined": None,
        }
    )
    await _commit(
        call,
        ctx,
        phase=ToolCallPhase.AwaitingHumanInput,
        status=Condition.Pending,
        mcp_task=asking,
        human_contact=contact,
        status_detail=f"MCP task {task.task_id} asks: {request.message.strip()[:200]} — answer in {where} "
        f"and merge into main (or gitops-acp respond {question})",
    )
    return DONE  # main moving, or the branch going, wakes the call (reactor/awaiting.py)


async def check_answer(call: ToolCall, entry: Entry, ctx: Context) -> Result:
    """An AwaitingHumanInput call with an mcpTask: send the merged answer back to the server."""
    status = call.status or ToolCallStatus()
    task = status.mcp_task
    assert task is not None
    if task.question is None or task.input_request is None:
        return await _resume(call, ctx, task, detail="following the MCP task again")
    found = await ctx.humans.question_response(task.question)
    contact = status.human_contact or ToolCallHumanContact()
    if found is None:
        if contact.branch and await ctx.humans.branch_exists(contact.branch):
            channel = _channel(call, ctx)[0]
            if contact.pull_request is None or channel is None or not pullrequests.has_forge(channel):
                return DONE  # main moving, or the branch going, wakes the call
            gone, wait = await pullrequests.closed(
                call, channel, contact.pull_request, ctx, waiting="Waiting for an answer"
            )
            if not gone:
                return Result(wait, progress=False)
        reply: dict[str, Any] = {"action": "cancel"}
        said = "the question was closed without an answer: the server was told (cancel)"
    else:
        channel = _channel(call, ctx)[0]
        forge = None
        if contact.pull_request is not None and pullrequests.has_forge(channel):
            assert channel is not None
            asked = await pullrequests.merge_info(
                call, channel, contact.pull_request, ctx, waiting="Answered on main"
            )
            if isinstance(asked, Result):
                return asked
            forge = asked
        decider = deciders.choose(found, channel=channel, forge=forge)
        by = decider.identity or "unknown"
        contact = contact.model_copy(
            update={
                "responded_by": by,
                "responded_via": decider.via,
                "responded_at": rfc3339(found.decided_at),
            }
        )
        content, problem = answer_content(found.spec.get("response"), _schema(found.spec))
        if decider.refused is not None:
            reply, said = {"action": "decline"}, f"the answer cannot count ({decider.refused}): declined"
        elif content is None:
            reply, said = {"action": "decline"}, f"declined: {problem}"
        else:
            reply, said = {"action": "accept", "content": content}, f"answered by {by} ({decider.via})"
    if not await _answer(call, ctx, task.input_request, reply):
        return Result(_RETRY)
    call = call.model_copy(update={"status": status.model_copy(update={"human_contact": contact})})
    if contact.branch:
        try:
            await ctx.humans.delete_branch(contact.branch)
        except Exception as exc:  # the branch is only tidied; the call goes on either way
            log.info("%s: %s stays: %s", call.metadata.name, contact.branch, exc)
    return await _resume(call, ctx, task, detail=said)


async def _resume(call: ToolCall, ctx: Context, task: ToolCallMCPTask, *, detail: str) -> Result:
    answered = task.model_copy(
        update={
            "status": "working",
            "answered_inputs": [*task.answered_inputs, *([task.input_request] if task.input_request else [])],
            "input_request": None,
            "question": None,
        }
    )
    await _commit(
        call,
        ctx,
        phase=ToolCallPhase.Running,
        status=Condition.Pending,
        mcp_task=answered,
        status_detail=f"MCP task {task.task_id}: {detail}",
    )
    return Result(0.0)


def _schema(spec: dict[str, Any]) -> dict[str, Any]:
    schema = spec.get("requestedSchema")
    return schema if isinstance(schema, dict) else {}


def answer_content(response: Any, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The elicitation's `content` from a person's `response`, or None and why it cannot be one.

    One field in the form: the response is its value (text coerced to the field's type). Several:
    the response is a mapping of them (YAML in the file). No form: `{"response": text}`.
    """
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    assert isinstance(properties, dict)
    if response is None or (isinstance(response, str) and not response.strip()):
        return None, "the response is empty"
    if not isinstance(response, dict):
        if not properties:
            return {"response": response if isinstance(response, str) else json.dumps(response)}, ""
        if len(properties) != 1:
            return (
                None,
                f"the form has {len(properties)} fields ({', '.join(sorted(properties))}): write a mapping",
            )
        response = {next(iter(properties)): response}
    content: dict[str, Any] = {}
    for name, value in response.items():
        field = properties.get(name) if properties else {}
        if properties and field is None:
            return None, f'the form has no field "{name}" (it has {", ".join(sorted(properties))})'
        coerced = _coerce(value, field if isinstance(field, dict) else {})
        if coerced is None:
            kind = (field or {}).get("type")
            return None, f'"{name}" must be {kind}, got {value!r}'
        content[str(name)] = coerced
    missing = [name for name in schema.get("required", []) if name not in content]
    if missing:
        return None, f"required field(s) missing: {', '.join(missing)}"
    return content, ""


def _coerce(value: Any, field: dict[str, Any]) -> Any:
    """`value` as the form field's type (string, number, integer, boolean), or None if it is not one."""
    kind = field.get("type")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return True if text in ("true", "yes") else False if text in ("false", "no") else None
    if kind in ("number", "integer"):
        if isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        if kind == "integer":
            return int(number) if number.is_integer() else None
        return number
    if kind == "string" or kind is None:
        if isinstance(value, dict | list):
            return value if kind is None else None
        text = value if isinstance(value, str) else json.dumps(value)
        options = field.get("enum")
        return text if not isinstance(options, list) or text in options else None
    return value


# --- the call ended before its task ----------------------------------------------------------------


async def cancel_if_unfinished(call: ToolCall, ctx: Context) -> Result | None:
    """A terminal call whose MCP task may still run: tasks/cancel it and record that.

    None when there is nothing (more) to do; a Result to come back when it cannot be done now."""
    status = call.status or ToolCallStatus()
    task = status.mcp_task
    if task is None or task.status in MCP_TASK_TERMINAL or task.cancel_requested_at is not None:
        return None
    server = ctx.state.desired(Kind.MCPServer, task.server)
    state = ctx.mcp.state(task.server)
    if state is None or not state.connected:
        if server is None or not isinstance(server.resource, MCPServer):
            note = task.model_copy(update={"status_message": "not cancelled: its MCP server was removed"})
            await _commit(call, ctx, mcp_task=note)
            return None
        return Result(ctx.settings.error_retry, progress=False)  # told once it is connected
    try:
        await ctx.mcp.cancel_task(task.server, task.task_id, timeout=_REQUEST_TIMEOUT, session=task.session)
    except MCPRefusedError as exc:
        note = task.model_copy(update={"status_message": f"tasks/cancel refused: {exc}"})
    except MCPError as exc:
        log.info("%s: cancelling MCP task %s later: %s", call.metadata.name, task.task_id, exc)
        return Result(ctx.settings.error_retry, progress=False)
    else:
        note = task.model_copy(update={"status": "cancelled", "status_message": "cancelled by gitops-acp"})
    await _commit(call, ctx, mcp_task=note.model_copy(update={"cancel_requested_at": rfc3339(ctx.now())}))
    return None
