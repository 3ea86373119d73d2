"""OpenAI `chat.completion.chunk`s in, stream events out: the one place tool-call pieces are joined.

The remote backend feeds it the SDK's chunk objects and the local backend the engine's chunk dicts;
both shapes are read through `field`, so the two backends cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kcode.backends.base import ReasoningDelta, StreamEvent, TextDelta, ToolCallReady, Usage
from kcode.messages import ToolCall


def field(obj: Any, name: str) -> Any:
    """`obj[name]` for a dict, `obj.name` for an SDK object; None when absent."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


class _PartialCall:
    """A tool call while its pieces arrive; the id and name come once, the arguments in pieces."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []

    def add(self, piece: Any) -> None:
        self.id = self.id or (field(piece, "id") or "")
        function = field(piece, "function")
        if function is not None:
            self.name = self.name or (field(function, "name") or "")
            self.arguments.append(field(function, "arguments") or "")

    def call(self) -> ToolCall:
        arguments = "".join(self.arguments)
        return ToolCall(id=self.id or f"call_{self.index}", name=self.name, arguments=arguments or "{}")


class ChunkAssembly:
    """One streamed completion being put together from its chunks (only choice 0 is read)."""

    def __init__(self) -> None:
        self.calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def feed(self, chunk: Any) -> Iterator[StreamEvent]:
        """Text and reasoning deltas at once; the tool calls, complete, when the finish reason arrives."""
        if field(chunk, "usage") is not None:
            self.usage = usage_from(field(chunk, "usage"))
        for choice in field(chunk, "choices") or ():
            if field(choice, "index") not in (0, None):
                continue
            in_choice = field(choice, "usage")  # where Moonshot puts it
            if in_choice is not None:
                self.usage = usage_from(in_choice)
            delta = field(choice, "delta")
            if delta is not None:
                reasoning = field(delta, "reasoning_content")
                if reasoning:
                    yield ReasoningDelta(reasoning)
                if field(delta, "content"):
                    yield TextDelta(field(delta, "content"))
                for piece in field(delta, "tool_calls") or ():
                    self._partial(piece).add(piece)
            if field(choice, "finish_reason") and self.finish_reason is None:
                self.finish_reason = field(choice, "finish_reason")
                for index in sorted(self.calls):
                    yield ToolCallReady(self.calls[index].call())

    def _partial(self, piece: Any) -> _PartialCall:
        """The call a piece belongs to: by index, or, for servers that omit it, by a new id."""
        index = field(piece, "index")
        if index is None:
            last = max(self.calls, default=-1)
            piece_id = field(piece, "id")
            starts_new = last < 0 or (piece_id and self.calls[last].id and piece_id != self.calls[last].id)
            index = last + 1 if starts_new else last
        return self.calls.setdefault(index, _PartialCall(index))


def usage_from(raw: Any) -> Usage:
    """OpenAI reports cached tokens in `prompt_tokens_details`; Moonshot as `cached_tokens`."""
    cached = field(raw, "cached_tokens")
    details = field(raw, "prompt_tokens_details")
    if cached is None and details is not None:
        cached = field(details, "cached_tokens")
    return Usage(prompt_tokens=field(raw, "prompt_tokens") or 0,
                 completion_tokens=field(raw, "completion_tokens") or 0, cached_tokens=cached or 0)
