"""One request's answer, built token by token as OpenAI dicts: `chat.completion` and `text_completion`,
whole or as stream chunks.

A response is its sequence's `OutputWatcher` (it sees each id first, to find stop strings) and then takes the
step's `TokenEvent`, queueing the chunks that token completed: a role chunk first, content and tool call
deltas, a chunk with `finish_reason`, then a usage chunk (`choices: []`), as the OpenAI API streams with
`stream_options.include_usage`. `LLM` and `kcode serve` both build their answers here.

Tool calls are parsed on token ids. A call whose arguments are not a JSON object, or were cut off, is still
returned with its raw arguments, as the OpenAI API may do: the client validates them and can tell the model.
Format slips that leave no call (a header that is not `functions.NAME:IDX`, stray text between calls) are
listed under the choice's non-standard `problems` key; none of this ever raises.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from engine.sequence import FinishReason, Request, TokenEvent
from engine.text_output import StopStrings, TextOutput
from engine.tokenizer import Tokenizer
from engine.tool_calls import (
    ArgumentsDelta,
    ContentDelta,
    ParsedMessage,
    ParseEvent,
    ToolCallParser,
    ToolCallStart,
)

ChatFinishReason = Literal["stop", "length", "tool_calls"]


class _Response:
    """What both kinds share: the request, its id and header, the token count and the queued chunks."""

    object_kind: str
    chunk_kind: str

    def __init__(self, prefix: str, request: Request, model_name: str) -> None:
        self.request = request
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name = model_name
        self.completion_tokens = 0
        self.finished = False
        self._chunks: list[dict[str, Any]] = []

    def take_chunks(self) -> list[dict[str, Any]]:
        """Stream chunks completed since the last call."""
        chunks, self._chunks = self._chunks, []
        return chunks

    def header(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_name}

    def usage(self) -> dict[str, int]:
        prompt, completion = len(self.request.prompt_token_ids), self.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _usage_chunk(self) -> dict[str, Any]:
        return {**self.header(self.chunk_kind), "choices": [], "usage": self.usage()}


class ChatResponse(_Response):
    chunk_kind = "chat.completion.chunk"

    def __init__(
        self,
        tokenizer: Tokenizer,
        request: Request,
        *,
        model_name: str,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__("chatcmpl", request, model_name)
        self._parser = ToolCallParser(tokenizer, tools)  # the tools let a malformed call header be recovered
        self._stops = StopStrings(request.params.stop)
        self._events: list[ParseEvent] = []
        self._content = ""
        self._cut_off = False
        self._chunks.append(self._chunk({"role": "assistant", "content": ""}))

    def feed(self, token_id: int) -> str | None:
        self._take(self._parser.feed(token_id))
        return self._stops.matched

    def on_token(self, event: TokenEvent) -> None:
        self.completion_tokens += 1
        if event.finish_reason is not None:
            self._cut_off = event.finish_reason == "length"
            self._take(self._parser.finish())  # close what the parser has open
            self._release()
        self._chunks.extend(self._chunk(delta) for delta in _deltas(self._drain()))
        if event.finish_reason is not None:
            self.finished = True
            final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": self.finish_reason}
            self._chunks.append({**self.header(self.chunk_kind), "choices": [self._with_problems(final)]})
            self._chunks.append(self._usage_chunk())

    @property
    def message(self) -> ParsedMessage:
        """The parsed message with the content's stop strings applied; it stopped unless cut off by the budget
        (a stop string stops it too, which the parser, seeing only stop ids, cannot know)."""
        return replace(self._parser.message, content=self._content, stopped=not self._cut_off)

    @property
    def finish_reason(self) -> ChatFinishReason:
        return self.message.finish_reason

    def completion(self) -> dict[str, Any]:
        """The whole `chat.completion`, once finished."""
        message = self.message.to_openai()
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
        return {**self.header("chat.completion"), "choices": [self._with_problems(choice)], "usage": self.usage()}

    def _chunk(self, delta: dict[str, Any]) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return {**self.header(self.chunk_kind), "choices": [choice]}

    def _with_problems(self, choice: dict[str, Any]) -> dict[str, Any]:
        problems = self._parser.message.problems
        return {**choice, "problems": list(problems)} if problems else choice

    def _drain(self) -> list[ParseEvent]:
        events, self._events = self._events, []
        return events

    def _take(self, events: list[ParseEvent]) -> None:
        for event in events:
            if self._stops.matched is not None:
                return  # everything after a stop string is dropped
            if isinstance(event, ContentDelta):
                self._add_content(self._stops.push(event.text))
            else:
                self._release()  # text before a marker is final: a stop string cannot span the marker
                self._events.append(event)

    def _release(self) -> None:
        if self._stops.matched is None:
            self._add_content(self._stops.flush())

    def _add_content(self, text: str) -> None:
        if text:
            self._content += text
            self._events.append(ContentDelta(text))


class CompletionResponse(_Response):
    """A plain completion; also what `LLM.generate` reads its `RequestOutput`s from."""

    chunk_kind = "text_completion"

    def __init__(self, tokenizer: Tokenizer, request: Request, *, model_name: str) -> None:
        super().__init__("cmpl", request, model_name)
        self._text = TextOutput(tokenizer, request.params)
        self._sent = 0
        self.token_ids: list[int] = []
        self.finish_reason: FinishReason | None = None
        self.stop_reason: int | str | None = None

    @property
    def text(self) -> str:
        return self._text.text

    def feed(self, token_id: int) -> str | None:
        return self._text.feed(token_id)

    def on_token(self, event: TokenEvent) -> None:
        self.completion_tokens += 1
        self.token_ids.append(event.token_id)
        if event.finish_reason is not None:
            self._text.finish()
        if len(self.text) > self._sent:
            self._chunks.append(self._chunk(self.text[self._sent :], None))
            self._sent = len(self.text)
        if event.finish_reason is not None:
            self.finished = True
            self.finish_reason, self.stop_reason = event.finish_reason, event.stop_reason
            self._chunks += [self._chunk("", event.finish_reason), self._usage_chunk()]

    def completion(self) -> dict[str, Any]:
        """The whole `text_completion`, once finished."""
        choice = {"index": 0, "text": self.text, "logprobs": None, "finish_reason": self.finish_reason}
        return {**self.header(self.chunk_kind), "choices": [choice], "usage": self.usage()}

    def _chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**self.header(self.chunk_kind), "choices": [choice]}


Response = ChatResponse | CompletionResponse


def _deltas(events: list[ParseEvent]) -> Iterator[dict[str, Any]]:
    """OpenAI stream deltas: a call's id and name first (with empty arguments), then argument pieces."""
    for event in events:
        if isinstance(event, ContentDelta):
            yield {"content": event.text}
        elif isinstance(event, ToolCallStart):
            function = {"name": event.name, "arguments": ""}
            yield {"tool_calls": [{"index": event.index, "id": event.id, "type": "function", "function": function}]}
        elif isinstance(event, ArgumentsDelta):
            yield {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}
