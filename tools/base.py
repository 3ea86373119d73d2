"""The tool protocol and the value every tool returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolResult:
    """What a tool call produced.

    `output` is the text the model reads; `data` carries structure for a UI (a diff, an exit code)
    and is never shown to the model; `finished` marks a call that ends a headless task.
    """

    output: str
    is_error: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)
    finished: bool = False

    @classmethod
    def error(cls, message: str, **data: Any) -> ToolResult:
        return cls(output=message, is_error=True, data=data)


class Tool(Protocol):
    """Anything with a name, a description, a JSON schema for its arguments, and `run`.

    `run` receives arguments already checked against `parameters`; it returns an error result for
    anything the model can fix and raises only on bugs.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]

    def run(self, arguments: Mapping[str, Any]) -> ToolResult: ...
