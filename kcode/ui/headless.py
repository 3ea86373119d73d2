"""What `kcode fix` writes while nobody watches a live screen: short progress lines, or JSON lines.

`ProgressPrinter` writes a few words per step to a stream (stderr), coloured only when asked or when
the stream is a terminal. On a terminal each step's line is cut to fit its width (measured line by line,
so a resized window is followed); notes, errors and the final `done:` line are never cut, and nothing
is cut when the stream is a pipe or a file, whose reader may need the whole text.

`JsonEventWriter` writes one JSON object per event per line (stdout with `--json`), flushed at once so
a pipe sees each event as it happens. Its schema, stable across releases (fields may be added, none
removed or retyped):

    {"type": "text_delta", "text": str, "reasoning": bool}        only when include_deltas is set
    {"type": "tool_call", "id": str, "name": str, "arguments": str}   arguments: the model's raw JSON text
    {"type": "tool_result", "id": str, "name": str, "output": str, "is_error": bool,
     "exit_code": int | null, "diff": str | null, "finished": bool}
    {"type": "usage", "prompt_tokens": int, "completion_tokens": int, "total_tokens": int,
     "cost_usd": float | null}                                     total_tokens, cost_usd: session totals
    {"type": "message", "message": {...}}                          the OpenAI chat form of a new message
    {"type": "compacted", "tokens_before": int, "tokens_after": int, "summary": str, "elided_outputs": int}
    {"type": "retrying", "attempt": int, "max_attempts": int, "delay_s": float, "reason": str}
    {"type": "approval", "id": str, "name": str, "verdict": "yes" | "no" | "always", "asked": bool,
     "warning": str | null}                                        warning: what a destructive command would lose
    {"type": "notice", "message": str}
    {"type": "error", "message": str}
    {"type": "turn_ended", "reason": str}

Events of any other kind are skipped by both sinks.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any, TextIO

from kcode.agent.events import (
    AgentError,
    ApprovalDecided,
    AssistantDelta,
    Compacted,
    CompletionRetrying,
    MessageAdded,
    Notice,
    ToolCallFinished,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
)
from kcode.ui.describe import (
    call_summary,
    format_cost,
    format_tokens,
    one_line,
    printable,
    result_summary,
    visible,
)
from kcode.ui.errors import DisplaySettingError

_ANSI = {"dim": "2", "red": "31", "green": "32", "yellow": "33", "bold": "1"}
MIN_WIDTH = 20
_FALLBACK_COLUMNS = 80
"""A terminal that reports no size (a pty nobody sized) is taken to be this wide."""
_MIN_ROOM = 10


def terminal_width(stream: TextIO) -> int | None:
    """The columns of the terminal `stream` writes to, or None when it writes to a pipe or a file."""
    try:
        if not stream.isatty():
            return None
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return max(columns, MIN_WIDTH) if columns > 0 else _FALLBACK_COLUMNS


class ProgressPrinter:
    """Prints `[step] what happened` lines; `color=None` colours only a stream that is a terminal.

    `width` fixes the line width; None (the default) means the stream's terminal width when it is a
    terminal, and no limit otherwise.
    """

    def __init__(self, stream: TextIO, *, color: bool | None = None, width: int | None = None) -> None:
        if width is not None and width < MIN_WIDTH:
            raise DisplaySettingError(f"width must be at least {MIN_WIDTH}, got {width}")
        self.stream = stream
        self.color = stream.isatty() if color is None else color
        self.width = width
        self._step = 0
        self._in_step = False
        self._text: list[str] = []
        self._last_usage: UsageReport | None = None

    def __call__(self, event: object) -> None:
        if isinstance(event, AssistantDelta):
            self._enter_step()
            if not event.reasoning:
                self._text.append(event.text)
            return
        if isinstance(event, UsageReport):
            self._last_usage = event
            return
        if isinstance(event, CompletionRetrying):
            self._text = []  # what streamed before the retry is void
        else:
            self._flush_text()
        if isinstance(event, ToolCallStarted):
            self._enter_step()
            label = f"{visible(event.call.name)}: "
            self._line(label + call_summary(event.call, self._room(label, step=True)), step=True)
        elif isinstance(event, ToolCallFinished):
            label = "  error: " if event.result.is_error else "  "
            summary = result_summary(event.call, event.result, self._room(label, step=True))
            self._line(label + summary, "red" if event.result.is_error else "dim", step=True)
            self._in_step = False
        else:
            self._note(event)

    def _note(self, event: object) -> None:
        if isinstance(event, Compacted):
            self._line(f"compacted: {format_tokens(event.tokens_before)} → {format_tokens(event.tokens_after)} "
                       "tokens", "dim")
        elif isinstance(event, CompletionRetrying):
            label = f"retrying in {event.delay_s:.0f}s (attempt {event.attempt} of {event.max_attempts}): "
            self._line(label + one_line(event.reason, self._room(label)), "yellow")
        elif isinstance(event, Notice):  # notes and errors come whole: kcode's own words, meant to be acted on
            self._line("note: " + _whole(event.message), "dim")
        elif isinstance(event, AgentError):
            self._line("error: " + _whole(event.message), "red")
        elif isinstance(event, TurnEnded):
            self._line(self._done_line(event), "green" if event.reason in ("submitted", "answered") else "yellow")
            self._step = 0
            self._in_step = False

    def _done_line(self, event: TurnEnded) -> str:
        parts = [f"done: {event.reason.replace('_', ' ')}", f"{self._step} step{'s' if self._step != 1 else ''}"]
        usage = self._last_usage
        if usage is not None:
            parts.append(f"{format_tokens(usage.total_tokens)} tokens")
            if usage.cost_usd is not None:
                parts.append(format_cost(usage.cost_usd))
        return " · ".join(parts)

    def _enter_step(self) -> None:
        if not self._in_step:
            self._step += 1
            self._in_step = True

    def _flush_text(self) -> None:
        text = "".join(self._text).strip()
        self._text = []
        if text:
            self._line(one_line(text, self._room("", step=True)), step=True)

    def _room(self, label: str, *, step: bool = False) -> int:
        """The characters left after `label` (and the step prefix) on a line that must fit the width."""
        width = self.width if self.width is not None else terminal_width(self.stream)
        if width is None:
            return sys.maxsize
        used = len(label) + (len(self._prefix()) if step else 0)
        return max(width - used, _MIN_ROOM)

    def _prefix(self) -> str:
        return f"[{self._step}] "

    def _line(self, text: str, style: str = "", *, step: bool = False) -> None:
        prefix = self._paint(self._prefix(), "dim") if step else ""
        self.stream.write(prefix + self._paint(text, style) + "\n")
        self.stream.flush()

    def _paint(self, text: str, style: str) -> str:
        if not self.color or not style:
            return text
        return f"\x1b[{_ANSI[style]}m{text}\x1b[0m"


def _whole(message: str) -> str:
    """A message of any length safe to print, its later lines indented under the first."""
    return printable(message).strip().replace("\n", "\n  ")


class JsonEventWriter:
    """Writes each event as one line of JSON; streamed text only with `include_deltas`, since the
    `message` events already carry every finished message whole."""

    def __init__(self, stream: TextIO, *, include_deltas: bool = False) -> None:
        self.stream = stream
        self.include_deltas = include_deltas

    def __call__(self, event: object) -> None:
        record = event_record(event)
        if record is None or (record["type"] == "text_delta" and not self.include_deltas):
            return
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()


def event_record(event: object) -> dict[str, Any] | None:
    """The JSON-ready form of an event (the schema above), or None for an event kind it does not know."""
    if isinstance(event, AssistantDelta):
        return {"type": "text_delta", "text": event.text, "reasoning": event.reasoning}
    if isinstance(event, ToolCallStarted):
        call = event.call
        return {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
    if isinstance(event, ToolCallFinished):
        result, data = event.result, event.result.data
        exit_code, diff = data.get("exit_code"), data.get("diff")
        return {"type": "tool_result", "id": event.call.id, "name": event.call.name, "output": result.output,
                "is_error": result.is_error, "exit_code": exit_code if isinstance(exit_code, int) else None,
                "diff": diff if isinstance(diff, str) else None, "finished": result.finished}
    if isinstance(event, UsageReport):
        return {"type": "usage", "prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
                "total_tokens": event.total_tokens, "cost_usd": event.cost_usd}
    if isinstance(event, MessageAdded):
        return {"type": "message", "message": event.message.to_openai()}
    if isinstance(event, Compacted):
        return {"type": "compacted", "tokens_before": event.tokens_before, "tokens_after": event.tokens_after,
                "summary": event.summary, "elided_outputs": event.elided_outputs}
    if isinstance(event, CompletionRetrying):
        return {"type": "retrying", "attempt": event.attempt, "max_attempts": event.max_attempts,
                "delay_s": event.delay_s, "reason": event.reason}
    if isinstance(event, ApprovalDecided):
        return {"type": "approval", "id": event.call_id, "name": event.tool, "verdict": event.verdict,
                "asked": event.asked, "warning": event.warning}
    if isinstance(event, Notice):
        return {"type": "notice", "message": event.message}
    if isinstance(event, AgentError):
        return {"type": "error", "message": event.message}
    if isinstance(event, TurnEnded):
        return {"type": "turn_ended", "reason": event.reason}
    return None
