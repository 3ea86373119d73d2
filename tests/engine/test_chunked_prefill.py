"""Chunked prefill on a real tiny fp32 checkpoint: feeding a left-padded batch through the cache a few columns at a
time gives the logits and greedy tokens of one full pass, for both attention forms; bad chunk sizes are refused.

Chunks of 3 and 5 columns over prompts of 4, 9 and 13 tokens put chunk borders inside the padding, on the border
between padding and prompt, and inside the prompts, so every way a chunk can see earlier slots is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from engine.errors import ModelInputError
from engine.generate import Request, generate_tokens, prefill
from engine.llm import LLM
from engine.models.deepseek_v3 import AttentionForm, DeepseekV3ForCausalLM, positions_from_mask
from engine.sampling import SamplingParams
from engine.tiny import make_tiny

PROMPTS = [tuple(range(200, 204)), tuple(range(300, 313)), tuple(range(400, 409))]
WIDTH = max(map(len, PROMPTS))
STEPS = 12
GREEDY = SamplingParams(temperature=0, max_tokens=STEPS, ignore_eos=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "k2", dtype="fp32", seed=1)


@pytest.fixture(scope="module", params=["plain", "absorbed"])
def model(request: pytest.FixtureRequest, checkpoint: Path) -> DeepseekV3ForCausalLM:
    form: AttentionForm = request.param
    return LLM(checkpoint, dtype="float32", attention=form).model


def _prefill_logits(model: DeepseekV3ForCausalLM, chunk_tokens: int) -> torch.Tensor:
    with torch.inference_mode():
        cache = model.new_cache(len(PROMPTS), WIDTH + 4)
        logits = prefill(model, PROMPTS, cache, chunk_tokens=chunk_tokens)
    assert cache.length == WIDTH
    assert cache.next_positions().tolist() == [len(p) for p in PROMPTS]
    return logits


def _one_pass_logits(model: DeepseekV3ForCausalLM) -> torch.Tensor:
    """The unchunked reference: one forward over the whole padded batch, no cache."""
    ids = torch.tensor([(0,) * (WIDTH - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[False] * (WIDTH - len(p)) + [True] * len(p) for p in PROMPTS])
    with torch.inference_mode():
        return model(ids, positions_from_mask(mask), attention_mask=mask)[:, -1]


@pytest.mark.parametrize("chunk_tokens", [1, 3, 5])
def test_chunked_prefill_logits_match_one_pass(model: DeepseekV3ForCausalLM, chunk_tokens: int) -> None:
    reference = _one_pass_logits(model)
    chunked = _prefill_logits(model, chunk_tokens)
    assert chunked.shape == (len(PROMPTS), model.config.vocab_size)
    torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-5)
    assert not torch.equal(chunked[0], chunked[1]), "rows must be different prompts, not one broadcast"


def _pass_shapes(model: DeepseekV3ForCausalLM, chunk_tokens: int) -> list[tuple[int, ...]]:
    """The [B, S] shape of every decoder pass one prefill makes."""
    shapes: list[tuple[int, ...]] = []

    def record(_: nn.Module, args: tuple[Any, ...]) -> None:
        shapes.append(tuple(args[0].shape))

    handle = model.model.register_forward_pre_hook(record)
    try:
        _prefill_logits(model, chunk_tokens)
    finally:
        handle.remove()
    return shapes


def test_prefill_makes_one_pass_per_chunk_and_one_when_the_chunk_covers_the_prompt(
    model: DeepseekV3ForCausalLM,
) -> None:
    assert _pass_shapes(model, 5) == [(3, 5), (3, 5), (3, 3)]
    assert _pass_shapes(model, 13) == [(3, 13)]
    assert _pass_shapes(model, 4096) == [(3, 13)]
    assert torch.equal(_prefill_logits(model, 4096), _prefill_logits(model, WIDTH))


@pytest.mark.parametrize("form", ["plain", "absorbed"])
def test_greedy_tokens_of_a_padded_batch_do_not_depend_on_the_chunk_size(checkpoint: Path, form: str) -> None:
    params = [GREEDY, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True), GREEDY]
    outputs = {
        chunk: LLM(checkpoint, dtype="float32", attention=form, prefill_chunk_tokens=chunk).generate(
            [list(p) for p in PROMPTS], params
        )
        for chunk in (3, 5, 1024)
    }
    unchunked = [out.token_ids for out in outputs[1024]]
    assert [len(t) for t in unchunked] == [STEPS, 5, STEPS]
    assert len(set(unchunked[1])) > 1
    for chunk in (3, 5):
        assert [out.token_ids for out in outputs[chunk]] == unchunked, f"chunk {chunk}"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
def test_an_invalid_chunk_size_is_refused_naming_the_field(checkpoint: Path, bad: object) -> None:
    message = rf"prefill_chunk_tokens must be a positive integer, got {bad!r}"
    with pytest.raises(ModelInputError, match=message):
        LLM(checkpoint, dtype="float32", prefill_chunk_tokens=bad)  # type: ignore[arg-type]


def test_generate_tokens_and_prefill_refuse_a_bad_chunk_size_before_any_work(model: DeepseekV3ForCausalLM) -> None:
    request = Request(PROMPTS[0], GREEDY)
    with pytest.raises(ModelInputError, match="prefill_chunk_tokens must be a positive integer, got 0"):
        generate_tokens(model, [request], [], eos_ids=frozenset(), max_model_len=64, prefill_chunk_tokens=0)
    cache = model.new_cache(1, 8)
    with pytest.raises(ModelInputError, match="got -1"):
        prefill(model, [PROMPTS[0]], cache, chunk_tokens=-1)
    assert cache.length == 0
