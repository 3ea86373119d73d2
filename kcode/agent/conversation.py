"""The history one agent works on: appended to message by message, replaced whole only by compaction or /rewind.

It also remembers the last token count the API reported and at which message, so the context size can
be known exactly up to there and only estimated for what came after.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kcode.messages import Message, ToolCall


@dataclass(frozen=True)
class UsageAnchor:
    """`tokens` is what the API counted for the first `message_count` messages of the history."""

    message_count: int
    tokens: int


class Conversation:
    """An ordered history of messages; resumed sessions start from a loaded one."""

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._messages = list(messages)
        self.anchor: UsageAnchor | None = None

    @property
    def messages(self) -> tuple[Message, ...]:
        return tuple(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def append(self, message: Message) -> None:
        self._messages.append(message)

    def replace(self, messages: Iterable[Message]) -> None:
        """Swap in a compacted or rewound history; the API's last count no longer describes it."""
        self._messages = list(messages)
        self.anchor = None

    def note_usage(self, tokens: int) -> None:
        """The API counted `tokens` for the whole history as it stands (prompt plus the answer just appended)."""
        self.anchor = UsageAnchor(message_count=len(self._messages), tokens=tokens)

    def unanswered_calls(self) -> list[ToolCall]:
        """Calls of the last assistant message that have no tool result yet, in order.

        Every API refuses a history where a call lacks its result, so an interrupted or crashed turn
        must answer these before the conversation can go on.
        """
        for index in range(len(self._messages) - 1, -1, -1):
            message = self._messages[index]
            if message.role == "assistant":
                answered = {m.tool_call_id for m in self._messages[index + 1:] if m.role == "tool"}
                return [call for call in message.tool_calls if call.id not in answered]
        return []
