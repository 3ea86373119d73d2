"""The engine's public face: `LLM(path)` loads a checkpoint and its tokenizer; `generate` completes prompts,
`chat` and `chat_stream` answer OpenAI-format conversations with K2's chat template and tool calls.

Shapes loosely follow vLLM's offline API: `generate` returns one `RequestOutput` per prompt, with the
completion at `outputs[0]` (`out.outputs[0].text`, as in vLLM) and, flatter, `out.text`, `out.token_ids` and
`out.finish_reason`. `chat` returns an OpenAI `chat.completion` dict and `chat_stream` yields
`chat.completion.chunk` dicts, ending with a chunk that carries `finish_reason` and then a usage chunk
(`choices: []`), as the OpenAI API does with `stream_options.include_usage`. Without `sampling_params` all
three use vLLM's defaults, `SamplingParams()`: temperature 1 and at most 16 new tokens.

Tool calls the model writes are parsed on token ids. A call whose arguments are not a JSON object, or were
cut off, is still returned with its raw arguments, as the OpenAI API may do: the client validates them and
can tell the model (kcode's toolset answers such a call with an error). Format slips that leave no call
(a header that is not `functions.NAME:IDX`, stray text between calls) are listed under the choice's
non-standard `problems` key; none of this ever raises.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from engine.chat_format import render_ids
from engine.errors import CheckpointError, ModelInputError, SamplingParamsError
from engine.generate import (
    PREFILL_CHUNK_TOKENS,
    FinishReason,
    OutputWatcher,
    Request,
    StopStrings,
    TextOutput,
    TokenEvent,
    check_prefill_chunk_tokens,
    generate_tokens,
)
from engine.loader import load_config, load_model
from engine.models.deepseek_v3 import AttentionForm, MoeForm
from engine.sampling import SamplingParams
from engine.tokenizer import Tokenizer
from engine.tool_calls import (
    ArgumentsDelta,
    ContentDelta,
    ParsedMessage,
    ParseEvent,
    ToolCallParser,
    ToolCallStart,
)

Prompt = str | Sequence[int]
ChatFinishReason = Literal["stop", "length", "tool_calls"]
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class CompletionOutput:
    """One generated continuation; `token_ids` include the stop id that ended it, `text` leaves it out."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    stop_reason: int | str | None
    """The stop id or stop string that ended it; None for eos or length."""


