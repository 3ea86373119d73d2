"""SamplingParams validation and the batch sampler: greedy rows, temperature, top-k, top-p and per-request seeds."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.errors import EngineError, SamplingParamsError
from engine.sampling import SamplingParams, request_generator, sample

VOCAB = 50


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed))


def _draws(logits_row: torch.Tensor, params: SamplingParams, count: int) -> list[int]:
    generator = request_generator(params, logits_row.device)
    return [sample(logits_row[None].clone(), [params], [generator])[0] for _ in range(count)]


def test_defaults_follow_vllm_and_stop_values_are_normalised() -> None:
    params = SamplingParams()
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (1.0, 1.0, 0, 16)
    assert params.seed is None and not params.ignore_eos and params.skip_special_tokens
    single = SamplingParams(stop="\n\n", stop_token_ids=[3, 4])
    assert single.stop == ("\n\n",) and single.stop_token_ids == (3, 4)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(temperature=0).greedy and SamplingParams(temperature=1e-6).greedy
    assert not SamplingParams(temperature=0.01).greedy


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", -0.5, r"temperature must be a finite number >= 0, got -0.5"),
        ("temperature", float("inf"), r"temperature must be a finite number >= 0, got inf"),
        ("temperature", "hot", r"temperature must be a finite number >= 0, got 'hot'"),
        ("top_p", 0.0, r"top_p must be a number in \(0, 1\], got 0.0"),
        ("top_p", 1.5, r"top_p must be a number in \(0, 1\], got 1.5"),
        ("top_k", -1, r"top_k must be an integer >= 0 \(0 keeps every token\), got -1"),
        ("top_k", 2.0, r"top_k must be an integer >= 0 \(0 keeps every token\), got 2.0"),
        ("max_tokens", 0, r"max_tokens must be an integer >= 1, got 0"),
        ("max_tokens", True, r"max_tokens must be an integer >= 1, got True"),
        ("seed", -3, r"seed must be an integer >= 0 or None, got -3"),
        ("stop", ["ok", ""], r"stop must hold non-empty strings, got '' in \('ok', ''\)"),
        ("stop", [7], r"stop must hold non-empty strings, got 7"),
        ("stop_token_ids", [1, -2], r"stop_token_ids must hold ids >= 0, got -2"),
        ("ignore_eos", "yes", r"ignore_eos must be True or False, got 'yes'"),
        ("logits_processors", [42], r"logits_processors must hold callables, got 42"),
    ],
)
def test_bad_params_name_the_field_and_the_value(field: str, value: Any, message: str) -> None:
    with pytest.raises(SamplingParamsError, match=message) as caught:
        SamplingParams(**{field: value})
    assert isinstance(caught.value, EngineError) and isinstance(caught.value, ValueError)


def test_greedy_rows_take_the_argmax_and_never_draw() -> None:
    logits = _logits(4)
    greedy = SamplingParams(temperature=0, seed=3)
    assert request_generator(greedy, logits.device) is None
    assert sample(logits.clone(), [greedy] * 4, [None] * 4) == logits.argmax(dim=-1).tolist()


def test_top_k_one_and_a_tiny_top_p_are_greedy_at_any_temperature() -> None:
    logits = _logits(6, seed=1)
    expected = logits.argmax(dim=-1).tolist()
    for params in (SamplingParams(temperature=2.0, top_k=1, seed=0), SamplingParams(temperature=2.0, top_p=1e-6)):
        for row in range(6):
            assert set(_draws(logits[row], params, 20)) == {expected[row]}


def test_top_k_and_top_p_restrict_the_draws_to_the_kept_tokens() -> None:
    logits = torch.full((VOCAB,), -5.0)
    logits[[7, 11, 19, 23]] = torch.tensor([2.0, 1.9, 1.8, 1.7])  # four likely tokens, the rest negligible
    assert set(_draws(logits, SamplingParams(top_k=2, seed=1), 200)) == {7, 11}
    # softmax of the four is ~[.28, .26, .23, .21]: the first two hold .54 < .6, so three stay
    assert set(_draws(logits, SamplingParams(top_p=0.6, seed=2), 300)) == {7, 11, 19}


def test_draw_frequencies_follow_the_tempered_softmax() -> None:
    logits = torch.full((VOCAB,), -30.0)
    logits[:3] = torch.tensor([0.0, -0.5, -1.0])
    for temperature in (0.5, 1.0):
        draws = _draws(logits, SamplingParams(temperature=temperature, seed=11), 3000)
        expected = (logits[:3] / temperature).softmax(dim=-1)
        observed = torch.tensor([draws.count(t) / len(draws) for t in range(3)])
        torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)


def test_a_seed_reproduces_its_draws_and_other_seeds_differ() -> None:
    logits = _logits(1, seed=2)[0] / 3  # flat enough that draws vary
    runs = {seed: _draws(logits, SamplingParams(seed=seed), 30) for seed in (1, 1, 2, 3)}
    assert _draws(logits, SamplingParams(seed=1), 30) == runs[1]
    assert len({tuple(runs[seed]) for seed in (1, 2, 3)}) == 3


def test_each_row_draws_from_its_own_generator_whatever_its_neighbours() -> None:
    logits = _logits(3, seed=4) / 3
    seeded = SamplingParams(seed=9)
    alone = _draws(logits[1], seeded, 10)
    others = [SamplingParams(temperature=0), seeded, SamplingParams(seed=10)]
    generators = [request_generator(p, logits.device) for p in others]
    batched = [sample(logits.clone(), others, generators)[1] for _ in range(10)]
    assert batched == alone
