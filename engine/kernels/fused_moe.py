"""Fused mixture of experts for the routed experts: one grouped GEMM for gate and up, one for down.

The (token, expert) pairs are sorted by expert and each expert's rows padded to the kernel's row block, so a
program owns `block_m` rows of one expert: experts that drew no token own no block and cost nothing. The
first kernel computes `silu(gate) * up` from a stacked `[E, 2I, D]` gate/up weight, the second the down
projection `[E, D, I]` scaled by the routing weight (fp32) into one row per pair; summing a token's K rows
gives `[N, D]` fp32. Block-fp8 experts run in one of two ways. Weight-only (the default, and the model's CPU
numerics): each weight tile is dequantised in the kernel (fp8 x its block's scale in fp32, rounded to the
compute dtype) and multiplied with compute-dtype activations; that reads half of bf16's bytes, which is what
bandwidth-bound decode pays for. With `fp8_activations` (the model's GPU numerics, `Fp8Linear` through
`engine.kernels.fp8_linear`): x and the SiLU product are quantised per token per 128 channels and both
operands go to the fp8 tensor cores, each tile's fp32 partial sum scaled by both scales: what
compute-bound prefill pays for.

`fused_moe_reference` is the torch path and computes exactly what the model's grouped MoE computes.
Shapes: N tokens, K experts per token, E routed experts, D hidden, I expert intermediate width.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import Fp8ShapeError, ModelInputError
from engine.fp8 import FP8_DTYPE, dequantize_block_fp8, fp8_block_matmul, scale_grid_shape
from engine.kernels.select import use_kernels

_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
MAX_TOKENS_PER_LAUNCH = 4096
"""Longer inputs run in slices, bounding the per-pair fp32 output ([tokens * K, D]) the kernels write."""


@dataclass(frozen=True)
class StackedExperts:
    """The routed experts' weights stacked along a leading expert axis, as the grouped kernels read them."""

    gate_up: torch.Tensor
    """[E, 2I, D]: expert e's gate rows, then its up rows."""
    down: torch.Tensor
    """[E, D, I]."""
    dtype: torch.dtype
    """Compute dtype: activations, dequantised weights and each projection's rounded output."""
    block: tuple[int, int] | None = None
    """Block-fp8 block size (rows, columns); None for plain weights."""
    gate_up_scale: torch.Tensor | None = None
    """[E, 2 * ceil(I/rows), ceil(D/columns)] fp32: gate's scale grid, then up's (each ragged on its own)."""
    down_scale: torch.Tensor | None = None
    """[E, ceil(D/rows), ceil(I/columns)] fp32."""

    def __post_init__(self) -> None:
        e, two_i, d = self.gate_up.shape
        if two_i % 2 or tuple(self.down.shape) != (e, d, two_i // 2):
            raise ModelInputError(
                f"gate_up [E, 2I, D] and down [E, D, I] disagree: {tuple(self.gate_up.shape)}, {tuple(self.down.shape)}"
            )
        if self.block is None:
            return
        if self.gate_up_scale is None or self.down_scale is None:
            raise Fp8ShapeError("block-fp8 experts need gate_up_scale and down_scale")
        half = scale_grid_shape((two_i // 2, d), self.block)
        for name, scale, grid in (
            ("gate_up_scale", self.gate_up_scale, (e, 2 * half[0], half[1])),
            ("down_scale", self.down_scale, (e, *scale_grid_shape((d, two_i // 2), self.block))),
        ):
            if tuple(scale.shape) != grid:
                raise Fp8ShapeError(f"{name} must have shape {grid}, got {tuple(scale.shape)}")

    @property
    def num_experts(self) -> int:
        return int(self.gate_up.shape[0])

    @property
    def intermediate(self) -> int:
        return int(self.down.shape[2])

    def projections(self, expert: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Expert `expert`'s gate, up and down weights, each with its scale grid (None for plain weights)."""
        inter = self.intermediate
        weights = [self.gate_up[expert, :inter], self.gate_up[expert, inter:], self.down[expert]]
        if self.gate_up_scale is None or self.down_scale is None:
            return [(w, None) for w in weights]
        rows = self.gate_up_scale.shape[1] // 2
        scales = [self.gate_up_scale[expert, :rows], self.gate_up_scale[expert, rows:], self.down_scale[expert]]
        return list(zip(weights, scales, strict=True))


@dataclass(frozen=True)
class _Projection:
    """What `stack_experts` reads off one projection module, plain or block fp8."""

    weight: torch.Tensor
    scale: torch.Tensor | None
    block: tuple[int, int] | None
    dtype: torch.dtype
    """The compute dtype: the weight's own, or `Fp8Linear.compute_dtype` for block fp8."""

    @classmethod
    def of(cls, module: nn.Module) -> _Projection:
        weight, scale, block, dtype = (
            getattr(module, name, None) for name in ("weight", "weight_scale_inv", "block", "compute_dtype")
        )
        assert isinstance(weight, torch.Tensor)
        if weight.dtype != FP8_DTYPE:
            return cls(weight, None, None, weight.dtype)
        assert isinstance(scale, torch.Tensor) and isinstance(block, tuple) and isinstance(dtype, torch.dtype)
        return cls(weight, scale, (int(block[0]), int(block[1])), dtype)

    def scale_grid(self) -> torch.Tensor:
        assert self.scale is not None
        return self.scale.float()


def stack_experts(experts: Iterable[nn.Module]) -> StackedExperts:
    """Copy the model's expert `MLP`s (plain `Linear` or `Fp8Linear` projections) into stacked tensors."""
    parts = [[_Projection.of(mlp.get_submodule(name)) for name in _PROJECTIONS] for mlp in experts]
    if not parts:
        raise ModelInputError("stack_experts needs at least one expert")
    kinds = {(p.block, p.dtype) for mlp_parts in parts for p in mlp_parts}
    if len(kinds) != 1:
        raise ModelInputError(f"experts mix fp8 blocks or compute dtypes: {sorted(map(str, kinds))}")
    block, dtype = kinds.pop()
    gate_up = torch.stack([torch.cat([gate.weight, up.weight]) for gate, up, _ in parts])
    down = torch.stack([down.weight for _, _, down in parts])
    if block is None:
        return StackedExperts(gate_up, down, dtype=dtype)
    gate_up_scale = torch.stack([torch.cat([gate.scale_grid(), up.scale_grid()]) for gate, up, _ in parts])
    down_scale = torch.stack([down.scale_grid() for _, _, down in parts])
    return StackedExperts(gate_up, down, dtype, block, gate_up_scale, down_scale)


def share_stacked_storage(experts: Iterable[nn.Module], stacked: StackedExperts) -> None:
    """Point each expert's parameters at its slices of `stacked` (from `stack_experts(experts)`), so that the
    per-expert modules (the model's torch paths, the checkpoint's names) and the stacks hold one copy."""
    experts = list(experts)
    if len(experts) != stacked.num_experts:
        raise ModelInputError(f"{len(experts)} experts but {stacked.num_experts} stacked")
    for expert, mlp in enumerate(experts):
        for name, (weight, scale) in zip(_PROJECTIONS, stacked.projections(expert), strict=True):
            module = mlp.get_submodule(name)
            module.weight = nn.Parameter(weight, requires_grad=False)
            if scale is not None:
                module.weight_scale_inv = nn.Parameter(scale, requires_grad=False)


def fused_moe_reference(
    x: torch.Tensor,
    weights: torch.Tensor,
    indices: torch.Tensor,
    experts: StackedExperts,
    *,
    fp8_activations: bool = False,
) -> torch.Tensor:
    """The torch path: the model's grouped MoE (`MoE._grouped`) over stacked weights, [N, D] fp32.

    With `fp8_activations` each projection is `engine.fp8.fp8_block_matmul` (activations quantised per token
    per 128 channels) instead of the weight-only product.
    """
    _check_activations(experts, fp8_activations)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    if indices.numel() == 0:
        return out
    x = x.to(experts.dtype)
    top_k = indices.shape[1]
    order = indices.flatten().argsort(stable=True)  # [N*K], grouped by expert
    counts = torch.bincount(indices.flatten(), minlength=experts.num_experts)
    active = counts.nonzero().flatten()
    token = order // top_k
    chunks = x[token].split(counts[active].tolist())
    outputs = [
        _expert_reference(chunk, experts, expert, fp8_activations).float()
        for expert, chunk in zip(active.tolist(), chunks, strict=True)
    ]
    routed = torch.cat(outputs) * weights.flatten()[order, None]
    return out.index_add_(0, token, routed)


def _expert_reference(x: torch.Tensor, experts: StackedExperts, expert: int, fp8_activations: bool) -> torch.Tensor:
    """down(silu(gate(x)) * up(x)) for one expert, each projection as the model's `Linear` or `Fp8Linear` runs it."""

    def project(a: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        if scale is None or experts.block is None:
            return F.linear(a, weight)
        if fp8_activations:
            return fp8_block_matmul(a, weight, scale, experts.block)
        return F.linear(a, dequantize_block_fp8(weight, scale, experts.block, experts.dtype))

    gate, up, down = experts.projections(expert)
    return project(F.silu(project(x, *gate)) * project(x, *up), *down)


def _check_activations(experts: StackedExperts, fp8_activations: bool) -> None:
    if fp8_activations and experts.block is None:
        raise ModelInputError("fp8_activations needs block-fp8 experts; these have plain weights")


def fused_moe(
    x: torch.Tensor,
    weights: torch.Tensor,
    indices: torch.Tensor,
    experts: StackedExperts,
    *,
    fp8_activations: bool = False,
) -> torch.Tensor:
    """Routed experts' weighted sum for x [N, D] with routing weights [N, K] fp32 and ids [N, K]: [N, D] fp32.

    The Triton kernels where `engine.kernels.select` says so (a CUDA device), else `fused_moe_reference`.
    `fp8_activations` (block-fp8 experts only) quantises x and the SiLU product per token per 128 channels
    and multiplies in fp8, as the model's `Fp8Linear` does on a GPU: compute-bound prefill runs on the fp8
    tensor cores. Without it the weights alone are fp8, which is all that bandwidth-bound decode needs.
    """
    _check_activations(experts, fp8_activations)
    if not use_kernels(x.device):
        return fused_moe_reference(x, weights, indices, experts, fp8_activations=fp8_activations)
    from engine.kernels import _fused_moe_triton

    return torch.cat(
        [
            _fused_moe_triton.fused_moe_triton(
                x[start : start + MAX_TOKENS_PER_LAUNCH],
                weights[start : start + MAX_TOKENS_PER_LAUNCH],
                indices[start : start + MAX_TOKENS_PER_LAUNCH],
                experts,
                fp8_activations,
            )
            for start in range(0, max(x.shape[0], 1), MAX_TOKENS_PER_LAUNCH)
        ]
    )
