"""SDK types in, the package's plain values out: tools to `ToolInfo`, tool results to `ToolResult`.

Pure functions, kept apart from the connection code so the rules for what a model reads (how an
image or a resource link is described, when structured content stands in for text) are in one
place and can be tested without a server.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types

from gitops_acp.mcp.models import ToolInfo, ToolResult

__all__ = ["tool_info", "tool_result"]


def tool_info(tool: mcp_types.Tool) -> ToolInfo:
    """Return the listing of one tool: schema as sent, annotations with the spec's camelCase keys."""
    annotations: dict[str, Any] | None = None
    if tool.annotations is not None:
        # exclude_unset keeps what the server said (and only that); defaults are the reader's job.
        annotations = tool.annotations.model_dump(
            by_alias=True, exclude_unset=True, exclude_none=True, mode="json"
        )
    return ToolInfo(
        name=tool.name,
        description=tool.description or "",
        input_schema=tool.input_schema,
        annotations=annotations,
    )


def tool_result(result: mcp_types.CallToolResult) -> ToolResult:
    """Return the result as text for the model; `is_error` when the tool reported a failure."""
    parts: list[str] = []
    has_text = False
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            has_text = True
            parts.append(block.text)
        else:
            parts.append(_describe(block))
    if not has_text and result.structured_content is not None:
        # Servers that answer only with structured content still owe the model something to read.
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False, sort_keys=True))
    return ToolResult(text="\n".join(parts), is_error=bool(result.is_error))


def _describe(block: Any) -> str:
    """Describe a non-text content block in one line: its kind, type and size, or its URI."""
    if isinstance(block, mcp_types.ImageContent):
        return f"[{block.mime_type}, {_base64_size(block.data)} bytes]"
    if isinstance(block, mcp_types.AudioContent):
        return f"[{block.mime_type}, {_base64_size(block.data)} bytes]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link {block.uri}]"
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, mcp_types.TextResourceContents):
            return f"[resource {resource.uri}]\n{resource.text}"
        mime = f" {resource.mime_type}," if resource.mime_type else ""
        return f"[resource {resource.uri},{mime} {_base64_size(resource.blob)} bytes]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _base64_size(data: str) -> int:
    """Return the decoded size of base64 `data` without decoding it."""
    data = data.strip()
    return max(0, len(data) * 3 // 4 - data[-2:].count("="))
