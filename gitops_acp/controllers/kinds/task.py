"""Task controller: the agent loop, one committed checkpoint per step (contract §4).

    Pending ──► ReadyForLLM ──► FinalAnswer
       ▲            │  ▲  └────► ToolCallsPending ──► (all tool calls terminal) ──► ReadyForLLM
       │            │  └───────── ErrorBackoff (408/409/429/5xx, timeouts; bounded, with jitter)
       │            ├──────────► Failed (other 4xx, with the provider's message; or too many attempts)
       │            └──────────► Cancelled (limits exceeded, or the Task left `main`)
       └── the agent is missing or not ready (the context window is kept, never rebuilt)
    FinalAnswer ──(spec.followUps has one more)──► ReadyForLLM ── … ──► FinalAnswer  (DESIGN §12)

Follow-ups: the next one (spec.followUps[status.followUpsApplied]) is taken once the answer before
it is final (and delivered to responseUrl), in ONE checkpoint that appends it as a user message and
counts it, so after a crash the count says exactly which follow-ups the committed context window
holds: none is lost or taken twice. A follow-up already taken that is removed or changed on main is
a status error (condition Error, statusDetail naming it), never a rewrite of the conversation.
A fork (spec.forkFrom) starts from another task's context window at one of its checkpoint
commits, read from git by `ctx.fork_window` (docs/conversations.md).

Each step is a private method returning either the task to continue with or a `Result` to stop on.
The LLM answer that asks for tools is ONE commit: the assistant message, the phase and every
ToolCall file, so a crash can never leave a task waiting for tool calls that were never recorded.
"""

from __future__ import annotations

import hashlib
import os
import random
import string
from collections.abc import Awaitable, Callable, Iterable

from gitops_acp import redaction
from gitops_acp.controllers.base import DONE, Context, Key, Result, parse_rfc3339, rfc3339
from gitops_acp.controllers.catalog import agent_catalog, catalog_of
from gitops_acp.controllers.delegation import child_task_name
from gitops_acp.controllers.delivery import deliver
from gitops_acp.controllers.kinds.llm import llm_config
from gitops_acp.errors import LLMError, SecretError, UserError
from gitops_acp.llm.client import Completion
from gitops_acp.resources.meta import (
    ANNOTATION_SOURCE,
    LABEL_PARENT_TOOLCALL,
    LABEL_SCHEDULE,
    LABEL_TASK,
    LABEL_TOOLCALL_REQUEST,
    TERMINAL_TASK_PHASES,
    TERMINAL_TOOLCALL_PHASES,
    Condition,
    Kind,
    TaskPhase,
    ToolCallPhase,
    ToolType,
)
from gitops_acp.resources.models import (
    LLM,
    Agent,
    AnyResource,
    LocalObjectReference,
    Message,
    ObjectMeta,
    Task,
    TaskStatus,
    ToolCall,
    ToolCallSpec,
    ToolCallStatus,
    Usage,
    user_msg_preview,
)
from gitops_acp.telemetry import tracing

__all__ = ["TaskController", "cancelled_tree", "tool_type_of", "toolcall_name"]

_RNG = random.SystemRandom()
_LETTERS = string.ascii_lowercase
_ALPHABET = string.ascii_lowercase + string.digits

Step = Callable[[Task, Context], Awaitable["Task | Result"]]


def request_id() -> str:
    """A k8s-style random id, as ACP uses for a batch of tool calls: a letter, then [a-z0-9]."""
    # One read of the OS's random source (SystemRandom.choice read it once per character); the
    # modulo bias (256 is not a multiple of 26 or 36) does not matter for an id.
    first, *rest = os.urandom(7)
    return _LETTERS[first % len(_LETTERS)] + "".join(_ALPHABET[b % len(_ALPHABET)] for b in rest)


def toolcall_name(task: str, request: str, index: int) -> str:
    """ACP's deterministic ToolCall name: `<task>-<requestId>-tc-<NN>`, NN 1-based in the LLM's order.

    Names are at most 63 characters; a long task name is cut and a digest of it keeps it unique.
    """
    suffix = f"-{request}-tc-{index:02d}"
    if len(task) + len(suffix) > 63:
        task = f"{task[: 62 - len(suffix) - 9].rstrip('-')}-{hashlib.sha256(task.encode()).hexdigest()[:8]}"
    return task + suffix


