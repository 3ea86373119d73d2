"""The tool that ends a headless task: the agent calls it when the work in the workspace is done."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.base import ToolResult


class SubmitTool:
    """Ends the task; the changes in the workspace are the submission, the summary is for the log."""

    name = "submit"
    description = (
        "Call this once the task is complete and every change is saved in the workspace. "
        "It ends the task: nothing runs after it."
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "One or two sentences on what was changed and why."},
        },
        "required": [],
    }

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        summary = str(arguments.get("summary", "")).strip()
        return ToolResult(output="Submitted." + (f" Summary: {summary}" if summary else ""),
                          data={"summary": summary}, finished=True)
