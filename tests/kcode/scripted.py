"""Scripted peers for the agent tests: a backend that plays back completions, a fake clock, small real tools."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kcode.backends.base import Finish, StreamEvent, TextDelta, ToolCallReady, Usage
from kcode.messages import Message, ToolCall
from tools.base import ToolResult
from tools.clamp import OutputClamp
from tools.editor import EditorTool
from tools.settings import ToolSettings
from tools.submit import SubmitTool
from tools.toolset import Toolset
from tools.workspace import Workspace

Step = StreamEvent | BaseException | Callable[[], None]


@dataclass(frozen=True)
class Request:
    """What the backend was asked for."""

    messages: tuple[Message, ...]
    tool_names: tuple[str, ...]
    max_tokens: int | None


class ScriptedBackend:
    """Plays one scripted completion per request: events are yielded, exceptions raised, callables called."""

    model = "scripted-model"

    def __init__(self, script: Sequence[Sequence[Step]], context_window: int = 100_000) -> None:
        self.script = [list(steps) for steps in script]
        self.context_window = context_window
        self.requests: list[Request] = []
        self.closed = 0

    def stream(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = (), *,
               max_tokens: int | None = None) -> Iterator[StreamEvent]:
        self.requests.append(Request(tuple(messages), tuple(t["function"]["name"] for t in tools), max_tokens))
        if not self.script:
            raise AssertionError(f"unexpected request #{len(self.requests)}: the script is used up")
        return self._play(self.script.pop(0))

    def _play(self, steps: list[Step]) -> Iterator[StreamEvent]:
        try:
            for step in steps:
                if isinstance(step, BaseException):
                    raise step
                if callable(step):
                    step()
                    continue
                yield step
        finally:
            self.closed += 1


_ids = iter(range(1, 1_000_000))
USAGE = Usage(100, 10)


def answer(text: str, usage: Usage | None = USAGE) -> list[Step]:
    """A completion that answers in words, without tool calls."""
    return [TextDelta(text), *([usage] if usage else []), Finish("stop")]


def calls(*calls_: tuple[str, Mapping[str, Any] | str], text: str = "",
          usage: Usage | None = USAGE) -> list[Step]:
    """A completion making these calls; arguments given as a string are sent raw (for malformed JSON)."""
    events: list[Step] = [TextDelta(text)] if text else []
    for name, arguments in calls_:
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        events.append(ToolCallReady(ToolCall(id=f"call_{next(_ids)}", name=name, arguments=raw)))
    return [*events, *([usage] if usage else []), Finish("tool_calls")]


def create(path: str, text: str) -> tuple[str, dict[str, Any]]:
    return "editor", {"command": "create", "path": path, "file_text": text}


def shell(command: str) -> tuple[str, dict[str, Any]]:
    return "bash", {"command": command}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ShellTool:
    """A real, minimal `bash` tool: runs the command in the workspace and returns its output."""

    name = "bash"
    description = "Run a shell command in the workspace."
    parameters: Mapping[str, Any] = {"type": "object", "properties": {"command": {"type": "string"}},
                                     "required": ["command"]}

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        done = subprocess.run(arguments["command"], shell=True, cwd=self.root, capture_output=True, text=True,
                              timeout=30)
        return ToolResult(done.stdout + done.stderr, is_error=done.returncode != 0)


class CtrlCTool:
    """Stands for a long command the user stops with Ctrl-C: KeyboardInterrupt arrives while it runs."""

    name = "wait"
    description = "Wait."
    parameters: Mapping[str, Any] = {"type": "object", "properties": {}, "required": []}

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        raise KeyboardInterrupt


def make_toolset(root: Path, *extra: Any, max_output_chars: int = 16_000) -> Toolset:
    settings = ToolSettings(max_output_chars=max_output_chars)
    tools = [EditorTool(Workspace(root), settings), ShellTool(root), SubmitTool(), *extra]
    return Toolset(tools, OutputClamp(settings, root.parent / f"{root.name}-spill"))


def assert_consistent(messages: Sequence[Message]) -> None:
    """Every tool call has exactly one result, right after its assistant message, as every API demands."""
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        if message.role == "tool":
            raise AssertionError(f"tool result {message.tool_call_id} answers no pending call")
        wanted = [call.id for call in message.tool_calls]
        answered = []
        while index < len(messages) and messages[index].role == "tool":
            answered.append(messages[index].tool_call_id)
            index += 1
        assert answered == wanted, f"calls {wanted} got results {answered}"