def tool_type_of(function_name: str) -> ToolType:
    """The tool type from ACP's naming scheme (`__` cannot occur in resource names)."""
    if function_name.startswith("delegate_to_agent__"):
        return ToolType.DelegateToAgent
    if function_name.endswith("__human_contact") or "__human_contact_" in function_name:
        return ToolType.HumanContact
    return ToolType.MCP


class TaskController:
    """Runs each task's agent loop."""

    kind = Kind.Task

    def dependencies(self, obj: AnyResource) -> Iterable[Key]:
        assert isinstance(obj, Task)
        yield (Kind.Agent, obj.spec.agent_ref.name)
        if obj.spec.contact_channel_ref is not None:
            yield (Kind.ContactChannel, obj.spec.contact_channel_ref.name)

    async def reconcile(self, name: str, ctx: Context) -> Result:
        task = _current(name, ctx)
        if task is None:
            return DONE
        steps: dict[TaskPhase | None, Step] = {
            None: self._initialize,
            TaskPhase.Pending: self._initialize,
            TaskPhase.ReadyForLLM: self._call_llm,
            TaskPhase.ErrorBackoff: self._wait_backoff,
            TaskPhase.ToolCallsPending: self._collect_tool_results,
        }
        while True:
            status = task.status or TaskStatus()
            if status.phase in TERMINAL_TASK_PHASES:
                if status.phase != TaskPhase.FinalAnswer or not _conversing(task) or _removed(task, ctx):
                    return await deliver(task, ctx)
                checked = await _check_conversation(task, ctx)
                result = await deliver(checked or task, ctx)
                current = _current(name, ctx)
                if checked is None or current is None or not _delivered(current):
                    return result
                reopened = await _take_follow_up(current, ctx)
                if reopened is None:
                    return result
                task = reopened
                continue
            if _removed(task, ctx):
                await _cancel(task, ctx, "Task removed from main")
            else:
                checked = await _check_conversation(task, ctx)
                if checked is None:
                    return DONE  # a follow-up taken was changed on main: wait for it to be put back
                task = checked
                step = steps.get(status.phase)
                if step is None:  # a phase this version does not know: say so instead of guessing
                    return DONE
                outcome = await step(task, ctx)
                if not isinstance(outcome, Result):
                    task = outcome
                    continue
                if not _finished(name, ctx):
                    return outcome
            # The step ended the task: go round once more for the responseUrl outbox.
            current = _current(name, ctx)
            if current is None:
                return DONE
            task = current

    # -- steps, in the order a task passes them -----------------------------------------------

    async def _initialize(self, task: Task, ctx: Context) -> Task | Result:
        """Wait for the agent; then build the initial context window (only once) → ReadyForLLM."""
        status = task.status or TaskStatus()
        waiting = _waiting_for(task, ctx)
        if waiting is not None:
            new = status.model_copy(
                update={
                    "phase": TaskPhase.Pending,
                    "ready": False,
                    "status": Condition.Pending,
                    "status_detail": waiting,
                }
            )
            if new != status:
                await ctx.state.checkpoint(task.model_copy(update={"status": new}))
            return DONE
        agent = _agent(task, ctx)
        assert agent is not None
        window = status.context_window
        if not window and task.spec.fork_from is not None:
            return await _fork(task, ctx)
        window = window or _initial_context(task, agent)
        new = status.model_copy(
            update={
                "phase": TaskPhase.ReadyForLLM,
                "ready": True,
                "status": Condition.Ready,
                "status_detail": "Ready to send to LLM",
                "context_window": window,
                "user_msg_preview": status.user_msg_preview or _preview(window),
                "start_time": status.start_time or rfc3339(ctx.now()),
                "error": None,
            }
        )
        updated = task.model_copy(update={"status": new})
        await ctx.state.checkpoint(updated)
        return updated

    async def _call_llm(self, task: Task, ctx: Context) -> Task | Result:
        """Send the context window to the LLM; record the answer, the tool calls or the error."""
        status = task.status or TaskStatus()
        limit = _limit_exceeded(task, ctx)
        if limit is not None:
            await _cancel(task, ctx, limit)
            return DONE
        if _waiting_for(task, ctx) is not None:  # the agent went away: wait, keeping the context window
            return await self._initialize(task, ctx)
        agent = _agent(task, ctx)
        llm = ctx.state.observed(Kind.LLM, agent.spec.llm_ref.name) if agent else None
        if not isinstance(llm, LLM):
            return await self._initialize(task, ctx)
        try:
            config = llm_config(llm, ctx.secrets, timeout=ctx.settings.llm_timeout)
            messages = [m.model_dump(by_alias=True, exclude_none=True) for m in status.context_window]
            tools = catalog_of(agent, ctx).tools if agent else ()
            with tracing.LLMCall(
                llm.metadata.name, config, ctx.state.observed(Kind.Task, task.metadata.name)
            ) as call:
                completion = await ctx.llm.complete(config, messages, tools)
                call.answered(completion)
        except LLMError as exc:
            return await self._llm_failed(task, ctx, exc)
        except SecretError as exc:  # rotated away between validation and now: retry like a transient error
            return await self._llm_failed(task, ctx, LLMError(str(exc)), retryable=True)
        if _removed(task, ctx):
            await _cancel(task, ctx, "Task removed from main")
            return DONE
        return await self._record_answer(task, ctx, completion)

    async def _record_answer(self, task: Task, ctx: Context, completion: Completion) -> Task | Result:
        status = task.status or TaskStatus()
        usage = status.usage or Usage()
        common = {
            "turns": status.turns + 1,
            "usage": Usage(
                prompt_tokens=usage.prompt_tokens + completion.prompt_tokens,
                completion_tokens=usage.completion_tokens + completion.completion_tokens,
            ),
            "attempts": 0,
            "next_attempt_time": None,
            "error": None,
            "context_window": [*status.context_window, Message.model_validate(completion.message)],
        }
        if not completion.tool_calls:
            final = status.model_copy(
                update={
                    **common,
                    "phase": TaskPhase.FinalAnswer,
                    "ready": True,
                    "status": Condition.Ready,
                    "status_detail": "LLM final response received"
                    + (f" (follow-up {status.follow_ups_applied})" if status.follow_ups_applied else ""),
                    "output": completion.content or "",
                    "completion_time": rfc3339(ctx.now()),
                }
            )
            await ctx.state.checkpoint(task.model_copy(update={"status": final}))
            return DONE

        request = request_id()
        name = task.metadata.name
        agent = _agent(task, ctx)
        offered = agent_catalog(agent, ctx) if agent is not None else {}
        tool_calls = [
            ToolCall(
                api_version=task.api_version,
                kind="ToolCall",
                metadata=ObjectMeta(
                    name=toolcall_name(name, request, index),
                    labels={LABEL_TASK: name, LABEL_TOOLCALL_REQUEST: request},
                ),
                spec=ToolCallSpec(
                    tool_call_id=call.id,
                    task_ref=LocalObjectReference(name=name),
                    tool_ref=LocalObjectReference(name=call.name),
                    tool_type=offered[call.name].type if call.name in offered else tool_type_of(call.name),
                    arguments=call.arguments,
                ),
                status=ToolCallStatus(
                    phase=ToolCallPhase.Pending, status=Condition.Pending, status_detail="Waiting to run"
                ),
            )
            for index, call in enumerate(completion.tool_calls, start=1)
        ]
        pending = status.model_copy(
            update={
                **common,
                "phase": TaskPhase.ToolCallsPending,
                "status_detail": f"Waiting for {len(tool_calls)} tool call(s)",
                "tool_call_request_id": request,
            }
        )
        updated = task.model_copy(update={"status": pending})
        await ctx.state.checkpoint(updated, *tool_calls)
        for call in tool_calls:
            ctx.state.wake(Kind.ToolCall, call.metadata.name)
        return updated

    async def _llm_failed(
        self, task: Task, ctx: Context, exc: LLMError, *, retryable: bool | None = None
    ) -> Result:
        """Temporary errors back off (bounded, with jitter); permanent ones fail the task at once."""
        status = task.status or TaskStatus()
        settings = ctx.settings
        attempts = status.attempts + 1
        message = str(exc)
        if not (exc.retryable if retryable is None else retryable) or attempts >= settings.max_llm_attempts:
            if attempts >= settings.max_llm_attempts and exc.retryable:
                message = f"giving up after {attempts} attempts: {message}"
            failed = status.model_copy(
                update={
                    "phase": TaskPhase.Failed,
                    "ready": False,
                    "status": Condition.Error,
                    "status_detail": message,
                    "error": message,
                    "attempts": attempts,
                    "next_attempt_time": None,
                    "completion_time": rfc3339(ctx.now()),
                }
            )
            await ctx.state.checkpoint(task.model_copy(update={"status": failed}))
            return DONE
        delay = min(settings.backoff_cap, settings.backoff_base * 2 ** (attempts - 1))
        delay *= _RNG.uniform(0.5, 1.0)  # full jitter on the upper half: retries of many tasks spread out
        if exc.retry_after is not None:
            delay = min(settings.backoff_cap, max(delay, exc.retry_after))
        backoff = status.model_copy(
            update={
                "phase": TaskPhase.ErrorBackoff,
                "ready": True,
                "status": Condition.Error,
                "status_detail": f"LLM request failed, retrying in {delay:.1f}s (attempt {attempts})",
                "error": message,
                "attempts": attempts,
                "next_attempt_time": rfc3339(ctx.now() + delay),
            }
        )
        await ctx.state.checkpoint(task.model_copy(update={"status": backoff}))
        return Result(delay, progress=True)

    async def _wait_backoff(self, task: Task, ctx: Context) -> Task | Result:
        """Stay in ErrorBackoff until nextAttemptTime, then return to ReadyForLLM."""
        status = task.status or TaskStatus()
        due = parse_rfc3339(status.next_attempt_time) if status.next_attempt_time else 0.0
        remaining = due - ctx.now()
        if remaining > 0:
            return Result(remaining, progress=True)
        ready = status.model_copy(
            update={
                "phase": TaskPhase.ReadyForLLM,
                "status": Condition.Ready,
                "status_detail": f"Retrying LLM request (attempt {status.attempts + 1})",
            }
        )
        updated = task.model_copy(update={"status": ready})
        await ctx.state.checkpoint(updated)
        return updated

    async def _collect_tool_results(self, task: Task, ctx: Context) -> Task | Result:
        """When every tool call of the request is terminal, append their results in the LLM's order.

        Results that exist are always recorded before a limit stops the task (the ReadyForLLM step
        checks limits), so the context window never ends on an unanswered tool call; only a task
        still waiting on its tool calls is cancelled here (its timeout).
        """
        status = task.status or TaskStatus()
        calls = _pending_calls(task)
        results: list[Message] = []
        for index, call_id in enumerate(calls, start=1):
            name = toolcall_name(task.metadata.name, status.tool_call_request_id or "", index)
            call = ctx.state.observed(Kind.ToolCall, name)
            if (
                not isinstance(call, ToolCall)
                or call.status is None
                or call.status.phase not in TERMINAL_TOOLCALL_PHASES
            ):
                limit = _limit_exceeded(task, ctx, only_timeout=True)
                if limit is not None:
                    await _cancel(task, ctx, limit)
                    return DONE
                return _timeout_result(task, ctx)
            results.append(Message(role="tool", tool_call_id=call_id, content=tool_message(call)))
        ready = status.model_copy(
            update={
                "phase": TaskPhase.ReadyForLLM,
                "status": Condition.Ready,
                "status_detail": "All tool calls completed, ready to send tool results to LLM",
                "context_window": [*status.context_window, *results],
            }
        )
        updated = task.model_copy(update={"status": ready})
        await ctx.state.checkpoint(updated)
        return updated


