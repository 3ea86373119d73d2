"""The fused MoE kernels against their torch reference, and the reference against the model's grouped MoE.

The kernels run in Triton's interpreter on the CPU (`TRITON_INTERPRET=1`, set before triton is imported).
Tolerances: fp32 differs from the reference only in summation order (the K rows of a token, the dot's
reduction), so 1e-5 of the output's scale. In bf16 (and fp8 weights, computed in bf16) the kernel rounds
where torch does (each projection, the SiLU, the product); a different fp32 summation order may still move
one of those roundings by a bf16 step, which the sums after it dilute: one bf16 step (2^-8) of the output's
scale (measured: under 0.1 step; the interpreter's truncating bf16 cast, uncorrected, gives 4). With fp8
activations such a moved rounding can also change which fp8 value (3 mantissa bits) an element of the SiLU
product quantises to, or, at a row's largest element, the row's scale: a few rows then differ by up to a few
percent (measured: 2 of 2,560 products, 1.2 % of the output's scale at most, 0.08 % on average), so there
the bound is 2^-4 of the scale at most and 2^-8 of the mean magnitude on average.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

pytest.importorskip("triton")

from engine.config import ModelConfig
from engine.errors import ModelInputError
from engine.fp8 import FP8_DTYPE, quantize_block_fp8
from engine.kernels import fused_moe as fused_moe_module
from engine.kernels._fused_moe_triton import fused_moe_triton, sort_rows_by_expert
from engine.kernels.fused_moe import (
    StackedExperts,
    fused_moe,
    fused_moe_reference,
    share_stacked_storage,
    stack_experts,
)
from engine.models.deepseek_v3 import ModelOptions, MoE
from engine.tiny_weights import tiny_config
from tests.engine.conftest import VOCAB

BF16_STEP = 2.0**-8


@pytest.fixture(autouse=True)
def _kernels_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCODE_KERNELS", "triton")


def _stacked(kind: str, experts: int, inter: int, dim: int, seed: int) -> StackedExperts:
    """Random experts: fp32, bf16, or block-fp8 weights computed in bf16 (scale grids quantised per expert)."""
    generator = torch.Generator().manual_seed(seed)
    gate_up = 0.1 * torch.randn(experts, 2 * inter, dim, generator=generator)
    down = 0.1 * torch.randn(experts, dim, inter, generator=generator)
    if kind != "fp8":
        dtype = torch.float32 if kind == "fp32" else torch.bfloat16
        return StackedExperts(gate_up.to(dtype), down.to(dtype), dtype=dtype)

    def quantised(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [quantize_block_fp8(w) for w in weights]
        return torch.stack([q for q, _ in pairs]), torch.stack([s for _, s in pairs])

    gate, gate_scale = quantised(gate_up[:, :inter])
    up, up_scale = quantised(gate_up[:, inter:])
    down_q, down_scale = quantised(down)
    return StackedExperts(
        torch.cat([gate, up], dim=1), down_q, torch.bfloat16, (128, 128),
        torch.cat([gate_scale, up_scale], dim=1), down_scale,
    )  # fmt: skip


def _routing(tokens: int, experts: int, top_k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct experts per token, as the router's top-k gives, with fp32 weights."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.stack([torch.randperm(experts, generator=generator)[:top_k] for _ in range(tokens)])
    return torch.rand(tokens, top_k, generator=generator), indices


def _assert_matches(
    got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, *, fp8_activations: bool = False
) -> None:
    assert got.dtype == torch.float32 and got.shape == expected.shape
    error, scale = (got - expected).abs(), expected.abs().max().item()
    if fp8_activations:
        assert error.max().item() <= 2**-4 * scale
        assert error.mean().item() <= BF16_STEP * expected.abs().mean().item()
        return
    tolerance = 1e-5 * scale if dtype == torch.float32 else BF16_STEP * scale
    assert error.max().item() <= tolerance


def test_rows_are_sorted_by_expert_in_whole_blocks_and_empty_experts_get_none() -> None:
    indices = torch.tensor([[5, 1], [5, 2], [1, 5], [5, 6], [2, 5]])  # experts 0, 3, 4, 7 get nothing
    rows = sort_rows_by_expert(indices, num_experts=8, block_m=4)
    pairs = indices.numel()
    block_of_row = torch.arange(rows.pair_ids.numel()) // rows.block_m
    real = rows.pair_ids < pairs
    assert sorted(rows.pair_ids[real].tolist()) == list(range(pairs))
    assert torch.equal(indices.flatten()[rows.pair_ids[real].long()], rows.block_expert[block_of_row[real]].long())
    used = rows.block_expert[rows.block_expert < 8].tolist()
    assert used == [1, 2, 5, 5, 6]  # expert 5's five pairs fill two blocks of 4; each expert runs once, in order
    assert (rows.block_expert[len(used) :] == 8).all()  # spare blocks: no expert, the program returns at once


@pytest.mark.parametrize("kind", ["fp32", "bf16", "fp8", "fp8-activations"])
@pytest.mark.parametrize("tokens", [1, 7, 64])
def test_kernel_matches_the_reference(kind: str, tokens: int) -> None:
    # 200 and 136 are ragged against the 128 x 128 fp8 blocks and span two of them.
    experts = _stacked(kind.removesuffix("-activations"), experts=8, inter=136, dim=200, seed=tokens)
    weights, indices = _routing(tokens, experts=8, top_k=3, seed=tokens + 1)
    x = torch.randn(tokens, 200, generator=torch.Generator().manual_seed(tokens + 2)).to(experts.dtype)
    fp8_activations = kind == "fp8-activations"
    got = fused_moe(x, weights, indices, experts, fp8_activations=fp8_activations)
    expected = fused_moe_reference(x, weights, indices, experts, fp8_activations=fp8_activations)
    _assert_matches(got, expected, experts.dtype, fp8_activations=fp8_activations)


@pytest.mark.parametrize("kind", ["bf16", "fp8", "fp8-activations"])
def test_experts_without_tokens_and_every_token_on_one_expert(kind: str) -> None:
    experts = _stacked(kind.removesuffix("-activations"), experts=16, inter=64, dim=96, seed=3)
    fp8_activations = kind == "fp8-activations"
    x = torch.randn(40, 96, generator=torch.Generator().manual_seed(4)).to(experts.dtype)
    weights = torch.rand(40, 2, generator=torch.Generator().manual_seed(5))
    crowded = torch.tensor([[9, 2]] * 40)  # 14 experts idle, two take all 40 tokens (several row blocks each)
    alone = torch.tensor([[9]] * 40)
    for indices, route in ((crowded, weights), (alone, weights[:, :1])):
        expected = fused_moe_reference(x, route, indices, experts, fp8_activations=fp8_activations)
        got = fused_moe(x, route, indices, experts, fp8_activations=fp8_activations)
        _assert_matches(got, expected, experts.dtype, fp8_activations=fp8_activations)


def test_long_inputs_run_in_slices_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    experts = _stacked("bf16", experts=8, inter=32, dim=64, seed=6)
    weights, indices = _routing(40, experts=8, top_k=2, seed=7)
    x = torch.randn(40, 64, generator=torch.Generator().manual_seed(8)).to(torch.bfloat16)
    whole = fused_moe_triton(x, weights, indices, experts, fp8_activations=False)
    monkeypatch.setattr(fused_moe_module, "MAX_TOKENS_PER_LAUNCH", 16)
    assert torch.equal(fused_moe(x, weights, indices, experts), whole)


def test_large_batch_matches_the_reference() -> None:
    experts = _stacked("bf16", experts=8, inter=48, dim=64, seed=9)
    weights, indices = _routing(512, experts=8, top_k=2, seed=10)
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(11)).to(torch.bfloat16)
    _assert_matches(fused_moe(x, weights, indices, experts), fused_moe_reference(x, weights, indices, experts),
                    torch.bfloat16)  # fmt: skip


def _tiny_moe(options: ModelOptions) -> MoE:
    """The deepseek_v3 preset's MoE layer (16 experts, 4 per token, grouped routing), random weights."""
    moe = MoE(ModelConfig.from_hf(tiny_config("deepseek_v3", vocab_size=VOCAB)), options, device="cpu")
    generator = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for name, param in moe.named_parameters():
            values = torch.randn(param.shape, generator=generator)
            if name.endswith("weight_scale_inv"):
                values = 0.002 * (1 + values.abs())
            elif param.dtype == FP8_DTYPE:
                values = 40 * values
            else:
                values = 0.1 * values
            param.copy_(values)
    return moe