@dataclass(frozen=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    """The prompt text, or None when it was given as token ids."""
    prompt_token_ids: tuple[int, ...]
    outputs: tuple[CompletionOutput, ...]

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> tuple[int, ...]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> FinishReason:
        return self.outputs[0].finish_reason


class LLM:
    """A loaded checkpoint ready to generate: model, tokenizer, eos ids and context length."""

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.bfloat16,
        attention: AttentionForm = "absorbed",
        moe: MoeForm = "grouped",
        keep_fp8: bool = False,
        max_model_len: int | None = None,
        prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS,
    ) -> None:
        """`max_model_len` caps prompt plus output (default: the config's `max_position_embeddings`).
        `prefill_chunk_tokens` bounds the prompt columns per prefill pass, and with them the attention scores'
        memory: [batch, heads, chunk, prompt] instead of [batch, heads, prompt, prompt]."""
        check_prefill_chunk_tokens(prefill_chunk_tokens)
        root, torch_dtype = Path(path), _torch_dtype(dtype)
        self.tokenizer = Tokenizer.from_dir(root)
        config = load_config(root)  # everything checkable is checked before the weights load, which can take hours
        if self.tokenizer.vocab_size > config.vocab_size:
            raise CheckpointError(
                f"the tokenizer in {root} has {self.tokenizer.vocab_size} ids, the model only {config.vocab_size}"
            )
        if max_model_len is not None and not 1 < max_model_len <= config.max_position_embeddings:
            raise ModelInputError(
                f"max_model_len must be in 2..{config.max_position_embeddings} (max_position_embeddings), "
                f"got {max_model_len}"
            )
        self.model = load_model(root, dtype=torch_dtype, device=device, keep_fp8=keep_fp8, attention=attention, moe=moe)
        self.max_model_len = max_model_len or config.max_position_embeddings
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.path = root
        self.model_name = root.name
        self.eos_ids = frozenset(self.tokenizer.eos_ids) | frozenset(config.eos_token_ids)
        self._next_request = 0

    # ---- plain completion ------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Complete each prompt (text, or a list of token ids), all in one batch, in the order given.

        Prompt text is trusted like a rendered template: marker names in it such as `<|im_end|>` become
        their special ids. One `SamplingParams` applies to every prompt; a list gives one per prompt.
        """
        batch = _prompt_list(prompts)
        params = _params_list(sampling_params, len(batch))
        ids = [tuple(self.tokenizer.encode_with_specials(p)) if isinstance(p, str) else tuple(p) for p in batch]
        requests = [Request(prompt, p) for prompt, p in zip(ids, params, strict=True)]
        texts = [TextOutput(self.tokenizer, p) for p in params]
        finals: dict[int, tuple[FinishReason, int | str | None]] = {}
        outputs: list[list[int]] = [[] for _ in batch]
        steps = self._generate_tokens(requests, texts)
        for step in steps:
            for event in step:
                outputs[event.index].append(event.token_id)
                if event.finish_reason is not None:
                    finals[event.index] = (event.finish_reason, event.stop_reason)
        results = []
        for i, (prompt, request) in enumerate(zip(batch, requests, strict=True)):
            completion = CompletionOutput(0, texts[i].finish(), tuple(outputs[i]), *finals[i])
            text = prompt if isinstance(prompt, str) else None
            results.append(RequestOutput(self._request_id(), text, request.prompt_token_ids, (completion,)))
        return results

    def _request_id(self) -> str:
        self._next_request += 1
        return str(self._next_request - 1)

    # ---- chat ------------------------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        sampling_params: SamplingParams | None = None,
    ) -> dict[str, Any]:
        """An OpenAI `chat.completion` for the conversation: the assistant's content and tool calls."""
        run = self._start_chat(messages, tools, sampling_params)
        for _ in run.advance():
            pass
        reason = run.finish()
        choice = {"index": 0, "message": run.message().to_openai(), "logprobs": None, "finish_reason": reason}
        return {
            **run.header("chat.completion"),
            "choices": [_with_problems(choice, run.output.problems)],
            "usage": run.usage(),
        }

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        sampling_params: SamplingParams | None = None,
    ) -> Iterator[dict[str, Any]]:
        """OpenAI `chat.completion.chunk` dicts as the answer is generated: a role chunk, content and tool
        call deltas, a chunk with `finish_reason`, then a usage chunk. Bad input raises here, not mid-stream."""
        run = self._start_chat(messages, tools, sampling_params)
        return self._stream(run)

    def _stream(self, run: _ChatRun) -> Iterator[dict[str, Any]]:
        header = run.header("chat.completion.chunk")
        yield _chunk(header, {"role": "assistant", "content": ""})
        for _ in run.advance():
            for delta in _deltas(run.output.take_events()):
                yield _chunk(header, delta)
        reason = run.finish()
        for delta in _deltas(run.output.take_events()):
            yield _chunk(header, delta)
        final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        yield {**header, "choices": [_with_problems(final, run.output.problems)]}
        yield {**header, "choices": [], "usage": run.usage()}

    def _start_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        sampling_params: SamplingParams | None,
    ) -> _ChatRun:
        params = _params_list(sampling_params, 1)[0]
        prompt = tuple(render_ids(self.tokenizer, messages, tools))
        output = _ChatOutput(self.tokenizer, params)
        steps = self._generate_tokens([Request(prompt, params)], [output])
        return _ChatRun(self.model_name, prompt, output, steps)

    def _generate_tokens(
        self, requests: Sequence[Request], watchers: Sequence[OutputWatcher]
    ) -> Iterator[list[TokenEvent]]:
        """Only ids the tokenizer can decode are sampled, should the model's vocabulary be padded past it."""
        return generate_tokens(
            self.model,
            requests,
            watchers,
            eos_ids=self.eos_ids,
            max_model_len=self.max_model_len,
            sampled_vocab=self.tokenizer.vocab_size,
            prefill_chunk_tokens=self.prefill_chunk_tokens,
        )