def tool_message(call: ToolCall) -> str:
    """The text the model reads for a finished tool call: its result, or its error (never hidden)."""
    status = call.status or ToolCallStatus()
    if status.phase == ToolCallPhase.Succeeded:
        return status.result or ""
    if status.phase == ToolCallPhase.ToolCallRejected:
        return status.result or f"Rejected: {status.error or ''}".rstrip()
    return f"Error: {status.error or status.status_detail or 'tool call failed'}"


# -- helpers ----------------------------------------------------------------------------------


def _current(name: str, ctx: Context) -> Task | None:
    """The task as the loop sees it: the spec from `main` (or the status branch for children)."""
    loaded = ctx.state.desired(Kind.Task, name)
    observed = ctx.state.observed(Kind.Task, name)
    if loaded is not None:
        assert isinstance(loaded.resource, Task)
        status = observed.status if isinstance(observed, Task) else None
        return loaded.resource.model_copy(update={"status": status})
    return observed if isinstance(observed, Task) else None


def _finished(name: str, ctx: Context) -> bool:
    """Whether the task's committed status is terminal: `_current`'s status, without building it."""
    observed = ctx.state.observed(Kind.Task, name)
    status = observed.status if isinstance(observed, Task) else None
    return status is not None and status.phase in TERMINAL_TASK_PHASES


