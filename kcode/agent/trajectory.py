"""The `--trajectory` file: every event of a run as one JSON line, written as it happens.

A line is `{"type": "tool_call_finished", "time_s": 12.5, ...the event's fields}`; messages and tool calls
appear in the OpenAI chat format. The first line describes the run. Streamed text deltas are left out
by default, since each assistant message arrives whole in its `message_added` line.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kcode.agent.events import AssistantDelta, Event
from kcode.messages import Message, ToolCall

TRAJECTORY_FORMAT_VERSION = 1


class TrajectoryWriter:
    """An event sink appending to a JSONL file, flushed line by line so a crash keeps everything before it."""

    def __init__(self, path: Path, meta: Mapping[str, Any] | None = None, *, include_deltas: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.include_deltas = include_deltas
        self._clock = clock
        self._started = clock()
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"type": "trajectory", "version": TRAJECTORY_FORMAT_VERSION,
                  "started_at": datetime.now(UTC).isoformat(timespec="seconds"), **to_json(dict(meta or {}))}
        with path.open("w", encoding="utf-8") as f:
            f.write(json.dumps(header, ensure_ascii=False) + "\n")

    def __call__(self, event: Event) -> None:
        if isinstance(event, AssistantDelta) and not self.include_deltas:
            return
        record = {"type": event_type(event), "time_s": round(self._clock() - self._started, 3), **to_json(event)}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def event_type(event: Event) -> str:
    """`ToolCallFinished` → `tool_call_finished`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


def to_json(value: Any) -> Any:
    """`value` as plain JSON values: messages in the OpenAI format, other dataclasses as their fields.

    Anything JSON has no form for (a path, a set in a tool's `data`) becomes its `str`, because a
    trajectory must never fail to write.
    """
    if isinstance(value, Message | ToolCall):
        return value.to_openai()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
