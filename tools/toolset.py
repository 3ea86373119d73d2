"""A set of tools: the `tools` list for a request, and dispatch of a call by name.

Dispatch never raises: an unknown tool, arguments that are not JSON, missing, extra or ill-typed
arguments, and mistakes a tool reports all come back as error results worded for the model.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from tools.base import Tool, ToolResult
from tools.clamp import OutputClamp
from tools.errors import ToolError
from tools.schema import argument_problems


class Toolset:
    """Tools by name, sharing one output clamp."""

    def __init__(self, tools: Iterable[Tool], clamp: OutputClamp) -> None:
        self.clamp = clamp
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        """The tools in the OpenAI function-calling format."""
        return [
            {"type": "function",
             "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}}
            for t in self._tools.values()
        ]

    def close(self) -> None:
        """Release what the tools hold (the bash session's processes, above all), then the clamp's spill directory."""
        for tool in self._tools.values():
            close = getattr(tool, "close", None)
            if callable(close):
                close()
        self.clamp.close()

    def __enter__(self) -> Toolset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def dispatch(self, name: str, arguments: str | Mapping[str, Any], *, unsandboxed: bool = False) -> ToolResult:
        """Run the named tool on raw (JSON text) or parsed arguments; the result is always clamped.

        `unsandboxed` runs it outside the sandbox (the user agreed to that one call), where the tool can.
        """
        result = self._run(name, arguments, unsandboxed)
        return replace(result, output=self.clamp.text(result.output))

    def _run(self, name: str, arguments: str | Mapping[str, Any], unsandboxed: bool) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult.error(f"There is no tool named {name!r}. Available tools: {', '.join(self._tools)}.")
        parsed = _parse_arguments(arguments)
        if isinstance(parsed, str):
            return ToolResult.error(f"Arguments for {name} were not usable: {parsed}. Send a JSON object.")
        problems = argument_problems(parsed, tool.parameters)
        if problems:
            return ToolResult.error(f"Invalid arguments for {name}: " + "; ".join(problems) + ".")
        run = getattr(tool, "run_unsandboxed", None) if unsandboxed else tool.run
        if run is None:
            return ToolResult.error(f"{name} cannot run outside the sandbox.")
        try:
            return run(parsed)
        except ToolError as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:  # a bug in a tool must not end the agent's run
            return ToolResult.error(
                f"{name} failed with an internal error ({type(exc).__name__}: {exc}). This is a kcode bug, "
                "not a problem with your call; try another approach.",
                traceback=traceback.format_exc(),
            )


def _parse_arguments(arguments: str | Mapping[str, Any]) -> dict[str, Any] | str:
    """The arguments as a dict, or a sentence saying why they are not one."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"  # msg may end in "at"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    return value
