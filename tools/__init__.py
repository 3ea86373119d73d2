"""The agent–computer interface: the tools an agent uses to read, edit, search and run code.

Owns the bash session, the file editor, search, submit, output clamping and the JSON schemas the
model sees. Imports only the standard library, so the chat agent and the benchmark harness share
exactly the same hands.
"""

from tools.base import Tool, ToolResult
from tools.clamp import OutputClamp
from tools.settings import ToolSettings
from tools.toolset import Toolset

__all__ = ["OutputClamp", "Tool", "ToolResult", "ToolSettings", "Toolset"]
