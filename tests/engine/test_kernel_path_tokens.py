"""The whole engine on its kernel path against its reference path on a tiny model.

`KCODE_KERNELS=triton` sends every layer through the GPU kernels (fused MoE, MLA decode over the paged cache,
fp8 linear), here run by Triton's interpreter on the CPU; `reference` takes the torch paths. Short prompts
keep the interpreter's cost down while decoding crosses block boundaries of the paged cache.

In fp32 both paths compute the same numbers up to summation order, so greedy tokens agree exactly. With fp8
weights they differ by design: the kernel path also quantises activations per token per 128 channels (what
fp8 tensor cores take), the reference dequantises the weights only; there the first logits must agree to
within what that quantisation costs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
pytest.importorskip("triton")

from engine.cuda_graphs import DecodeGraphs
from engine.llm import LLM
from engine.models.deepseek_v3 import MoE
from engine.sampling import SamplingParams
from engine.tiny import make_tiny

PROMPTS = [[11, 12, 13], [40, 41, 42, 43, 44, 45, 46]]


def _run(llm: LLM, monkeypatch: pytest.MonkeyPatch, mode: str) -> tuple[list[tuple[int, ...]], list[torch.Tensor]]:
    """Greedy tokens of each prompt, and the logits its first token was drawn from."""
    monkeypatch.setenv("KCODE_KERNELS", mode)
    first: list[torch.Tensor] = []

    def capture(output: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if not output:
            first.append(logits.clone())
        return logits

    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logits_processors=[capture])
    tokens = [out.token_ids for out in llm.generate(PROMPTS, params)]
    return tokens, first


def test_greedy_tokens_agree_between_the_kernel_and_reference_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = LLM(make_tiny(tmp_path / "k2", dtype="fp32", seed=1), dtype="float32", block_size=4)
    reference, _ = _run(llm, monkeypatch, "reference")
    kernels, _ = _run(llm, monkeypatch, "triton")
    assert kernels == reference
    assert all(len(set(tokens)) > 3 for tokens in reference), "a collapsed continuation would test little"
    assert "engine.kernels._fused_moe_triton" in sys.modules, "the Triton kernels must really have run"
    moes = [layer.mlp for layer in llm.model.model.layers if isinstance(layer.mlp, MoE)]
    assert moes and all(m._stacked_experts()[1] for m in moes), "K2's one shared expert is folded into the kernel"


def test_fp8_weights_on_the_kernel_path_stay_within_activation_quantisation_of_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = LLM(make_tiny(tmp_path / "k2", dtype="fp8", seed=1), dtype="float32", block_size=4, keep_fp8=True)
    _, reference = _run(llm, monkeypatch, "reference")
    _, kernels = _run(llm, monkeypatch, "triton")
    assert "engine.kernels._fp8_linear_triton" in sys.modules
    for ours, theirs in zip(kernels, reference, strict=True):
        scale = theirs[torch.isfinite(theirs)].abs().max()
        error = (ours - theirs)[torch.isfinite(theirs)].abs()
        # measured: max 4.4 % and mean 1.0 % of the largest logit; a broken kernel is off by the logits' size
        assert error.max() < 0.15 * scale and error.mean() < 0.03 * scale, "more than fp8 rounding explains"
        assert error.max() > 0, "the kernel path must have quantised the activations"


def test_decode_steps_through_static_graph_buffers_give_the_same_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA-graph step run eagerly (no GPU here): padded batch sizes, the scratch block, block tables
    rewritten every step and a batch too big for any graph all leave every sequence's tokens unchanged."""
    llm = LLM(make_tiny(tmp_path / "k2", dtype="fp32", seed=1), dtype="float32", block_size=4)
    prompts = [*PROMPTS, [7, 8, 9, 10, 11], [90], [5, 6]]
    reference = _tokens(llm, monkeypatch, "reference", prompts)
    graphs = DecodeGraphs(llm.model, llm.core.runner.cache, max_batch=4, max_model_len=llm.max_model_len,
                          capture=False)
    llm.core.runner.graphs = graphs
    for batch in ([prompts[0]], prompts[:3], prompts):  # one row; three rows padded to 4; five: too many
        expected = [reference[prompts.index(p)] for p in batch]
        assert _tokens(llm, monkeypatch, "triton", batch) == expected
    assert sorted(graphs._steps) == [1, 4]


def _tokens(llm: LLM, monkeypatch: pytest.MonkeyPatch, mode: str, prompts: list[list[int]]) -> list[tuple[int, ...]]:
    monkeypatch.setenv("KCODE_KERNELS", mode)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    return [out.token_ids for out in llm.generate(prompts, params)]