def _created_by_reconciler(task: Task) -> bool:
    """Delegated child tasks and a TaskSchedule's tasks live only on the status branch (never
    declared on main: no source annotation)."""
    labels = task.metadata.labels
    return LABEL_PARENT_TOOLCALL in labels or (
        LABEL_SCHEDULE in labels and ANNOTATION_SOURCE not in task.metadata.annotations
    )


def _removed(task: Task, ctx: Context) -> bool:
    return not _created_by_reconciler(task) and ctx.state.desired(Kind.Task, task.metadata.name) is None


def _agent(task: Task, ctx: Context) -> Agent | None:
    loaded = ctx.state.desired(Kind.Agent, task.spec.agent_ref.name)
    return loaded.resource if loaded is not None and isinstance(loaded.resource, Agent) else None


def _waiting_for(task: Task, ctx: Context) -> str | None:
    """What the task waits for before it can talk to its LLM, or None."""
    name = task.spec.agent_ref.name
    if _agent(task, ctx) is None:
        return f'Waiting for Agent "{name}" to exist'
    agent = ctx.state.observed(Kind.Agent, name)
    if not isinstance(agent, Agent) or agent.status is None or agent.status.status != Condition.Ready:
        detail = agent.status.status_detail if isinstance(agent, Agent) and agent.status else None
        return f'Waiting for agent "{name}" to become ready' + (f" ({detail})" if detail else "")
    return None


