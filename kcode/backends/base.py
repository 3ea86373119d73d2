"""The backend protocol and the events a completion stream yields."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kcode.messages import Message, ToolCall


@dataclass(frozen=True)
class TextDelta:
    """A piece of the assistant's visible answer."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of a thinking model's reasoning (`reasoning_content`); shown, never sent back."""

    text: str


@dataclass(frozen=True)
class ToolCallReady:
    """A tool call whose arguments have fully arrived (they stream in pieces and are assembled first)."""

    call: ToolCall


@dataclass(frozen=True)
class Usage:
    """Token counts the API reported for one completion."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class Finish:
    """The end of a completion: `stop`, `tool_calls`, `length` or a provider's own reason."""

    reason: str


@dataclass(frozen=True)
class Retrying:
    """The request failed in a way worth retrying; whatever this completion streamed so far is void."""

    attempt: int
    max_attempts: int
    delay_s: float
    reason: str


StreamEvent = TextDelta | ReasoningDelta | ToolCallReady | Usage | Finish | Retrying


class Backend(Protocol):
    """Streams one chat completion. Closing the iterator early cancels the request."""

    model: str
    context_window: int

    def stream(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = (), *,
               max_tokens: int | None = None) -> Iterator[StreamEvent]: ...
