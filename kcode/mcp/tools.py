"""A tool of an MCP server as a kcode `Tool`: named `mcp__SERVER__TOOL`, run by the server's connection.

Being an ordinary `Tool` in the toolset, a call goes through the same approvals, clamping, trajectory and
session recording as `bash`. Provider APIs accept tool names of at most 64 letters, digits, `_` and `-`,
so other characters become `_` and a long name is cut (with a short hash, so cut names stay distinct).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tools.base import ToolResult

PREFIX = "mcp__"
MAX_NAME_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class ToolCaller(Protocol):
    """Calls a tool on a named server (the connection manager); answers with an error result, never raises."""

    def call(self, server: str, tool: str, arguments: Mapping[str, Any]) -> ToolResult: ...


def kcode_tool_name(server: str, tool: str) -> str:
    """`mcp__SERVER__TOOL`, made of the characters provider APIs accept and at most 64 of them."""
    name = f"{PREFIX}{server}__{_UNSAFE.sub('_', tool)}"
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME_CHARS - 9]}_{digest}"


@dataclass
class McpTool:
    """One server tool; `trusted` tools run without asking (the server's `trust` setting)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    server: str
    tool: str
    """The tool's own name on its server."""
    trusted: bool
    caller: ToolCaller

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        return self.caller.call(self.server, self.tool, arguments)


def describe(server: str, description: str | None) -> str:
    """The description the model reads: the server's, saying which server the tool comes from."""
    text = (description or "").strip() or "A tool without a description."
    return f"{text}\n(From the MCP server {server!r}.)"