def _initial_context(task: Task, agent: Agent) -> list[Message]:
    """[system, user], or the given window with the agent's system prompt prepended when it has none."""
    system = Message(role="system", content=agent.spec.system)
    if task.spec.context_window:
        window = list(task.spec.context_window)
        return window if any(m.role == "system" for m in window) else [system, *window]
    return [system, Message(role="user", content=task.spec.user_message or "")]


def _preview(window: list[Message]) -> str:
    users = [m.content for m in window if m.role == "user"]
    return user_msg_preview(users[-1]) if users else ""


def _pending_calls(task: Task) -> list[str]:
    """The tool_call ids of the last assistant message, in the LLM's order."""
    status = task.status or TaskStatus()
    for message in reversed(status.context_window):
        if message.role == "assistant":
            return [call.id for call in message.tool_calls]
    return []


def _limit_exceeded(task: Task, ctx: Context, *, only_timeout: bool = False) -> str | None:
    """The reason the task must stop, from the agent's `limits`, or None.

    `only_timeout`: while the task waits on tool calls, only its timeout can stop it; turns and
    tokens are checked before the next LLM call, after the results are recorded.
    """
    agent = _agent(task, ctx)
    limits = agent.spec.limits if agent is not None else None
    if limits is None:
        return None
    status = task.status or TaskStatus()
    if not only_timeout and limits.max_turns is not None and status.turns >= limits.max_turns:
        return f"limit exceeded: maxTurns {limits.max_turns} reached after {status.turns} LLM turns"
    usage = status.usage or Usage()
    used = usage.prompt_tokens + usage.completion_tokens
    if not only_timeout and limits.max_tokens is not None and used >= limits.max_tokens:
        return f"limit exceeded: maxTokens {limits.max_tokens} reached ({used} tokens used)"
    timeout = limits.timeout_seconds
    started = status.last_follow_up_time or status.start_time  # a conversation's idle time is not the agent's
    if timeout is not None and started:
        elapsed = ctx.now() - parse_rfc3339(started)
        if elapsed >= timeout:
            return f"limit exceeded: timeout {limits.timeout} reached after {elapsed:.1f}s"
    return None


def _timeout_result(task: Task, ctx: Context) -> Result:
    """While waiting on others, come back when the task's timeout would expire (a watchdog only)."""
    agent = _agent(task, ctx)
    timeout = agent.spec.limits.timeout_seconds if agent is not None and agent.spec.limits else None
    status = task.status or TaskStatus()
    started = status.last_follow_up_time or status.start_time
    if timeout is None or not started:
        return DONE
    remaining = parse_rfc3339(started) + timeout - ctx.now()
    return Result(max(remaining, 0.0), progress=False)


async def _cancel(task: Task, ctx: Context, reason: str) -> None:
    """Cancel the task and, in the same commit, its unfinished tool calls and their sub-agent tasks."""
    objects = _cancelled_tree(task, ctx, reason)
    await ctx.state.checkpoint(*objects)
    for obj in objects[1:]:
        ctx.state.wake(Kind(obj.kind), obj.metadata.name)


