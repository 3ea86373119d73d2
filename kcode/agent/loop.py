"""The turn loop: the history goes to the backend, the calls it answers with go to the toolset, and round again.

One loop serves `kcode chat`, `kcode fix` and the SWE-bench harness; they differ only in the collaborators
they pass in (approvals, limits, compactor, event sinks). The loop reports through events and never
touches the screen. Whatever ends a turn, the history stays one the API accepts: every tool call the model
made has a result, if only one saying that it did not run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Protocol

from kcode.agent.approvals import Approvals
from kcode.agent.context import Compaction, Compactor, context_tokens, estimate_message_tokens
from kcode.agent.conversation import Conversation
from kcode.agent.events import (
    AgentError,
    AssistantDelta,
    Compacted,
    CompletionRetrying,
    EventSink,
    MessageAdded,
    Notice,
    ToolCallFinished,
    ToolCallStarted,
    TurnEnded,
    TurnEndReason,
)
from kcode.agent.limits import Budget
from kcode.backends.base import Backend, Finish, ReasoningDelta, Retrying, TextDelta, ToolCallReady, Usage
from kcode.errors import BackendError
from kcode.messages import Message, ToolCall
from tools.base import ToolResult
from tools.toolset import Toolset

_CUT_OFF_CALL = ("Not run: your answer reached the token limit and was cut off, so this call's arguments may be "
                 "incomplete. Make the call again with less in it (write a large file in several edits, say).")


class Checkpoints(Protocol):
    """Saves the workspace before a call that may change files (kcode.checkpoints has the real one)."""

    def before_step(self, call: ToolCall, history: tuple[Message, ...]) -> str | None:
        """Snapshot, if `call` (made by the last assistant message of `history`) can change files; a note for
        the user, or None. Failing must not raise."""


class LoopSettingsError(ValueError):
    """Repeat thresholds that cannot work."""


@dataclass(frozen=True)
class LoopSettings:
    """How the loop treats a model that is stuck, and how long its answers may be."""

    nudge_repeats: int = 3
    """The Nth identical call in a row (same tool, same arguments) gets a note that repeating will not help."""
    stop_repeats: int = 5
    """The Nth identical call in a row is not run and ends the turn as `repeated_call`."""
    max_completion_tokens: int | None = None
    """Longest answer the backend may produce per completion; None leaves it to the provider."""

    def __post_init__(self) -> None:
        if not 2 <= self.nudge_repeats <= self.stop_repeats:
            raise LoopSettingsError(f"need 2 <= nudge_repeats <= stop_repeats, got nudge_repeats="
                                    f"{self.nudge_repeats}, stop_repeats={self.stop_repeats}")


class Agent:
    """Runs turns over one conversation; collaborators it is not given default to "no limits, run all"."""

    def __init__(self, backend: Backend, toolset: Toolset, emit: EventSink, *,
                 conversation: Conversation | None = None, budget: Budget | None = None,
                 approvals: Approvals | None = None, compactor: Compactor | None = None,
                 settings: LoopSettings | None = None, checkpoints: Checkpoints | None = None) -> None:
        self.backend = backend
        self.toolset = toolset
        self.emit = emit
        self.conversation = conversation if conversation is not None else Conversation()
        self.budget = budget or Budget()
        self.approvals = approvals or Approvals("yolo")
        self.compactor = compactor
        self.settings = settings or LoopSettings()
        self.checkpoints = checkpoints
        self._schemas = toolset.schemas()
        self._streak: tuple[tuple[str, str] | None, int] = (None, 0)
        self._compaction_failed = False
        self._cut_off = False
        self._running: tuple[ToolCall, float] | None = None
        """The call being dispatched, and when it started (after any approval): Ctrl-C must not call it "Not run"."""

    def run_turn(self, message: Message) -> TurnEndReason:
        """Add `message` and work until the model answers or submits, or a limit, an error or Ctrl-C stops it.

        Ctrl-C (KeyboardInterrupt) is not re-raised: the turn ends as `interrupted`, which the caller sees
        in the return value and in the `TurnEnded` event, and the REPL goes back to its prompt.
        """
        self.budget.start_turn()
        self._streak, self._compaction_failed = (None, 0), False
        self._answer_unanswered("Not run: the session ended before this call ran.")
        self._add(message)
        try:
            reason = self._work()
        except KeyboardInterrupt:
            self._answer_interrupted()
            self._answer_unanswered("Not run: interrupted by the user.")
            reason = "interrupted"
        except BackendError as exc:
            self.emit(AgentError(str(exc)))
            reason = "error"
        self.emit(TurnEnded(reason))
        return reason

    def _work(self) -> TurnEndReason:
        while True:
            exceeded = self.budget.exceeded()
            if exceeded is not None:
                self.emit(AgentError(exceeded[1]))
                return exceeded[0]
            self._compact()
            assistant = self._complete()
            if self._cut_off:
                self.emit(Notice("The model's answer reached its token limit and was cut off."))
                if assistant.tool_calls:  # their arguments may be incomplete: never run them
                    self._answer_unanswered(_CUT_OFF_CALL)
                    continue
            if not assistant.tool_calls:
                return "answered"
            for call in assistant.tool_calls:
                ended = self._call(call)
                if ended is not None:
                    self._answer_unanswered(f"Not run: the turn ended ({ended}) before this call.")
                    return ended

    def _call(self, call: ToolCall) -> TurnEndReason | None:
        """Run one call, unless it is refused or repeated once too often; say whether it ends the turn."""
        self.emit(ToolCallStarted(call))
        repeats = self._count_repeat(call)
        if repeats >= self.settings.stop_repeats:
            self._finish(call, ToolResult.error(f"Not run: this exact call was made {repeats} times in a row."))
            self.emit(AgentError(f"The model made the same {call.name} call {repeats} times in a row; stopping."))
            return "repeated_call"
        refusal = self.approvals.check(call) if self.toolset.get(call.name) is not None else None
        if refusal is None and self.checkpoints is not None:  # a failed snapshot is a note, not the turn's end
            note = self.checkpoints.before_step(call, self.conversation.messages)
            if note is not None:
                self.emit(Notice(note))
        self._running = (call, time.monotonic())
        result = refusal or self.toolset.dispatch(call.name, call.arguments)
        blocked = result.data.get("sandbox_blocked")
        if blocked and self.approvals.leave_sandbox(call, blocked):
            self._running = (call, time.monotonic())
            result = self.toolset.dispatch(call.name, call.arguments, unsandboxed=True)
        if repeats >= self.settings.nudge_repeats:
            result = replace(result, output=f"{result.output}\n\n[You have made this exact call {repeats} times "
                                            "in a row; its result will not change. Try something different.]")
        self._finish(call, result)
        self._running = None
        return "submitted" if result.finished else None

    def _complete(self) -> Message:
        """Stream one completion, append it and record its usage; a retry discards the attempt so far."""
        self.budget.record_step()
        prompt_estimate = context_tokens(self.conversation, self._schemas)
        text: list[str] = []
        calls: list[ToolCall] = []
        self._cut_off = False
        usage: Usage | None = None
        stream = self.backend.stream(self.conversation.messages, self._schemas,
                                     max_tokens=self.settings.max_completion_tokens)
        try:
            for event in stream:
                if isinstance(event, Retrying):
                    text, calls, usage = [], [], None
                    self.emit(CompletionRetrying(event.attempt, event.max_attempts, event.delay_s, event.reason))
                elif isinstance(event, TextDelta):
                    text.append(event.text)
                    self.emit(AssistantDelta(event.text))
                elif isinstance(event, ReasoningDelta):
                    self.emit(AssistantDelta(event.text, reasoning=True))
                elif isinstance(event, ToolCallReady):
                    calls.append(event.call)
                elif isinstance(event, Usage):
                    usage = event
                elif isinstance(event, Finish):
                    self._cut_off = event.reason == "length"
        finally:
            close = getattr(stream, "close", None)  # cancels the request when we stop early
            if close is not None:
                close()
        message = Message(role="assistant", content="".join(text), tool_calls=tuple(calls))
        self._add(message)
        if usage is not None:
            self.conversation.note_usage(usage.prompt_tokens + usage.completion_tokens)
        else:  # some providers stream no usage: estimate, so token and cost limits still hold
            usage = Usage(prompt_tokens=prompt_estimate, completion_tokens=estimate_message_tokens(message))
        self.emit(self.budget.record_usage(usage))
        return message

    def _compact(self) -> None:
        """Compact when the history nears the window; after a failure, not again this turn (it would loop)."""
        if self.compactor is None or self._compaction_failed \
                or not self.compactor.needed(self.conversation, self._schemas):
            return
        self.emit(Notice("Compacting the conversation to fit the context window."))
        result = self.compact()
        self._compaction_failed = result is not None and result.problem is not None

    def compact(self, *, force: bool = False) -> Compaction | None:
        """Compact now (`force`: even below the threshold, as /compact asks); None without a compactor.

        The summary request is charged to the budget and the outcome reported, as for an automatic one.
        """
        if self.compactor is None:
            return None
        result = self.compactor.compact(self.conversation, self._schemas, force=force)
        if result.usage is not None:
            self.emit(self.budget.record_usage(result.usage))
        if result.changed:
            self.conversation.replace(result.history)
            self.emit(Compacted(result.tokens_before, result.tokens_after, result.summary,
                                result.elided_outputs, result.history))
        if result.problem is not None:
            self.emit(AgentError(f"Could not compact the conversation: {result.problem}."))
        return result

    def _count_repeat(self, call: ToolCall) -> int:
        key = (call.name, _canonical(call.arguments))
        count = self._streak[1] + 1 if self._streak[0] == key else 1
        self._streak = (key, count)
        return count

    def _finish(self, call: ToolCall, result: ToolResult) -> None:
        self.emit(ToolCallFinished(call, result))
        self._add(Message(role="tool", content=result.output, tool_call_id=call.id, name=call.name))

    def _answer_interrupted(self) -> None:
        """Answer the call Ctrl-C stopped while it ran: it did run, for a while, and may have changed things."""
        if self._running is not None and self._running[0] in self.conversation.unanswered_calls():
            call, started = self._running
            self._finish(call, ToolResult.error(f"Interrupted by the user after {time.monotonic() - started:.1f} s "
                                                "of running; it was stopped before it finished."))
        self._running = None

    def _answer_unanswered(self, reason: str) -> None:
        for call in self.conversation.unanswered_calls():
            self._finish(call, ToolResult.error(reason))

    def _add(self, message: Message) -> None:
        self.conversation.append(message)
        self.emit(MessageAdded(message))


def _canonical(arguments: str) -> str:
    """Arguments with key order and spacing normalised, so reformatting a call does not make it new."""
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except json.JSONDecodeError:
        return arguments