@pytest.mark.parametrize(
    "options",
    [
        ModelOptions(dtype=torch.float32),
        ModelOptions(dtype=torch.bfloat16),
        ModelOptions(dtype=torch.bfloat16, fp8_block=(128, 128)),
    ],
    ids=["fp32", "bf16", "fp8"],
)
def test_reference_is_the_models_grouped_moe_and_the_kernel_agrees(
    options: ModelOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KCODE_KERNELS", "reference")  # the model's torch path (its Fp8Linear has a kernel too)
    moe = _tiny_moe(options)
    flat = torch.randn(24, moe.gate.weight.shape[1], generator=torch.Generator().manual_seed(13)).to(options.dtype)
    with torch.no_grad():
        weights, indices = moe.gate(flat)
        expected = moe._grouped(flat, weights, indices)
        experts = stack_experts(moe.experts)
        assert torch.equal(fused_moe_reference(flat, weights, indices, experts), expected)
        monkeypatch.setenv("KCODE_KERNELS", "triton")
        _assert_matches(fused_moe(flat, weights, indices, experts), expected, options.dtype)


@pytest.mark.parametrize("fp8_block", [None, (128, 128)], ids=["bf16", "fp8"])
def test_experts_can_share_the_stacks_storage(fp8_block: tuple[int, int] | None) -> None:
    moe = _tiny_moe(ModelOptions(dtype=torch.bfloat16, fp8_block=fp8_block))
    flat = torch.randn(5, moe.gate.weight.shape[1], generator=torch.Generator().manual_seed(20)).bfloat16()
    with torch.no_grad():
        weights, indices = moe.gate(flat)
        before = moe._grouped(flat, weights, indices)
        stacked = stack_experts(moe.experts)
        share_stacked_storage(moe.experts, stacked)
        assert torch.equal(moe._grouped(flat, weights, indices), before)
    inter = stacked.intermediate
    assert moe.get_parameter("experts.3.up_proj.weight").data_ptr() == stacked.gate_up[3, inter:].data_ptr()
    assert moe.get_parameter("experts.5.down_proj.weight").data_ptr() == stacked.down[5].data_ptr()
    if stacked.gate_up_scale is not None:
        up_scale = moe.get_parameter("experts.3.up_proj.weight_scale_inv")
        assert up_scale.data_ptr() == stacked.gate_up_scale[3, stacked.gate_up_scale.shape[1] // 2 :].data_ptr()


def test_fp8_activations_match_the_models_gpu_numerics(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the kernels on, the model's `Fp8Linear` quantises activations (`engine.kernels.fp8_linear`): the
    fused MoE with `fp8_activations` computes the same MoE, and its reference is that path's torch twin."""
    moe = _tiny_moe(ModelOptions(dtype=torch.bfloat16, fp8_block=(128, 128)))
    flat = torch.randn(6, moe.gate.weight.shape[1], generator=torch.Generator().manual_seed(17)).bfloat16()
    with torch.no_grad():
        weights, indices = moe.gate(flat)
        expected = moe._grouped(flat, weights, indices)
        experts = stack_experts(moe.experts)
        reference = fused_moe_reference(flat, weights, indices, experts, fp8_activations=True)
        _assert_matches(reference, expected, torch.bfloat16, fp8_activations=True)
        got = fused_moe(flat, weights, indices, experts, fp8_activations=True)
        _assert_matches(got, expected, torch.bfloat16, fp8_activations=True)


def test_fp8_activations_need_fp8_experts() -> None:
    experts = _stacked("bf16", experts=4, inter=16, dim=32, seed=18)
    weights, indices = _routing(2, experts=4, top_k=2, seed=19)
    with pytest.raises(ModelInputError, match="block-fp8 experts"):
        fused_moe(torch.zeros(2, 32, dtype=torch.bfloat16), weights, indices, experts, fp8_activations=True)


def test_reference_mode_runs_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCODE_KERNELS", "reference")
    experts = _stacked("fp32", experts=4, inter=16, dim=32, seed=14)
    weights, indices = _routing(3, experts=4, top_k=2, seed=15)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(16))
    assert torch.equal(fused_moe(x, weights, indices, experts), fused_moe_reference(x, weights, indices, experts))


def test_mismatched_stacks_are_refused() -> None:
    with pytest.raises(ModelInputError, match="disagree"):
        StackedExperts(torch.zeros(2, 8, 6), torch.zeros(2, 6, 3), dtype=torch.float32)


_COMPILE_FOR_SM90 = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from engine.kernels import _fused_moe_triton as kernels

for weights_fp8, activations_fp8 in ((False, False), (True, False), (True, True)):
    activations = "*fp8e4nv" if activations_fp8 else "*bf16"
    pointers = {"x_ptr": activations, "h_ptr": activations, "w_ptr": "*fp8e4nv" if weights_fp8 else "*bf16",
                "out_ptr": "*fp32", "route_weight_ptr": "*fp32", "pair_ids_ptr": "*i32", "block_expert_ptr": "*i32"}
    constants = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "WEIGHTS_FP8": weights_fp8,
                 "ACTIVATIONS_FP8": activations_fp8, "SCALE_N": 128, "SCALE_K": 128,
                 "COMPUTE": tl.bfloat16, "PRECISION": "tf32", "INTERPRET": False}
    for kernel in (kernels._gate_up_kernel.fn, kernels._down_kernel.fn):
        scales = {name: "*fp32" for name in kernel.arg_names if name.endswith("scale_ptr")}
        signature = {name: "constexpr" if name in constants else (pointers | scales).get(name, "i32")
                     for name in kernel.arg_names}
        compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", 90, 32))
        assert ".entry" in compiled.asm["ptx"]
"""


def test_kernels_compile_for_hopper_without_a_gpu(tmp_path: Path) -> None:
    """The interpreter runs any Python; compiling to PTX for sm_90 checks the types and ops the GPU build takes."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(tmp_path)}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], env=env, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
