"""The generation loop: a batch of prompts in, one token per live sequence per step out.

Prompts of different lengths are left-padded into one batch that fills the latent cache in chunks of at most
`prefill_chunk_tokens` columns, so a pass's attention scores are [B, H, chunk, T] rather than [B, H, T, T];
then every step feeds each live sequence its last token. A sequence ends on an eos id (unless
`ignore_eos`), one of its `stop_token_ids`, a stop string completed by its text, or its token budget; finished
sequences leave the batch (the cache drops their rows), so the rest never pay for them. Rows never mix: each
sequence gets the tokens it would get alone, up to floating-point rounding of batched matrix products.

The loop knows tokens, not text: what a token means (decoded text, a tool call) is an `OutputWatcher`'s job,
which says when a stop string has been completed. `TextOutput` is the plain-text watcher, with vLLM's
stop-string rule: the string and what follows are cut, and text that could be the start of a stop string
is held back until it cannot (only that much, so streamed text lags no more than it must).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from engine.errors import ModelInputError, RequestError
from engine.models.deepseek_v3 import DeepseekV3ForCausalLM, LatentCache, positions_from_mask
from engine.sampling import SamplingParams, request_generator, sample
from engine.tokenizer import Tokenizer

FinishReason = Literal["stop", "length"]
PAD_ID = 0
"""What padding slots hold; masked out, so any id in the vocabulary does."""
PREFILL_CHUNK_TOKENS = 1024
"""Prompt columns per prefill pass: peak attention memory grows with chunk x prompt, not prompt squared."""


@dataclass(frozen=True)
class Request:
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True)
class TokenEvent:
    """One generated token of request `index`; the finish fields are set on its last token only."""

    index: int
    token_id: int
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    """The stop id or stop string that ended the sequence; None for eos and for length (as in vLLM)."""


class OutputWatcher(Protocol):
    def feed(self, token_id: int) -> str | None:
        """Take a generated id that is not a stop id; return the stop string its text completed, if any."""
        ...


class StopStrings:
    """Text in, text out: cut at the first stop string, and hold back a tail that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""
        self.matched: str | None = None

    def push(self, text: str) -> str:
        """The text now known to precede any stop string; "" once one has matched."""
        if self.matched is not None:
            return ""
        pending = self._pending + text
        hits = [(pending.find(s), s) for s in self._stops if s in pending]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            self._pending = ""
            return pending[:at]
        cut = len(pending) - self._held(pending)
        self._pending = pending[cut:]
        return pending[:cut]

    def _held(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        return max(
            (k for s in self._stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
            default=0,
        )

    def flush(self) -> str:
        """End of output without a stop string: release what was held back."""
        pending, self._pending = self._pending, ""
        return pending


class TextOutput:
    """The decoded text of one sequence, stop strings applied; `text` grows as tokens arrive."""

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams) -> None:
        self._tokenizer = tokenizer
        self._skip_special = params.skip_special_tokens
        self._decoder = tokenizer.stream_decoder()
        self._stops = StopStrings(params.stop)
        self.text = ""

    def feed(self, token_id: int) -> str | None:
        if not (self._skip_special and self._tokenizer.is_special(token_id)):
            self.text += self._stops.push(self._decoder.feed(token_id))
        return self._stops.matched

    def finish(self) -> str:
        """The final text: bytes of a cut-off character become U+FFFD, held-back text is released."""
        self.text += self._stops.push(self._decoder.flush())
        self.text += self._stops.flush()
        return self.text


@dataclass
class _Sequence:
    index: int
    params: SamplingParams
    watcher: OutputWatcher
    budget: int
    stop_ids: frozenset[int]
    generator: torch.Generator | None
    output: list[int] = field(default_factory=list)

    def append(self, token_id: int) -> TokenEvent:
        self.output.append(token_id)
        if token_id in self.stop_ids:
            custom = token_id in self.params.stop_token_ids
            return TokenEvent(self.index, token_id, "stop", token_id if custom else None)
        matched = self.watcher.feed(token_id)
        if matched is not None:
            return TokenEvent(self.index, token_id, "stop", matched)
        if len(self.output) >= self.budget:
            return TokenEvent(self.index, token_id, "length")
        return TokenEvent(self.index, token_id)


def check_requests(requests: Sequence[Request], *, vocab_size: int, max_model_len: int) -> None:
    """Reject what the model cannot take before any work starts; messages name the prompt and value."""
    if not requests:
        raise RequestError("no prompts given")
    for i, request in enumerate(requests):
        prompt = request.prompt_token_ids
        if not prompt:
            raise RequestError(f"prompt {i} is empty; give at least one token")
        bad = next((t for t in prompt if not _is_token_id(t, vocab_size)), None)
        if bad is not None:
            raise RequestError(f"prompt {i} holds {bad!r}; token ids are integers in 0..{vocab_size - 1}")
        if len(prompt) >= max_model_len:
            raise RequestError(
                f"prompt {i} has {len(prompt)} tokens; the context holds {max_model_len}, leaving none to generate"
            )


def check_prefill_chunk_tokens(value: object) -> None:
    """Reject a chunk size that is not a positive int (bool is an int to Python, not here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelInputError(f"prefill_chunk_tokens must be a positive integer, got {value!r}")


def _is_token_id(value: object, vocab_size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab_size


def generate_tokens(
    model: DeepseekV3ForCausalLM,
    requests: Sequence[Request],
    watchers: Sequence[OutputWatcher],
    *,
    eos_ids: frozenset[int],
    max_model_len: int,
    sampled_vocab: int | None = None,
    prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS,
) -> Iterator[list[TokenEvent]]:
    """Checks the requests now, then yields each step's events, one per sequence still live at that step.

    A sequence's budget is its `max_tokens`, cut to what the context (`max_model_len`) leaves after its
    prompt; running out of either is finish reason "length". Ids at or above `sampled_vocab` get -inf
    logits before the logits processors run, so a model vocabulary padded past its tokenizer's never yields
    an id the tokenizer cannot decode (None: every id of the model may be sampled). The prompts are prefilled
    `prefill_chunk_tokens` columns at a time (see `prefill`).
    """
    check_requests(requests, vocab_size=model.config.vocab_size, max_model_len=max_model_len)
    check_prefill_chunk_tokens(prefill_chunk_tokens)
    device = model.lm_head.weight.device
    sequences = [
        _Sequence(
            index=i,
            params=r.params,
            watcher=watcher,
            budget=min(r.params.max_tokens, max_model_len - len(r.prompt_token_ids)),
            stop_ids=frozenset(r.params.stop_token_ids) | (frozenset() if r.params.ignore_eos else eos_ids),
            generator=request_generator(r.params, device),
        )
        for i, (r, watcher) in enumerate(zip(requests, watchers, strict=True))
    ]
    prompts = [r.prompt_token_ids for r in requests]
    return _steps(model, prompts, sequences, sampled_vocab, prefill_chunk_tokens)


def _steps(
    model: DeepseekV3ForCausalLM,
    prompts: list[tuple[int, ...]],
    sequences: list[_Sequence],
    sampled_vocab: int | None,
    prefill_chunk_tokens: int,
) -> Iterator[list[TokenEvent]]:
    # The last sampled token is never fed back, so the cache needs one slot less than prompt + budget.
    capacity = max(map(len, prompts)) + max(s.budget for s in sequences) - 1
    device = model.lm_head.weight.device
    with torch.inference_mode():
        cache = model.new_cache(len(prompts), capacity)
        logits = prefill(model, prompts, cache, chunk_tokens=prefill_chunk_tokens)
        positions = torch.tensor([len(p) for p in prompts], device=device)  # [B] of the next token fed
    live = sequences  # one per row of the batch, in row order
    while True:
        with torch.inference_mode():
            tokens = _next_tokens(logits, live, sampled_vocab)
        events = [seq.append(token) for seq, token in zip(live, tokens, strict=True)]
        yield events
        keep = [row for row, event in enumerate(events) if event.finish_reason is None]
        if not keep:
            return
        with torch.inference_mode():
            ids = torch.tensor([[tokens[row]] for row in keep], device=device)  # [B', 1]
            if len(keep) < len(live):
                rows = torch.tensor(keep, device=device)
                cache.keep_rows(rows)
                positions = positions[rows]
                live = [live[row] for row in keep]
            logits = model(ids, positions[:, None], cache=cache)[:, -1]
            positions += 1


def prefill(
    model: DeepseekV3ForCausalLM, prompts: Sequence[tuple[int, ...]], cache: LatentCache, *, chunk_tokens: int
) -> torch.Tensor:
    """Left-pad the prompts and feed them through the cache `chunk_tokens` columns at a time; [B, V] logits of
    each prompt's last token.

    The cache keeps each row's slots and validity across passes, so a chunk attends to every earlier real
    token exactly as one pass would (up to the rounding of differently shaped products). Left padding puts
    every prompt's last token in the last column, so only the last chunk goes through `lm_head`.
    """
    check_prefill_chunk_tokens(chunk_tokens)
    width = max(map(len, prompts))
    device = model.lm_head.weight.device
    ids = torch.tensor([(PAD_ID,) * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts], device=device)
    positions = positions_from_mask(mask)
    last_start = (width - 1) // chunk_tokens * chunk_tokens
    for start in range(0, last_start, chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        model.model(ids[:, piece], positions[:, piece], mask[:, piece], cache)
    last = torch.full((len(prompts),), width - 1 - last_start, device=device)
    tail = slice(last_start, width)
    return model(ids[:, tail], positions[:, tail], attention_mask=mask[:, tail], cache=cache, logits_index=last)


def _next_tokens(logits: torch.Tensor, live: list[_Sequence], sampled_vocab: int | None) -> list[int]:
    if sampled_vocab is not None:
        logits[:, sampled_vocab:] = float("-inf")
    for row, seq in enumerate(live):
        for processor in seq.params.logits_processors:
            logits[row] = processor(seq.output, logits[row])
    return sample(logits, [seq.params for seq in live], [seq.generator for seq in live])
