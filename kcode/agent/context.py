"""Keeping the history inside the model's context window: counting its tokens and compacting it.

Counting trusts the API: its last reported usage covers the history up to that answer, and only what was
added since is estimated (about 3.5 characters a token, no tokenizer needed). Compaction works in two
stages, cheapest first: old tool outputs are elided (the most recent few stay whole), and only if that is
not enough are the older messages summarised by the model itself. The system prompt is never touched, and
the project's rules are restated after a summary so they survive it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kcode.agent.conversation import Conversation
from kcode.agent.prompt import load_template
from kcode.backends.base import Backend, Retrying, TextDelta, Usage
from kcode.errors import BackendError
from kcode.messages import Message, system, user

CHARS_PER_TOKEN = 3.5
"""Typical for English prose and code under K2's and GPT's tokenizers; errs towards counting more tokens."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Role markers and separators the chat format adds around every message."""


class CompactionSettingsError(ValueError):
    """A compaction setting outside its range."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_message_tokens(message: Message) -> int:
    text = message.content + "".join(call.name + call.arguments for call in message.tool_calls)
    return estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS


CREDIBLE_COUNT_SHARE = 0.5
"""The API's count is trusted unless it is below this share of our own estimate for the same messages: no
tokenizer packs text that much tighter, so a lower count is a server that reports made-up or fixed usage."""


def context_tokens(conversation: Conversation, tools: Sequence[Mapping[str, Any]]) -> int:
    """Tokens the next request will send: the API's last count plus an estimate of what came after it, or our
    own estimate of the whole when there is no count or it is not credible."""
    messages = conversation.messages
    anchor = conversation.anchor
    tools_tokens = estimate_tokens(json.dumps(list(tools))) if tools else 0
    own = [estimate_message_tokens(m) for m in messages]
    if anchor is not None and anchor.message_count <= len(messages) \
            and anchor.tokens >= CREDIBLE_COUNT_SHARE * (tools_tokens + sum(own[:anchor.message_count])):
        return anchor.tokens + sum(own[anchor.message_count:])
    return tools_tokens + sum(own)


@dataclass(frozen=True)
class CompactionSettings:
    """When to compact and how much to keep."""

    threshold: float = 0.85
    """Compact once the next request would fill this share of the context window."""
    keep_recent_outputs: int = 3
    """Tool outputs, counted from the newest, that are never elided."""
    min_elided_chars: int = 300
    """Outputs shorter than this stay: the elision marker would save next to nothing."""
    keep_recent_share: float = 0.25
    """Share of the context window kept word for word after a summary, from the newest message back."""
    summary_max_tokens: int = 4096
    """Longest summary the model may write."""
    transcript_message_chars: int = 4000
    """Longest text of one message shown to the summariser; longer ones keep their head and tail."""

    def __post_init__(self) -> None:
        if not 0.1 <= self.threshold <= 1.0:
            raise CompactionSettingsError(f"threshold must lie between 0.1 and 1.0, got {self.threshold}")
        if not 0.0 <= self.keep_recent_share < self.threshold:
            raise CompactionSettingsError(
                f"keep_recent_share must be at least 0 and below threshold {self.threshold}, "
                f"got {self.keep_recent_share}")
        for name in ("keep_recent_outputs", "min_elided_chars", "summary_max_tokens", "transcript_message_chars"):
            if getattr(self, name) < (0 if name == "keep_recent_outputs" else 1):
                raise CompactionSettingsError(f"{name} is out of range: {getattr(self, name)}")


@dataclass(frozen=True)
class Compaction:
    """The outcome of one compaction; `problem` says why it fell short (the history may still have shrunk)."""

    history: tuple[Message, ...]
    tokens_before: int
    tokens_after: int
    elided_outputs: int = 0
    summary: str = ""
    usage: Usage | None = None
    problem: str | None = None

    @property
    def changed(self) -> bool:
        return self.elided_outputs > 0 or bool(self.summary)


class Compactor:
    """Shrinks a history that has grown close to the backend's context window."""

    def __init__(self, backend: Backend, settings: CompactionSettings | None = None, rules: str = "") -> None:
        self.backend = backend
        self.settings = settings or CompactionSettings()
        self.rules = rules

    @property
    def threshold_tokens(self) -> int:
        return int(self.backend.context_window * self.settings.threshold)

    def needed(self, conversation: Conversation, tools: Sequence[Mapping[str, Any]]) -> bool:
        return context_tokens(conversation, tools) >= self.threshold_tokens

    def compact(self, conversation: Conversation, tools: Sequence[Mapping[str, Any]], *,
                force: bool = False) -> Compaction:
        """Elide, then summarise if still too big. Never raises for a backend failure: it becomes `problem`.

        `force` (the user's /compact) summarises whatever follows the system prompt, however small.
        """
        before = context_tokens(conversation, tools)
        history, elided = self._elide(conversation.messages)
        after = context_tokens(Conversation(history), tools)
        if after < self.threshold_tokens and not force:
            return Compaction(history, before, after, elided_outputs=elided)
        start, end = self._summary_span(history, keep_recent=not force)
        if start == end:
            return Compaction(history, before, after, elided_outputs=elided,
                              problem="there is nothing to summarise: the system prompt alone fills the window")
        try:
            summary, usage = self._summarise(history[start:end])
        except BackendError as exc:
            return Compaction(history, before, after, elided_outputs=elided,
                              problem=f"the summary request failed: {exc}")
        summarised = (*history[:start], user(self._summary_message(summary)), *history[end:])
        summarised_tokens = context_tokens(Conversation(summarised), tools)
        if not summary or summarised_tokens >= after:
            return Compaction(history, before, after, elided_outputs=elided, usage=usage,
                              problem="the model's summary was empty" if not summary
                              else "the model's summary was no shorter than what it would replace")
        problem = None if summarised_tokens < self.threshold_tokens else (
            f"the history is still {summarised_tokens:,} tokens after summarising, over the "
            f"{self.threshold_tokens:,} threshold")
        return Compaction(summarised, before, summarised_tokens, elided, summary, usage, problem)

    def _elide(self, messages: tuple[Message, ...]) -> tuple[tuple[Message, ...], int]:
        tool_indices = [i for i, m in enumerate(messages) if m.role == "tool"]
        keep = self.settings.keep_recent_outputs
        old = set(tool_indices[: len(tool_indices) - keep] if keep else tool_indices)
        out: list[Message] = []
        elided = 0
        for index, message in enumerate(messages):
            if index in old and len(message.content) >= self.settings.min_elided_chars:
                message = replace(message, content=f"[output elided: {len(message.content):,} chars; "
                                                   "repeat the call to see it again]")
                elided += 1
            out.append(message)
        return tuple(out), elided

    def _summary_span(self, messages: tuple[Message, ...], *, keep_recent: bool = True) -> tuple[int, int]:
        """The messages to summarise: after the leading system messages, up to a tail that is kept whole.

        The tail starts at a user or assistant message, never at a tool result cut off from its call.
        """
        start = 0
        while start < len(messages) and messages[start].role == "system":
            start += 1
        budget = self.backend.context_window * self.settings.keep_recent_share if keep_recent else 0
        end = len(messages)
        tail_tokens = 0
        for index in range(len(messages) - 1, start, -1):
            tail_tokens += estimate_message_tokens(messages[index])
            if tail_tokens > budget:
                break
            if messages[index].role != "tool":
                end = index
        return start, end

    def _summarise(self, messages: Sequence[Message]) -> tuple[str, Usage | None]:
        room_tokens = self.backend.context_window - self.settings.summary_max_tokens - 2000
        transcript = _shorten(_transcript(messages, self.settings.transcript_message_chars),
                              max(int(room_tokens * CHARS_PER_TOKEN * 0.8), 1000))
        request = [system(load_template("summary.md")),
                   user(f"<transcript>\n{transcript}\n</transcript>\n\nSummarise the transcript above.")]
        parts: list[str] = []
        usage: Usage | None = None
        for event in self.backend.stream(request, (), max_tokens=self.settings.summary_max_tokens):
            if isinstance(event, Retrying):
                parts = []
            elif isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Usage):
                usage = event
        return "".join(parts).strip(), usage

    def _summary_message(self, summary: str) -> str:
        text = ("[This conversation was compacted to fit the context window. A summary of its earlier part "
                f"follows; the messages after this one are unchanged.]\n\n{summary}")
        if self.rules:
            text += f"\n\n[The project's rules (AGENTS.md) still apply:]\n\n{self.rules}"
        return text


def _transcript(messages: Sequence[Message], message_chars: int) -> str:
    parts = []
    for message in messages:
        label = f"result of {message.name or 'a tool'}" if message.role == "tool" else message.role
        lines = [f"[{label}]", _shorten(message.content, message_chars)]
        lines += [f"[calls {call.name} with {_shorten(call.arguments, message_chars)}]" for call in message.tool_calls]
        parts.append("\n".join(line for line in lines if line))
    return "\n\n".join(parts)


def _shorten(text: str, limit: int) -> str:
    """`text`, or its head and tail around a marker when it is longer than `limit` characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half:,} characters left out ...]\n{text[-half:]}"
