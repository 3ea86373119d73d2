"""One request's life in the engine: its prompt, what it has generated, and where its cache blocks are.

A sequence ends on an eos id (unless `ignore_eos`), one of its `stop_token_ids`, a stop string completed by
its text, or its token budget: its `max_tokens`, cut to what the context (`max_model_len`) leaves after its
prompt. The engine knows tokens, not text: what a token means (decoded text, a tool call) is its
`OutputWatcher`'s job, which says when a stop string has been completed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from engine.errors import ContextLengthError, RequestError
from engine.sampling import SamplingParams, request_generator

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Request:
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True)
class TokenEvent:
    """One generated token of request `request_id`; the finish fields are set on its last token only."""

    request_id: int
    token_id: int
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    """The stop id or stop string that ended the sequence; None for eos and for length (as in vLLM)."""


class OutputWatcher(Protocol):
    def feed(self, token_id: int) -> str | None:
        """Take a generated id that is not a stop id; return the stop string its text completed, if any."""
        ...


@dataclass(eq=False)
class Sequence:
    id: int
    prompt_len: int
    params: SamplingParams
    watcher: OutputWatcher
    budget: int
    stop_ids: frozenset[int]
    generator: torch.Generator | None
    tokens: list[int]
    """Prompt then output; every token but the last sampled one is fed back through the model."""
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0
    """Tokens whose latents are in the cache; a preempted sequence drops to 0 and is computed again."""
    named_blocks: int = 0
    """Leading blocks of `block_table` the prefix cache knows by name."""

    @property
    def output(self) -> list[int]:
        return self.tokens[self.prompt_len :]

    @property
    def uncomputed(self) -> int:
        return len(self.tokens) - self.num_computed

    def append(self, token_id: int) -> TokenEvent:
        self.tokens.append(token_id)
        if token_id in self.stop_ids:
            custom = token_id in self.params.stop_token_ids
            return TokenEvent(self.id, token_id, "stop", token_id if custom else None)
        matched = self.watcher.feed(token_id)
        if matched is not None:
            return TokenEvent(self.id, token_id, "stop", matched)
        if len(self.tokens) - self.prompt_len >= self.budget:
            return TokenEvent(self.id, token_id, "length")
        return TokenEvent(self.id, token_id)


def check_request(request: Request, *, vocab_size: int, max_model_len: int, label: str = "the prompt") -> None:
    """Reject what the model cannot take before any work starts; messages name the prompt (`label`) and value."""
    prompt = request.prompt_token_ids
    if not prompt:
        raise RequestError(f"{label} is empty; give at least one token")
    bad = next((t for t in prompt if not _is_token_id(t, vocab_size)), None)
    if bad is not None:
        raise RequestError(f"{label} holds {bad!r}; token ids are integers in 0..{vocab_size - 1}")
    if len(prompt) >= max_model_len:
        raise ContextLengthError(
            f"{label} has {len(prompt)} tokens; the context holds {max_model_len}, leaving none to generate"
        )


def _is_token_id(value: object, vocab_size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab_size


def new_sequence(
    request_id: int,
    request: Request,
    watcher: OutputWatcher,
    *,
    eos_ids: frozenset[int],
    max_model_len: int,
    device: torch.device,
) -> Sequence:
    params, prompt = request.params, request.prompt_token_ids
    return Sequence(
        id=request_id,
        prompt_len=len(prompt),
        params=params,
        watcher=watcher,
        budget=min(params.max_tokens, max_model_len - len(prompt)),
        stop_ids=frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else eos_ids),
        generator=request_generator(params, device),
        tokens=list(prompt),
    )
