"""The grouped MoE route against the per-expert loop, at K2's expert count and with few tokens (a decode step)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from engine.config import ModelConfig
from engine.models.deepseek_v3 import ModelOptions, MoE, MoeForm
from engine.tiny_weights import tiny_config
from tests.engine.conftest import VOCAB

EXPERTS = 384


class _NoWalk(nn.ModuleList):
    """Experts that may be picked by index but not iterated: iterating is the per-step cost being removed."""

    def __init__(self, modules: nn.ModuleList):
        super().__init__(modules)
        self.picked: list[int] = []

    def __iter__(self) -> Iterator[nn.Module]:
        raise AssertionError("the grouped MoE walked all experts")

    def __getitem__(self, index: int) -> nn.Module:  # type: ignore[override]
        self.picked.append(index)
        return super().__getitem__(index)


def _moe(form: MoeForm) -> MoE:
    raw = {**tiny_config("k2", vocab_size=VOCAB), "n_routed_experts": EXPERTS}
    moe = MoE(ModelConfig.from_hf(raw), ModelOptions(dtype=torch.float32, moe=form), device="cpu")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in moe.parameters():
            param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return moe


def test_grouped_moe_runs_only_the_active_experts_and_matches_the_loop_bit_for_bit() -> None:
    loop, grouped = _moe("loop"), _moe("grouped")
    x = torch.randn(1, 3, loop.gate.weight.shape[1], generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = loop(x)
        grouped.experts = _NoWalk(grouped.experts)
        got = grouped(x)
        _, indices = grouped.gate(x.flatten(0, 1))
    assert torch.equal(got, expected)
    active = sorted(set(indices.flatten().tolist()))
    assert grouped.experts.picked == active
    assert len(active) < EXPERTS