def cancelled_tree(task: Task, ctx: Context, reason: str) -> list[AnyResource]:
    """The task cancelled with its unfinished tool calls and sub-agent tasks, to commit as one
    checkpoint (a TaskSchedule's Replace cancels its running task this way)."""
    return _cancelled_tree(task, ctx, reason)


def _cancelled_tree(task: Task, ctx: Context, reason: str, depth: int = 0) -> list[AnyResource]:
    """The task cancelled, then each unfinished tool call failed and each child task cancelled."""
    now = rfc3339(ctx.now())
    status = task.status or TaskStatus()
    cancelled = status.model_copy(
        update={
            "phase": TaskPhase.Cancelled,
            "ready": False,
            "status": Condition.Error,
            "status_detail": reason,
            "error": reason,
            "next_attempt_time": None,
            "completion_time": now,
        }
    )
    objects: list[AnyResource] = [task.model_copy(update={"status": cancelled})]
    if status.phase != TaskPhase.ToolCallsPending or not status.tool_call_request_id or depth > 20:
        return objects
    for index, _ in enumerate(_pending_calls(task), start=1):
        name = toolcall_name(task.metadata.name, status.tool_call_request_id, index)
        call = ctx.state.observed(Kind.ToolCall, name)
        if (
            not isinstance(call, ToolCall)
            or call.status is None
            or call.status.phase in TERMINAL_TOOLCALL_PHASES
        ):
            continue
        error = f"cancelled: {reason}"
        failed = call.status.model_copy(
            update={
                "phase": ToolCallPhase.Failed,
                "status": Condition.Error,
                "status_detail": error,
                "error": error,
                "completion_time": now,
            }
        )
        objects.append(call.model_copy(update={"status": failed}))
        child = ctx.state.observed(Kind.Task, child_task_name(name))
        if (
            isinstance(child, Task)
            and child.metadata.labels.get(LABEL_PARENT_TOOLCALL) == name
            and (child.status is None or child.status.phase not in TERMINAL_TASK_PHASES)
        ):
            objects += _cancelled_tree(child, ctx, f"parent task {task.metadata.name} cancelled", depth + 1)
    return objects


# -- conversations (DESIGN §12): follow-ups and forks ----------------------------------------------

#: How a conversation error's text begins: `spec.followUps[<i>] ...` (cleared once main agrees again).
CONFLICT_PREFIX = "spec.followUps["


def _conversation_problem(task: Task) -> str | None:
    """Why spec.followUps no longer agrees with the follow-ups taken into the context window, or None.

    The follow-ups taken are the last `followUpsApplied` user messages of the window: after the
    first checkpoint only a follow-up adds a user message (tool results are `tool` messages).
    """
    status = task.status or TaskStatus()
    applied = status.follow_ups_applied
    if not applied:
        return None
    name = task.metadata.name
    spec = task.spec.follow_ups
    fix = (
        "the conversation is not rewritten: put it back as it was, or fork it "
        f"(`gitops-acp task create NEW --fork-from {name}`)"
    )
    if len(spec) < applied:
        return (
            f"spec.followUps[{len(spec)}] was removed from main after it was taken into the conversation "
            f"({applied} follow-up(s) were): {fix}"
        )
    users = [m.content for m in status.context_window if m.role == "user"][-applied:]
    for index, (taken, follow_up) in enumerate(zip(users, spec, strict=False)):
        if taken not in (follow_up.content, redaction.text(follow_up.content)):
            return (
                f"spec.followUps[{index}] was changed on main after it was taken into the conversation "
                f"(it was {user_msg_preview(taken)!r}): {fix}"
            )
    return None


async def _check_conversation(task: Task, ctx: Context) -> Task | None:
    """The task to go on with, or None when its follow-ups disagree with its conversation (the
    condition Error and the reason are committed once; the phase stays). Cleared when main agrees."""
    status = task.status or TaskStatus()
    if not status.follow_ups_applied and not (status.error or "").startswith(CONFLICT_PREFIX):
        return task  # the common case: nothing to compare
    problem = _conversation_problem(task)
    if problem is None:
        if not (status.error or "").startswith(CONFLICT_PREFIX):
            return task
        fixed = status.model_copy(
            update={
                "ready": True,
                "status": Condition.Ready,
                "status_detail": "spec.followUps agrees with the conversation again",
                "error": None,
            }
        )
        updated = task.model_copy(update={"status": fixed})
        await ctx.state.checkpoint(updated)
        return updated
    if status.error != problem:
        conflict = status.model_copy(
            update={"ready": False, "status": Condition.Error, "status_detail": problem, "error": problem}
        )
        await ctx.state.checkpoint(task.model_copy(update={"status": conflict}))
    return None


