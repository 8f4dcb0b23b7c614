"""Controllers, one module per kind, all of the shape in `base`; `registry()` is the visible list."""

from __future__ import annotations

from gitops_acp.controllers.base import Controller
from gitops_acp.controllers.delegation import DelegationExecutor
from gitops_acp.controllers.humancontact import HumanContactExecutor
from gitops_acp.controllers.kinds.agent import AgentController
from gitops_acp.controllers.kinds.contactchannel import ContactChannelController
from gitops_acp.controllers.kinds.llm import LLMController
from gitops_acp.controllers.kinds.mcpserver import MCPServerController
from gitops_acp.controllers.kinds.task import TaskController
from gitops_acp.controllers.kinds.taskschedule import TaskScheduleController
from gitops_acp.controllers.kinds.toolcall import ToolCallController
from gitops_acp.controllers.mcptools import MCPExecutor
from gitops_acp.resources.meta import Kind, ToolType

__all__ = ["registry"]


def registry() -> dict[Kind, Controller]:
    """A fresh set of controllers (they keep small in-memory caches), keyed by the kind they own."""
    controllers: list[Controller] = [
        LLMController(),
        AgentController(),
        MCPServerController(),
        ContactChannelController(),
        TaskController(),
        TaskScheduleController(),
        ToolCallController(
            {
                ToolType.MCP: MCPExecutor(),
                ToolType.DelegateToAgent: DelegationExecutor(),
                ToolType.HumanContact: HumanContactExecutor(),
            }
        ),
    ]
    return {controller.kind: controller for controller in controllers}
