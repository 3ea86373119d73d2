"""Chunked prefill on a real tiny fp32 checkpoint: prompts fed through the paged cache a few tokens per step, mixed
in one flattened pass with other sequences, give the logits and greedy tokens of one full pass, for both attention
forms; bad budgets are refused.

Budgets of 1, 3 and 5 tokens over prompts of 4, 13 and 9 tokens put chunk borders inside the prompts, on their
ends and across two sequences in one pass, so every way a chunk can see earlier slots is exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from engine.errors import ModelInputError
from engine.llm import LLM
from engine.models.deepseek_v3 import AttentionForm
from engine.sampling import SamplingParams
from engine.tiny import make_tiny

PROMPTS = [tuple(range(200, 204)), tuple(range(300, 313)), tuple(range(400, 409))]
STEPS = 12
GREEDY = SamplingParams(temperature=0, max_tokens=STEPS, ignore_eos=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "k2", dtype="fp32", seed=1)


def _first_logits(llm: LLM) -> list[torch.Tensor]:
    """The logits each prompt's first token is sampled from, captured by a logits processor."""
    seen: dict[int, torch.Tensor] = {}

    def capture(index: int) -> Any:
        def processor(output: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
            if not output:
                seen[index] = logits.clone()
            return logits

        return processor

    params = [SamplingParams(temperature=0, max_tokens=1, logits_processors=[capture(i)]) for i in range(len(PROMPTS))]
    llm.generate([list(p) for p in PROMPTS], params)
    return [seen[i] for i in range(len(PROMPTS))]


def _one_pass_logits(llm: LLM, prompt: tuple[int, ...]) -> torch.Tensor:
    """The unchunked reference: the prompt alone through the model, no cache; vocabulary cut as the engine does."""
    with torch.inference_mode():
        logits = llm.model(torch.tensor([prompt]), torch.arange(len(prompt))[None])[0, -1]
        logits[llm.tokenizer.vocab_size :] = float("-inf")
    return logits


@pytest.mark.parametrize("form", ["plain", "absorbed"])
@pytest.mark.parametrize("budget", [1, 3, 5])
def test_chunked_prefill_logits_match_one_pass(checkpoint: Path, form: AttentionForm, budget: int) -> None:
    llm = LLM(checkpoint, dtype="float32", attention=form, max_num_batched_tokens=budget)
    chunked = _first_logits(llm)
    for prompt, logits in zip(PROMPTS, chunked, strict=True):
        torch.testing.assert_close(logits, _one_pass_logits(llm, prompt), rtol=0, atol=1e-5)
    assert not torch.equal(chunked[0], chunked[1]), "rows must be different prompts, not one broadcast"


def _pass_sizes(llm: LLM) -> list[int]:
    """The tokens in every decoder pass that prefilling the prompts makes (one token sampled each)."""
    sizes: list[int] = []

    def record(_: nn.Module, args: tuple[Any, ...]) -> None:
        sizes.append(args[0].shape[1])

    handle = llm.model.model.register_forward_pre_hook(record)
    try:
        llm.generate([list(p) for p in PROMPTS], SamplingParams(temperature=0, max_tokens=1))
    finally:
        handle.remove()
    return sizes


def test_each_pass_takes_at_most_the_token_budget_and_one_pass_when_it_covers_the_prompts(checkpoint: Path) -> None:
    total = sum(map(len, PROMPTS))  # 26
    assert _pass_sizes(LLM(checkpoint, dtype="float32", max_num_batched_tokens=5)) == [5] * 5 + [1]
    assert _pass_sizes(LLM(checkpoint, dtype="float32", max_num_batched_tokens=total)) == [total]
    assert _pass_sizes(LLM(checkpoint, dtype="float32", max_num_batched_tokens=4096)) == [total]


@pytest.mark.parametrize("form", ["plain", "absorbed"])
def test_greedy_tokens_do_not_depend_on_the_token_budget(checkpoint: Path, form: AttentionForm) -> None:
    params = [GREEDY, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True), GREEDY]
    outputs = {
        budget: LLM(checkpoint, dtype="float32", attention=form, max_num_batched_tokens=budget).generate(
            [list(p) for p in PROMPTS], params
        )
        for budget in (3, 5, 1024)
    }
    unchunked = [out.token_ids for out in outputs[1024]]
    assert [len(t) for t in unchunked] == [STEPS, 5, STEPS]
    assert len(set(unchunked[1])) > 1
    for budget in (3, 5):
        assert [out.token_ids for out in outputs[budget]] == unchunked, f"budget {budget}"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
def test_an_invalid_token_budget_is_refused_naming_the_field(checkpoint: Path, bad: object) -> None:
    message = rf"max_num_batched_tokens must be a positive integer, got {bad!r}"
    with pytest.raises(ModelInputError, match=message):
        LLM(checkpoint, dtype="float32", max_num_batched_tokens=bad)  # type: ignore[arg-type]
