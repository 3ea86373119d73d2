"""How to pick each next token: `SamplingParams` per request, and `sample` over a batch of logits.

Parameters follow vLLM's names and meanings: temperature 0 is greedy; `top_k` (0 = off) keeps the k most
likely tokens, then `top_p` keeps the smallest set whose probability reaches p, both before drawing; `stop`
strings are matched on the decoded text and cut from it; `stop_token_ids` end a sequence like eos does.
A request with a `seed` draws from its own generator, so it gets the same tokens whatever it is batched with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from engine.errors import SamplingParamsError

LogitsProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]
"""(token ids generated so far, fp32 logits [V]) -> logits [V]; vLLM's per-request hook."""

GREEDY_BELOW = 1e-5
"""Temperatures under this are greedy, as in vLLM: dividing logits by them would only overflow."""


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling; validated on construction, each error naming the field."""

    temperature: float = 1.0
    """Softmax temperature; 0 picks the most likely token every time."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most likely tokens until their probability reaches this, in (0, 1]."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all."""
    seed: int | None = None
    """Seeds this request's own generator; None draws from torch's global generator."""
    max_tokens: int = 16
    """Most tokens to generate (vLLM's default, 16); the stop token counts as one."""
    stop: str | Sequence[str] = ()
    """Strings that end the output when the decoded text contains them; the string itself is cut off.
    One string or several; stored as a tuple."""
    stop_token_ids: Sequence[int] = ()
    """Ids that end the output as eos does (kept in `token_ids`, left out of the text); stored as a tuple."""
    ignore_eos: bool = False
    """Keep going past the model's eos ids (benchmarks); `stop_token_ids` still stop."""
    skip_special_tokens: bool = True
    """Leave special ids (markers, eos) out of the decoded text, as vLLM does by default."""
    logits_processors: Sequence[LogitsProcessor] = ()
    """Applied in order to each step's logits before sampling: constraints, or tests scripting the output."""

    def __post_init__(self) -> None:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stops)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "logits_processors", tuple(self.logits_processors))
        _check_number("temperature", self.temperature, "a finite number >= 0", lambda v: 0 <= v < math.inf)
        _check_number("top_p", self.top_p, "a number in (0, 1]", lambda v: 0 < v <= 1)
        _check_int("top_k", self.top_k, "an integer >= 0 (0 keeps every token)", 0)
        _check_int("max_tokens", self.max_tokens, "an integer >= 1", 1)
        if self.seed is not None:
            _check_int("seed", self.seed, "an integer >= 0 or None", 0)
        for stop in stops:
            if not isinstance(stop, str) or not stop:
                raise SamplingParamsError(f"stop must hold non-empty strings, got {stop!r} in {stops!r}")
        for token_id in self.stop_token_ids:
            if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
                raise SamplingParamsError(f"stop_token_ids must hold ids >= 0, got {token_id!r}")
        for name in ("ignore_eos", "skip_special_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise SamplingParamsError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for processor in self.logits_processors:
            if not callable(processor):
                raise SamplingParamsError(f"logits_processors must hold callables, got {processor!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def _check_number(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not ok(float(value)):
        raise SamplingParamsError(f"{name} must be {allowed}, got {value!r}")


def _check_int(name: str, value: object, allowed: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SamplingParamsError(f"{name} must be {allowed}, got {value!r}")


def request_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """The request's own generator when it has a seed; greedy requests never draw."""
    if params.seed is None or params.greedy:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def sample(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """One token id per row of fp32 `logits` [B, V]: argmax for greedy rows, else a draw with that row's
    temperature, top-k and top-p from that row's generator."""
    choice = logits.argmax(dim=-1)  # [B]
    drawn = [row for row, p in enumerate(params) if not p.greedy]
    if drawn:
        rows = torch.tensor(drawn, device=logits.device)
        probs, token_of = _filtered_probs(logits[rows], [params[r] for r in drawn])
        for i, row in enumerate(drawn):
            pick = torch.multinomial(probs[i], 1, generator=generators[row])
            choice[row] = token_of[i, pick[0]]
    return choice.tolist()


def _filtered_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities over each row's tokens sorted by likelihood [B', V], zero outside its top-k and
    top-p, and the token id at each sorted position [B', V]."""
    vocab = logits.shape[-1]
    temperature = torch.tensor([p.temperature for p in params], device=logits.device)
    top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=logits.device)
    top_p = torch.tensor([p.top_p for p in params], device=logits.device)
    scaled, token_of = (logits / temperature[:, None]).sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)
    scaled = scaled.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = scaled.softmax(dim=-1)
    # a token stays while the tokens before it hold less than p: the first always stays
    before = probs.cumsum(dim=-1) - probs
    probs = probs.masked_fill(before >= top_p[:, None], 0.0)
    return probs, token_of