def _conversing(task: Task) -> bool:
    """Whether the task has follow-ups to take or to compare (most tasks have none: one test)."""
    status = task.status or TaskStatus()
    return bool(
        task.spec.follow_ups or status.follow_ups_applied or (status.error or "").startswith(CONFLICT_PREFIX)
    )


def _delivered(task: Task) -> bool:
    """Whether the answer has gone to responseUrl (or there is none): the next follow-up may come."""
    status = task.status or TaskStatus()
    if not task.spec.response_url:
        return True
    return (status.delivery or {}).get("state") in ("Delivered", "Failed")


async def _take_follow_up(task: Task, ctx: Context) -> Task | None:
    """FinalAnswer → ReadyForLLM with the next follow-up appended and counted, in one checkpoint."""
    status = task.status or TaskStatus()
    applied = status.follow_ups_applied
    if status.phase != TaskPhase.FinalAnswer or len(task.spec.follow_ups) <= applied:
        return None
    content = task.spec.follow_ups[applied].content
    now = rfc3339(ctx.now())
    reopened = status.model_copy(
        update={
            "phase": TaskPhase.ReadyForLLM,
            "ready": True,
            "status": Condition.Ready,
            "status_detail": f"Follow-up {applied + 1} received, ready to send to LLM",
            "error": None,
            "context_window": [*status.context_window, Message(role="user", content=content)],
            "follow_ups_applied": applied + 1,
            "last_follow_up_time": now,
            "user_msg_preview": user_msg_preview(content),
            "completion_time": None,
            "delivery": None,  # the next answer is delivered again
        }
    )
    updated = task.model_copy(update={"status": reopened})
    await ctx.state.checkpoint(updated)
    return updated


async def _fork(task: Task, ctx: Context) -> Task | Result:
    """Start from the context window of `spec.forkFrom` at its checkpoint commit (read from git).

    Without a userMessage, a checkpoint that ends on an answer gives a task that has answered
    (FinalAnswer, the same output), ready for follow-ups; otherwise the LLM is called.
    """
    fork = task.spec.fork_from
    assert fork is not None
    status = task.status or TaskStatus()
    now = rfc3339(ctx.now())
    where = f"{fork.task}@{fork.commit[:12] if fork.commit else 'its newest checkpoint'}"
    try:
        if ctx.fork_window is None:
            raise UserError("this reconciler cannot read checkpoints")
        commit, window = await ctx.fork_window(fork.task, fork.commit)
        where = f"{fork.task}@{commit[:12]}"
    except UserError as exc:
        reason = f"cannot fork from {where}: {exc}"
        failed = status.model_copy(
            update={
                "phase": TaskPhase.Failed,
                "ready": False,
                "status": Condition.Error,
                "status_detail": reason,
                "error": reason,
                "start_time": status.start_time or now,
                "completion_time": now,
            }
        )
        await ctx.state.checkpoint(task.model_copy(update={"status": failed}))
        return DONE
    if task.spec.user_message:
        window = [*window, Message(role="user", content=task.spec.user_message)]
    last = window[-1] if window else None
    answered = last is not None and last.role == "assistant" and not last.tool_calls
    common = {
        "ready": True,
        "status": Condition.Ready,
        "context_window": window,
        "user_msg_preview": _preview(window),
        "start_time": status.start_time or now,
        "error": None,
    }
    if answered and last is not None:
        new = status.model_copy(
            update={
                **common,
                "phase": TaskPhase.FinalAnswer,
                "status_detail": f"Forked from {where}: its answer is this task's answer",
                "output": last.content,
                "completion_time": now,
            }
        )
        await ctx.state.checkpoint(task.model_copy(update={"status": new}))
        current = _current(task.metadata.name, ctx)
        return current if current is not None else DONE
    new = status.model_copy(
        update={
            **common,
            "phase": TaskPhase.ReadyForLLM,
            "status_detail": f"Forked from {where}: ready to send to LLM",
        }
    )
    updated = task.model_copy(update={"status": new})
    await ctx.state.checkpoint(updated)
    return updated
