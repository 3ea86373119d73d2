"""Generated K2 token ids back into an OpenAI assistant message: content and `tool_calls`, incrementally.

K2 writes its text first, then (DESIGN.md §2)
`<|tool_calls_section_begin|>` and per call `<|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>`
`{json}<|tool_call_end|>`, then `<|tool_calls_section_end|><|im_end|>`. The parser works on ids, not on
decoded text: the markers are special ids, so marker text the model writes inside arguments or content
(from a file it read, say) is only text and can never open or close a call.

Model output is untrusted. Nothing here raises on it: arguments that are not a JSON object, output that
stops inside a call, a header that is not `functions.NAME:IDX`, repeated or stray markers, text between
or after calls each become a `FormatProblem` event and a line in `ParsedMessage.problems`; a call whose
arguments are bad or cut off is still returned, with its `error` set, so the client can tell the model.
Parsing stops at `<|im_end|>` or `[EOS]`.

A header that is an id but not `functions.NAME:IDX` (`0`, `call_3`) is recovered when the request's tools
name the function (engine/tool_signatures.py): the call gets the id `functions.NAME:IDX`, IDX being the
number the header ends with or else the call's position in this message, and a problem notes the repair.
With a single tool the call streams as usual; otherwise its name is known only once its arguments end, so
its `ToolCallStart` and all its arguments come together then. Without tools such a call is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from engine.chat_format import k2_call_id
from engine.tokenizer import (
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALLS_SECTION_BEGIN,
    TOOL_CALLS_SECTION_END,
    Tokenizer,
)
from engine.tool_signatures import ToolSignatures

_MARKERS = (
    TOOL_CALLS_SECTION_BEGIN,
    TOOL_CALLS_SECTION_END,
    TOOL_CALL_BEGIN,
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_END,
)
# The name part is an OpenAI function name (letters, digits, `_`, `-`) with dots allowed inside; some
# K2 outputs omit the `functions.` prefix, which costs nothing to accept.
_HEADER = re.compile(r"(?:functions\.)?(?P<name>[A-Za-z0-9_](?:[\w.\-]*[\w\-])?):(?P<index>\d+)", re.ASCII)
_MAX_HEADER_CHARS = 256
# A header worth recovering is one id-like word (`0`, `call_3`, `functions.:0`); anything with spaces or
# markup is garbage, and its call is dropped whatever the tools.
_ID_LIKE_HEADER = re.compile(r"[\w.:\-]*?(?P<number>\d*)", re.ASCII)
_MAX_ID_LIKE_CHARS = 64

_State = Literal["content", "section", "header", "arguments", "after"]


@dataclass(frozen=True)
class ToolCall:
    """One call; `error` says why its arguments must not be run (not a JSON object, or cut off)."""

    id: str
    name: str
    arguments: str
    error: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ParsedMessage:
    """A whole generation: text, calls in order, and every format problem met on the way."""

    content: str
    tool_calls: tuple[ToolCall, ...]
    problems: tuple[str, ...]
    stopped: bool
    """True when a stop id ended the output; False when it was cut off (max tokens) or is unfinished."""

    @property
    def finish_reason(self) -> Literal["stop", "tool_calls", "length"]:
        """OpenAI's finish_reason; a server that stopped for another reason (a stop string) overrides it."""
        if not self.stopped:
            return "length"
        return "tool_calls" if self.tool_calls else "stop"

    def to_openai(self) -> dict[str, Any]:
        """The assistant message; content is null when empty beside calls, as the Moonshot API wants."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["content"] = self.content or None
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return message


# Streaming events, in the order a client needs them: text, then per call its start, argument text and end.


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


@dataclass(frozen=True)
class ToolCallEnd:
    index: int
    call: ToolCall


@dataclass(frozen=True)
class FormatProblem:
    message: str


ParseEvent = ContentDelta | ToolCallStart | ArgumentsDelta | ToolCallEnd | FormatProblem


@dataclass(frozen=True)
class _OpenCall:
    index: int
    header: str
    number: int
    name: str | None
    """None while the header named no function and only the finished arguments can tell which tool it is."""

    @property
    def id(self) -> str:
        assert self.name is not None, "a call has an id only once it is named"
        return k2_call_id(self.name, self.number)


class ToolCallParser:
    """Feed generated ids one at a time; each `feed` returns the events that id completed.

    `tools` is the request's OpenAI tool list, used only to recover calls whose header names no function.
    """

    def __init__(self, tokenizer: Tokenizer, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        self._tokenizer = tokenizer
        self._tools = ToolSignatures(tools)
        self._marker_of = {tokenizer.special_id(name): name for name in _MARKERS}
        self._stop_ids = frozenset(tokenizer.eos_ids)
        self._decoder = tokenizer.stream_decoder()
        self._state: _State = "content"
        self._content: list[str] = []
        self._calls: list[ToolCall] = []
        self._problems: list[str] = []
        self._header: list[str] = []
        self._header_chars = 0
        self._arguments: list[str] = []
        self._stray: list[str] = []
        self._open: _OpenCall | None = None
        self._stopped = False
        self._finished = False

    @property
    def done(self) -> bool:
        """True once a stop id arrived or `finish` ran; later ids are ignored."""
        return self._stopped or self._finished

    @property
    def message(self) -> ParsedMessage:
        """Everything parsed so far (final once `done`)."""
        return ParsedMessage(
            content="".join(self._content),
            tool_calls=tuple(self._calls),
            problems=tuple(self._problems),
            stopped=self._stopped,
        )

    def feed(self, token_id: int) -> list[ParseEvent]:
        events: list[ParseEvent] = []
        if self.done:
            return events
        if token_id in self._stop_ids:
            self._end(events, "output stopped")
            self._stopped = True
        elif token_id in self._marker_of:
            self._flush_text(events)
            self._on_marker(self._marker_of[token_id], events)
        elif self._tokenizer.is_special(token_id):
            self._problem(events, f"unexpected special token {self._tokenizer.special_name(token_id)} ignored")
        elif not 0 <= token_id < self._tokenizer.vocab_size:
            self._problem(events, f"token id {token_id} is outside the vocabulary; ignored")
        else:
            self._on_text(self._decoder.feed(token_id), events)
        return events

    def finish(self) -> list[ParseEvent]:
        """End of output without a stop id (max tokens, or an aborted request): close what is open."""
        events: list[ParseEvent] = []
        if not self.done:
            self._end(events, "output ended")
            self._finished = True
        return events

    def _end(self, events: list[ParseEvent], how: str) -> None:
        self._flush_text(events)
        if self._state == "header":
            self._problem(events, f"{how} inside a tool call header {''.join(self._header)[:80]!r}")
        elif self._state == "arguments":
            self._close_call(events, error=f"{how} before {TOOL_CALL_END}: the arguments may be incomplete")
        elif self._state == "section":
            self._end_stray(events)
            self._problem(events, f"{how} without {TOOL_CALLS_SECTION_END}")

    def _flush_text(self, events: list[ParseEvent]) -> None:
        self._on_text(self._decoder.flush(), events)

    def _on_text(self, text: str, events: list[ParseEvent]) -> None:
        if not text:
            return
        if self._state in ("content", "after"):
            self._content.append(text)
            events.append(ContentDelta(text))
        elif self._state == "section":
            self._stray.append(text)
        elif self._state == "header":
            # Keep a bounded prefix for messages; the count alone decides that a header is too long.
            self._header_chars += len(text)
            if self._header_chars <= _MAX_HEADER_CHARS:
                self._header.append(text)
        elif self._open is not None:
            self._arguments.append(text)
            if self._open.name is not None:
                events.append(ArgumentsDelta(self._open.index, text))

    def _on_marker(self, marker: str, events: list[ParseEvent]) -> None:
        state = self._state
        if marker == TOOL_CALL_BEGIN:
            if state == "header":
                self._problem(events, f"{TOOL_CALL_BEGIN} repeated; header {''.join(self._header)[:80]!r} dropped")
            elif state == "arguments":
                self._close_call(events, problem=f"{TOOL_CALL_END} missing before the next {TOOL_CALL_BEGIN}")
            elif state in ("content", "after"):
                self._problem(events, f"{TOOL_CALL_BEGIN} outside {TOOL_CALLS_SECTION_BEGIN}; parsed anyway")
            self._end_stray(events)
            self._header = []
            self._header_chars = 0
            self._state = "header"
        elif marker == TOOL_CALL_ARGUMENT_BEGIN and state == "header":
            self._open_call(events)
        elif marker == TOOL_CALL_END and state == "arguments":
            self._close_call(events)
            self._state = "section"
        elif marker == TOOL_CALL_END and state == "header":
            self._problem(events, f"tool call {''.join(self._header)[:80]!r} has no arguments; dropped")
            self._state = "section"
        elif marker == TOOL_CALLS_SECTION_BEGIN and state in ("content", "after"):
            self._state = "section"
        elif marker == TOOL_CALLS_SECTION_END and state not in ("content", "after"):
            if state == "header":
                self._problem(events, f"{TOOL_CALLS_SECTION_END} inside header {''.join(self._header)[:80]!r}")
            elif state == "arguments":
                self._close_call(events, problem=f"{TOOL_CALL_END} missing before {TOOL_CALLS_SECTION_END}")
            self._end_stray(events)
            self._state = "after"
        else:
            self._problem(events, f"{marker} out of place ({state}); ignored")

    def _open_call(self, events: list[ParseEvent]) -> None:
        header = "".join(self._header).strip()
        self._arguments = []
        self._state = "arguments"
        self._open = None
        whole = self._header_chars <= _MAX_HEADER_CHARS
        match = _HEADER.fullmatch(header) if whole else None
        if match is not None:
            self._open = _OpenCall(len(self._calls), header, int(match["index"]), match["name"])
            events.append(ToolCallStart(self._open.index, self._open.id, match["name"]))
            return
        recoverable = whole and bool(self._tools.names) and len(header) <= _MAX_ID_LIKE_CHARS
        id_like = _ID_LIKE_HEADER.fullmatch(header) if recoverable else None
        if id_like is None:
            self._problem(events, f"tool call header {header[:80]!r} is not functions.NAME:IDX; call dropped")
            return
        index = len(self._calls)
        number = int(id_like["number"]) if id_like["number"] else index
        self._open = _OpenCall(index, header, number, self._tools.sole_name)
        if self._open.name is not None:
            self._note_recovery(events, self._open, "the only tool")
            events.append(ToolCallStart(index, self._open.id, self._open.name))

    def _name_by_arguments(self, events: list[ParseEvent], unnamed: _OpenCall, arguments: str) -> _OpenCall | None:
        """The call named by the one tool its arguments fit, its start and arguments sent late; else None."""
        name = self._tools.name_for(arguments)
        if name is None:
            self._problem(
                events,
                f"tool call header {unnamed.header!r} is not functions.NAME:IDX and its arguments fit no single "
                "tool of the request; call dropped",
            )
            return None
        named = replace(unnamed, name=name)
        self._note_recovery(events, named, "the only tool its arguments fit")
        events.append(ToolCallStart(named.index, named.id, name))
        if arguments:
            events.append(ArgumentsDelta(named.index, arguments))
        return named

    def _note_recovery(self, events: list[ParseEvent], call: _OpenCall, why: str) -> None:
        self._problem(events, f"tool call header {call.header!r} is not functions.NAME:IDX; taken as {call.id} ({why})")

    def _close_call(self, events: list[ParseEvent], error: str | None = None, problem: str | None = None) -> None:
        """Finish the call in progress; `error` marks it unusable, `problem` only notes a format slip."""
        if problem is not None:
            self._problem(events, problem)
        arguments = "".join(self._arguments)
        open_call = self._open
        if open_call is not None and open_call.name is None:
            open_call = self._name_by_arguments(events, open_call, arguments)
        if open_call is not None and open_call.name is not None:
            error = error or _arguments_error(arguments)
            call = ToolCall(open_call.id, open_call.name, arguments, error)
            self._calls.append(call)
            events.append(ToolCallEnd(open_call.index, call))
            if error is not None:
                self._problem(events, f"tool call {call.id}: {error}")
        self._open = None
        self._arguments = []

    def _end_stray(self, events: list[ParseEvent]) -> None:
        stray = "".join(self._stray)
        self._stray = []
        if stray.strip():
            self._problem(events, f"text between tool calls ignored: {stray[:80]!r}")

    def _problem(self, events: list[ParseEvent], message: str) -> None:
        self._problems.append(message)
        events.append(FormatProblem(message))


def _arguments_error(arguments: str) -> str | None:
    """Why the arguments cannot be used as a call's parameters, or None when they are a JSON object."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"arguments are not valid JSON ({exc.msg} at char {exc.pos})"
    except RecursionError:
        return "arguments are nested too deeply to parse"
    if not isinstance(value, dict):
        return f"arguments must be a JSON object, got {type(value).__name__}"
    return None


def parse_output(
    tokenizer: Tokenizer, ids: Iterable[int], tools: Sequence[Mapping[str, Any]] | None = None
) -> ParsedMessage:
    """One-shot parse of a whole generation; the same result as feeding the ids one by one."""
    parser = ToolCallParser(tokenizer, tools)
    for token_id in ids:
        if parser.done:
            break
        parser.feed(token_id)
    parser.finish()
    return parser.message