class _ChatOutput:
    """Watches one chat generation: tool calls through the parser, stop strings on the content only."""

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams) -> None:
        self._parser = ToolCallParser(tokenizer)
        self._stops = StopStrings(params.stop)
        self._events: list[ParseEvent] = []
        self.content = ""

    def feed(self, token_id: int) -> str | None:
        self._take(self._parser.feed(token_id))
        return self._stops.matched

    def finish(self) -> None:
        """End of generation, however it ended: close what the parser has open, release held-back text."""
        self._take(self._parser.finish())
        self._release()

    def take_events(self) -> list[ParseEvent]:
        """Events since the last call, content already stop-string filtered."""
        events, self._events = self._events, []
        return events

    @property
    def problems(self) -> tuple[str, ...]:
        return self._parser.message.problems

    def message(self, *, cut_off: bool) -> ParsedMessage:
        """The parsed message with the content stop strings left; it stopped unless `cut_off` by the budget
        (a stop string stops it too, which the parser, seeing only stop ids, cannot know)."""
        return replace(self._parser.message, content=self.content, stopped=not cut_off)

    def _take(self, events: list[ParseEvent]) -> None:
        for event in events:
            if self._stops.matched is not None:
                return  # everything after a stop string is dropped
            if isinstance(event, ContentDelta):
                self._content(self._stops.push(event.text))
            else:
                self._release()  # text before a marker is final: a stop string cannot span the marker
                self._events.append(event)

    def _release(self) -> None:
        if self._stops.matched is None:
            self._content(self._stops.flush())

    def _content(self, text: str) -> None:
        if text:
            self.content += text
            self._events.append(ContentDelta(text))


class _ChatRun:
    """One chat request in flight: its id and header, its token steps, and what they have produced."""

    def __init__(
        self, model_name: str, prompt: tuple[int, ...], output: _ChatOutput, steps: Iterator[list[TokenEvent]]
    ) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name = model_name
        self.prompt = prompt
        self.output = output
        self._steps = steps
        self._completion_tokens = 0
        self._cut_off = False

    def advance(self) -> Iterator[None]:
        """Generate, pausing after each step so that a stream can send what the step produced."""
        for step in self._steps:
            self._completion_tokens += len(step)
            self._cut_off = step[-1].finish_reason == "length"
            yield

    def finish(self) -> ChatFinishReason:
        self.output.finish()
        return self.message().finish_reason

    def message(self) -> ParsedMessage:
        return self.output.message(cut_off=self._cut_off)

    def header(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_name}

    def usage(self) -> dict[str, int]:
        prompt, completion = len(self.prompt), self._completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


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


def _chunk(header: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    return {**header, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}


def _with_problems(choice: dict[str, Any], problems: tuple[str, ...]) -> dict[str, Any]:
    return {**choice, "problems": list(problems)} if problems else choice


def _torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ModelInputError(f"dtype must be one of {sorted(_DTYPES)} or the torch dtype, got {dtype!r}")


def _prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """One prompt (text, or a list of ints) or a list of them."""
    if isinstance(prompts, str):
        return [prompts]
    items = list(prompts)
    if items and all(isinstance(t, int) for t in items):
        return [items]  # type: ignore[list-item]
    return items  # type: ignore[return-value]


def _params_list(params: SamplingParams | Sequence[SamplingParams] | None, count: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * count
    if isinstance(params, SamplingParams):
        return [params] * count
    listed = list(params)
    if len(listed) != count or not all(isinstance(p, SamplingParams) for p in listed):
        raise SamplingParamsError(f"sampling_params must be one SamplingParams or {count} of them, got {params!r}")
    return listed
