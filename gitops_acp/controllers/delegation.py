"""Sub-agents: `delegate_to_agent__X({message})` runs a child task and returns its answer.

    Pending ──► AwaitingSubAgent (one commit: the call's phase AND the child task's file)
                   │ the child runs its own loop (tools, approvals, further delegation)
                   ├─ child FinalAnswer ──► Succeeded, result = the child's output
                   └─ child Failed / Cancelled ──► Failed, error = why (the model reads it)

The child task `delegate-<toolcall>` lives only on the status branch, labelled with the tool call
that created it, so a crash between the two can't happen (one commit) and a restart finds and
reuses it. Chains are limited in depth (default 5) and a cycle (an agent delegating, directly or
not, to an agent already in its chain) is refused with the chain in the message.
"""

from __future__ import annotations

import hashlib
import json

from gitops_acp.controllers.base import DONE, Context, Result, rfc3339
from gitops_acp.controllers.calls import finish
from gitops_acp.controllers.catalog import Entry, entry_for_call
from gitops_acp.resources.meta import (
    LABEL_PARENT_TOOLCALL,
    LABEL_TASK,
    Condition,
    Kind,
    TaskPhase,
    ToolCallPhase,
)
from gitops_acp.resources.models import (
    LocalObjectReference,
    ObjectMeta,
    Task,
    TaskSpec,
    ToolCall,
    ToolCallStatus,
)

__all__ = ["DelegationExecutor", "ancestry", "child_task_name"]


def child_task_name(toolcall: str) -> str:
    """`delegate-<toolcall>`, shortened with a digest when longer than a resource name may be (63)."""
    name = f"delegate-{toolcall}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[:50].rstrip('-')}-{digest}"


def ancestry(task_name: str, ctx: Context) -> list[tuple[str, str]]:
    """(task, agent) from the root task down to `task_name`, following parent-toolcall labels."""
    chain: list[tuple[str, str]] = []
    seen: set[str] = set()
    name: str | None = task_name
    while name is not None and name not in seen:
        seen.add(name)
        loaded = ctx.state.desired(Kind.Task, name)
        task = loaded.resource if loaded is not None else ctx.state.observed(Kind.Task, name)
        if not isinstance(task, Task):
            break
        chain.append((name, task.spec.agent_ref.name))
        parent_call = task.metadata.labels.get(LABEL_PARENT_TOOLCALL)
        call = ctx.state.observed(Kind.ToolCall, parent_call) if parent_call else None
        name = call.spec.task_ref.name if isinstance(call, ToolCall) else None
    return list(reversed(chain))


class DelegationExecutor:
    """Executes `delegate_to_agent__<agent>` calls as child tasks."""

    def entry(self, call: ToolCall, ctx: Context) -> Entry | None:
        entry = entry_for_call(call.spec.task_ref.name, call.spec.tool_ref.name, ctx)
        return entry if entry is not None and entry.type == "DelegateToAgent" else None

    def offers(self, call: ToolCall, ctx: Context) -> bool:
        return self.entry(call, ctx) is not None

    async def execute(self, call: ToolCall, ctx: Context) -> Result:
        status = call.status or ToolCallStatus()
        if status.phase == ToolCallPhase.AwaitingSubAgent:
            return await self._collect(call, ctx)
        entry = self.entry(call, ctx)
        if entry is None:
            await finish(call, ctx, error=f'unknown tool "{call.spec.tool_ref.name}"')
            return DONE
        message = json.loads(call.spec.arguments or "{}").get("message")
        if not isinstance(message, str) or not message.strip():
            await finish(call, ctx, error=f'{entry.function} needs {{"message": "<what to ask>"}}')
            return DONE
        chain = ancestry(call.spec.task_ref.name, ctx)
        agents = [agent for _, agent in chain]
        if entry.target in agents:
            cycle = " -> ".join([*agents[agents.index(entry.target) :], entry.target])
            await finish(call, ctx, error=f"delegation cycle refused: {cycle}")
            return DONE
        limit = ctx.settings.max_delegation_depth
        if len(chain) >= limit:
            path = " -> ".join([*agents, entry.target])
            await finish(call, ctx, error=f"delegation depth limit ({limit}) reached: {path}")
            return DONE

        name = child_task_name(call.metadata.name)
        existing = ctx.state.observed(Kind.Task, name)
        if existing is not None and existing.metadata.labels.get(LABEL_PARENT_TOOLCALL) != call.metadata.name:
            await finish(call, ctx, error=f'cannot delegate: a task named "{name}" already exists')
            return DONE
        objects: list[Task | ToolCall] = []
        if existing is None:  # reused after a crash: created in the same commit as AwaitingSubAgent
            parent = call.spec.task_ref.name
            objects.append(
                Task(
                    api_version=call.api_version,
                    kind="Task",
                    metadata=ObjectMeta(
                        name=name, labels={LABEL_PARENT_TOOLCALL: call.metadata.name, LABEL_TASK: parent}
                    ),
                    spec=TaskSpec(agent_ref=LocalObjectReference(name=entry.target), user_message=message),
                )
            )
        waiting = status.model_copy(
            update={
                "phase": ToolCallPhase.AwaitingSubAgent,
                "status": Condition.Pending,
                "status_detail": f'Waiting for sub-agent "{entry.target}" (task {name})',
                "start_time": status.start_time or rfc3339(ctx.now()),
            }
        )
        await ctx.state.checkpoint(call.model_copy(update={"status": waiting}), *objects)
        ctx.state.wake(Kind.Task, name)
        return DONE

    async def _collect(self, call: ToolCall, ctx: Context) -> Result:
        name = child_task_name(call.metadata.name)
        child = ctx.state.observed(Kind.Task, name)
        if not isinstance(child, Task) or child.status is None:
            return DONE
        phase = child.status.phase
        if phase == TaskPhase.FinalAnswer:
            await finish(call, ctx, result=child.status.output or "", detail="Sub-agent answered")
        elif phase in (TaskPhase.Failed, TaskPhase.Cancelled):
            agent = child.spec.agent_ref.name
            why = child.status.error or child.status.status_detail or str(phase)
            await finish(call, ctx, error=f'sub-agent "{agent}" {str(phase).lower()}: {why}')
        return DONE
