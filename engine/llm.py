"""The engine's public face: `LLM(path)` loads a checkpoint and its tokenizer; `generate` completes prompts,
`chat` and `chat_stream` answer OpenAI-format conversations with K2's chat template and tool calls.

Shapes loosely follow vLLM's offline API: `generate` returns one `RequestOutput` per prompt, with the
completion at `outputs[0]` (`out.outputs[0].text`, as in vLLM) and, flatter, `out.text`, `out.token_ids` and
`out.finish_reason`. `chat` returns an OpenAI `chat.completion` dict and `chat_stream` yields
`chat.completion.chunk` dicts (see `engine.responses`). Without `sampling_params` all three use vLLM's
defaults, `SamplingParams()`: temperature 1 and at most 16 new tokens.

Everything runs on one `EngineCore`: `generate`'s prompts are batched continuously, and streams opened with
`chat_stream` in the same thread advance together, each step serving every live request. `kcode serve`
drives the same core from its own thread through `start` and `step` (`engine.service`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.chat_format import render_ids
from engine.core import CacheOptions, CoreStats, EngineCore, check_cache_fits
from engine.errors import CheckpointError, ModelInputError, RequestError, SamplingParamsError
from engine.loader import load_config, load_model
from engine.models.deepseek_v3 import AttentionForm, MoeForm
from engine.responses import ChatResponse, CompletionResponse, Response
from engine.sampling import SamplingParams
from engine.sequence import FinishReason, Request
from engine.tokenizer import Tokenizer

Prompt = str | Sequence[int]
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
DEFAULT_CACHE_TOKENS = 65536


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
    """A loaded checkpoint ready to generate: model, tokenizer, eos ids, context length and the engine core."""

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
        cache_tokens: int | None = None,
        block_size: int = 16,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 1024,
        enable_prefix_caching: bool = True,
    ) -> None:
        """`max_model_len` caps prompt plus output (default: the config's `max_position_embeddings`).
        The rest size the paged latent cache and the scheduler (see `engine.core.CacheOptions`);
        `cache_tokens` defaults to the larger of `max_model_len` and 65,536."""
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
        self.max_model_len = max_model_len or config.max_position_embeddings
        options = CacheOptions(
            cache_tokens=cache_tokens or max(self.max_model_len, DEFAULT_CACHE_TOKENS),
            block_size=block_size,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching,
        )
        check_cache_fits(options, self.max_model_len)
        self.model = load_model(root, dtype=torch_dtype, device=device, keep_fp8=keep_fp8, attention=attention, moe=moe)
        self.path = root
        self.model_name = root.name
        self.eos_ids = frozenset(self.tokenizer.eos_ids) | frozenset(config.eos_token_ids)
        self.core = EngineCore(
            self.model, options, eos_ids=self.eos_ids, max_model_len=self.max_model_len,
            sampled_vocab=self.tokenizer.vocab_size,  # only ids the tokenizer can decode, should the model pad past it
        )
        self._live: dict[int, Response] = {}
        self._next_request = 0

    # ---- requests on the shared core -------------------------------------------------------------------

    def chat_response(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        sampling_params: SamplingParams | None = None,
        *,
        model_name: str | None = None,
    ) -> ChatResponse:
        """Render and check a chat request (bad input raises here) without starting it; see `start`."""
        params = _params_list(sampling_params, 1)[0]
        request = Request(tuple(render_ids(self.tokenizer, messages, tools)), params)
        self.core.check(request)
        return ChatResponse(self.tokenizer, request, model_name=model_name or self.model_name, tools=tools)

    def completion_response(
        self,
        prompt: Prompt,
        sampling_params: SamplingParams | None = None,
        *,
        model_name: str | None = None,
        label: str = "the prompt",
    ) -> CompletionResponse:
        """Encode and check a completion request (bad input raises here, naming the prompt by `label`) without
        starting it; see `start`. Prompt text is trusted like a rendered template: marker names in it become
        their special ids."""
        params = _params_list(sampling_params, 1)[0]
        ids = self.tokenizer.encode_with_specials(prompt) if isinstance(prompt, str) else prompt
        request = Request(tuple(ids), params)
        self.core.check(request, label=label)
        return CompletionResponse(self.tokenizer, request, model_name=model_name or self.model_name)

    def start(self, response: Response) -> int:
        """Queue a prepared request on the core; the next `step`s feed it. Returns its id, for `abort`."""
        request_id = self.core.add(response.request, response)
        self._live[request_id] = response
        return request_id

    def step(self) -> int:
        """One forward pass for every live request; each response queues the chunks its token completed.
        Returns how many tokens the step generated."""
        events = self.core.step()
        for event in events:
            response = self._live[event.request_id]
            response.on_token(event)
            if response.finished:
                del self._live[event.request_id]
        return len(events)

    def abort(self, request_id: int) -> None:
        """Drop a started request; its cache blocks are free for the next step."""
        self._live.pop(request_id, None)
        self.core.abort(request_id)

    def stats(self) -> CoreStats:
        return self.core.stats()

    # ---- offline use -----------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Complete each prompt (text, or a list of token ids), batched continuously, in the order given.

        Prompt text is trusted like a rendered template: marker names in it such as `<|im_end|>` become
        their special ids. One `SamplingParams` applies to every prompt; a list gives one per prompt.
        """
        batch = _prompt_list(prompts)
        if not batch:
            raise RequestError("no prompts given")
        params = _params_list(sampling_params, len(batch))
        responses = [
            self.completion_response(prompt, p, label=f"prompt {i}")
            for i, (prompt, p) in enumerate(zip(batch, params, strict=True))
        ]
        for response in responses:
            self.start(response)
        while not all(r.finished for r in responses):
            self.step()
        return [self._request_output(p, r) for p, r in zip(batch, responses, strict=True)]

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        sampling_params: SamplingParams | None = None,
    ) -> dict[str, Any]:
        """An OpenAI `chat.completion` for the conversation: the assistant's content and tool calls."""
        response = self.chat_response(messages, tools, sampling_params)
        self.start(response)
        while not response.finished:
            self.step()
        return response.completion()

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        sampling_params: SamplingParams | None = None,
    ) -> Iterator[dict[str, Any]]:
        """OpenAI `chat.completion.chunk` dicts as the answer is generated: a role chunk, content and tool call
        deltas, a chunk with `finish_reason`, then a usage chunk. Bad input raises here, not mid-stream."""
        response = self.chat_response(messages, tools, sampling_params)
        return self._stream(response)

    def _stream(self, response: ChatResponse) -> Iterator[dict[str, Any]]:
        request_id = self.start(response)
        try:
            while True:
                chunks = response.take_chunks()
                if chunks:  # another stream's step may add chunks while these are read: take again before leaving
                    yield from chunks
                elif response.finished:
                    return
                else:
                    self.step()
        finally:
            if not response.finished:  # the caller stopped reading: free the sequence
                self.abort(request_id)

    def _request_output(self, prompt: Prompt, response: CompletionResponse) -> RequestOutput:
        assert response.finish_reason is not None, "a finished response has a finish reason"
        completion = CompletionOutput(
            0, response.text, tuple(response.token_ids), response.finish_reason, response.stop_reason
        )
        text = prompt if isinstance(prompt, str) else None
        self._next_request += 1
        return RequestOutput(str(self._next_request - 1), text, response.request.prompt_token_ids, (completion,))


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
