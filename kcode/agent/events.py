"""What the agent loop reports while it works. UIs, printers and trajectory writers consume these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kcode.messages import Message, ToolCall
from tools.base import ToolResult


@dataclass(frozen=True)
class AssistantDelta:
    """A piece of streamed assistant text (`reasoning` for a thinking model's reasoning)."""

    text: str
    reasoning: bool = False


@dataclass(frozen=True)
class ToolCallStarted:
    """The model asked for a call; approval and execution follow."""

    call: ToolCall


@dataclass(frozen=True)
class ToolCallFinished:
    """A call's result, already clamped, exactly as the model will read it."""

    call: ToolCall
    result: ToolResult


@dataclass(frozen=True)
class UsageReport:
    """Tokens of one completion and the running totals for the session."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None


@dataclass(frozen=True)
class MessageAdded:
    """A message joined the history; the session writer persists these as they happen."""

    message: Message


@dataclass(frozen=True)
class Compacted:
    """The history was compacted to fit the context window.

    `summary` is empty when eliding old tool outputs was enough; `history` is the new history in full,
    so a session file can replay the compaction on resume instead of paying for it again.
    """

    tokens_before: int
    tokens_after: int
    summary: str
    elided_outputs: int = 0
    history: tuple[Message, ...] = ()


@dataclass(frozen=True)
class CompletionRetrying:
    """The backend is retrying the completion: the text streamed since the last step start is void."""

    attempt: int
    max_attempts: int
    delay_s: float
    reason: str


@dataclass(frozen=True)
class ApprovalDecided:
    """Whether a call that edits or runs something may go ahead, and who decided (`asked`: the user).

    `scope` is what an "always" answer now allows; `warning` names what a destructive command would lose.
    """

    call_id: str
    tool: str
    verdict: Literal["yes", "no", "always"]
    asked: bool
    scope: str | None = None
    warning: str | None = None


@dataclass(frozen=True)
class Notice:
    """Something the user may like to know that is not an error (compaction starting, a call not run)."""

    message: str


@dataclass(frozen=True)
class AgentError:
    """Something went wrong that the user should see (the API failed, a limit was hit)."""

    message: str


TurnEndReason = Literal["answered", "submitted", "step_limit", "token_limit", "cost_limit", "time_limit",
                        "repeated_call", "interrupted", "error"]


@dataclass(frozen=True)
class TurnEnded:
    """The turn is over and why."""

    reason: TurnEndReason


Event = (AssistantDelta | ToolCallStarted | ToolCallFinished | UsageReport | MessageAdded | Compacted
         | CompletionRetrying | Notice | AgentError | TurnEnded | ApprovalDecided)
EventSink = Callable[[Event], None]
