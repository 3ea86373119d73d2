"""Block fp8 (e4m3) quantisation in plain torch: the references the GPU kernels are checked against.

Checkpoint weights `[N, K]` carry one fp32 `weight_scale_inv` per (128 x 128) block, shape
`[ceil(N/128), ceil(K/128)]`; edge blocks are ragged (`kv_a_proj_with_mqa` is 576 x 7168). On the CPU the
model's `Fp8Linear` keeps weights in fp8 and dequantises them on the fly (weight-only). On a GPU it also
quantises activations (`activation_scheme: dynamic`, one scale per token per 128 channels) and multiplies in
fp8 (`engine.kernels.fp8_linear`); `quantize_activation_fp8`, `fp8_block_gemm` and `fp8_block_matmul` are
what those kernels compute, in fp32.
"""

from __future__ import annotations

import torch

from engine.errors import Fp8ShapeError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
"""Largest finite e4m3fn value; a block's absolute maximum maps onto it."""
DEFAULT_BLOCK = (128, 128)


def scale_grid_shape(shape: tuple[int, int], block: tuple[int, int] = DEFAULT_BLOCK) -> tuple[int, int]:
    """Shape of the scale grid covering a `shape` weight, ragged edge blocks included."""
    return (-(-shape[0] // block[0]), -(-shape[1] // block[1]))


def _blocked(x: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """[N, K] -> zero-padded [ceil(N/bn), bn, ceil(K/bk), bk] view of the blocks."""
    rows, cols = scale_grid_shape((x.shape[0], x.shape[1]), block)
    padded = x.new_zeros(rows * block[0], cols * block[1])
    padded[: x.shape[0], : x.shape[1]] = x
    return padded.view(rows, block[0], cols, block[1])


def _safe_scale(amax: torch.Tensor) -> torch.Tensor:
    """amax / 448, with all-zero blocks given scale 1 so that quantising them never divides by zero."""
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def quantize_block_fp8(
    w: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a [N, K] weight to e4m3 with one fp32 scale per block: (weight fp8, scale_inv fp32)."""
    if w.dim() != 2:
        raise Fp8ShapeError(f"block quantisation takes a 2-D weight, got shape {tuple(w.shape)}")
    blocks = _blocked(w.float(), block)  # [R, bn, C, bk]
    scale = _safe_scale(blocks.abs().amax(dim=(1, 3)))  # [R, C]
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    q = q.view(scale.shape[0] * block[0], scale.shape[1] * block[1])
    return q[: w.shape[0], : w.shape[1]].contiguous(), scale


def dequantize_block_fp8(
    w_fp8: torch.Tensor,
    scale_inv: torch.Tensor,
    block: tuple[int, int] = DEFAULT_BLOCK,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """fp8 value x its block's scale, computed in fp32 and rounded once to `dtype`."""
    if w_fp8.dim() != 2:
        raise Fp8ShapeError(f"block dequantisation takes a 2-D weight, got shape {tuple(w_fp8.shape)}")
    expected = scale_grid_shape((w_fp8.shape[0], w_fp8.shape[1]), block)
    if tuple(scale_inv.shape) != expected:
        raise Fp8ShapeError(
            f"weight {tuple(w_fp8.shape)} with block {block} needs scale_inv {expected}, "
            f"got {tuple(scale_inv.shape)}"
        )
    blocks = _blocked(w_fp8.float(), block) * scale_inv.float()[:, None, :, None]
    full = blocks.view(expected[0] * block[0], expected[1] * block[1])
    return full[: w_fp8.shape[0], : w_fp8.shape[1]].to(dtype)


def quantize_activation_fp8(x: torch.Tensor, group: int = DEFAULT_BLOCK[1]) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise [..., K] per token per `group` channels: (x fp8 [..., K], scale fp32 [..., ceil(K/group)])."""
    k = x.shape[-1]
    groups = -(-k // group)
    padded = x.float().new_zeros(*x.shape[:-1], groups * group)
    padded[..., :k] = x.float()
    grouped = padded.view(*x.shape[:-1], groups, group)
    scale = _safe_scale(grouped.abs().amax(dim=-1))  # [..., groups]
    q = (grouped / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q.view(*x.shape[:-1], groups * group)[..., :k].contiguous(), scale


def dequantize_activation_fp8(x_fp8: torch.Tensor, scale: torch.Tensor, group: int = DEFAULT_BLOCK[1]) -> torch.Tensor:
    """Inverse of `quantize_activation_fp8`, in fp32."""
    k = x_fp8.shape[-1]
    expanded = scale.float().repeat_interleave(group, dim=-1)[..., :k]
    return x_fp8.float() * expanded


def fp8_block_gemm(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    block: tuple[int, int] = DEFAULT_BLOCK,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """[M, K] x [N, K] -> [M, N] of already quantised operands: both dequantised to fp32, multiplied, rounded
    once to `out_dtype`."""
    x = dequantize_activation_fp8(x_fp8, x_scale, block[1])
    return (x @ dequantize_block_fp8(w_fp8, w_scale, block).T).to(out_dtype)


def fp8_block_matmul(
    x: torch.Tensor, w_fp8: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> torch.Tensor:
    """`x @ W.T` as a dynamic-activation fp8 GEMM computes it, returned in x's dtype: the activations are
    quantised per token per `block[1]` channels, then `fp8_block_gemm` accumulates in fp32."""
    if x.shape[-1] != w_fp8.shape[1]:
        raise Fp8ShapeError(f"x has {x.shape[-1]} channels but the weight takes {w_fp8.shape[1]}")
    x_q, x_scale = quantize_activation_fp8(x, block[1])
    return fp8_block_gemm(x_q, x_scale, w_fp8, scale_inv, block, x.dtype)
