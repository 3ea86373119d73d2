"""Block-fp8 linear layers on the GPU: activation quantisation, the block-fp8 GEMM and `fp8_linear` choosing.

`fp8_linear(x, weight_fp8, weight_scale_inv, block)` is what the model's `Fp8Linear` calls. On the CPU (and
whenever `engine.kernels.select` says so) it runs `fp8_linear_reference`, which is exactly what `Fp8Linear`
did before: dequantise the weight to x's dtype, then `F.linear` (weight-only fp8). On a kernel device both
operands run in fp8, as K2's `activation_scheme: dynamic` intends: the activations are quantised per token per
128 channels (Triton), then multiplied by `torch._scaled_mm` with block-wise scales where this torch and GPU
run it correctly (probed once per device and dtype) and the shape suits cuBLAS, by our Triton GEMM otherwise
(K2's 576-row `kv_a_proj_with_mqa`, other GPUs, older torch).

Each kernel has a plain torch reference with the same signature: `engine.fp8.quantize_activation_fp8` for
`quantize_activation_fp8_triton`, `engine.fp8.fp8_block_gemm` for `fp8_block_gemm_triton`. Triton is imported
only inside the launchers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.errors import Fp8ShapeError
from engine.fp8 import (
    DEFAULT_BLOCK,
    FP8_DTYPE,
    dequantize_block_fp8,
    fp8_block_matmul,
    quantize_block_fp8,
    scale_grid_shape,
)
from engine.kernels.select import use_kernels

SCALED_MM_BLOCK = (128, 128)
"""The only block `torch._scaled_mm` scales by: 1 x 128 for activations, 128 x 128 for weights."""
_SCALED_MM_ROW_MULTIPLE = 4
"""Activation rows are padded to this multiple for `_scaled_mm`, a precaution (it costs a few zero rows): each
column of the column-major scales then starts 16-byte aligned, as cuBLAS wants its other scale layouts."""
_QUANT_GROUPS_PER_PROGRAM = 16

_scaled_mm_verdicts: dict[tuple[torch.device, torch.dtype], bool] = {}


def fp8_linear_reference(
    x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> torch.Tensor:
    """x [..., K] @ W.T with W dequantised to x's dtype: weight-only fp8, the CPU path."""
    return F.linear(x, dequantize_block_fp8(weight_fp8, weight_scale_inv, block, x.dtype))


def fp8_linear(
    x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> torch.Tensor:
    """x [..., K] @ W.T -> [..., N] in x's dtype, for a block-fp8 weight W [N, K] with scales
    [ceil(N/block[0]), ceil(K/block[1])]: the kernels on a kernel device, else `fp8_linear_reference`."""
    if not use_kernels(x.device):
        return fp8_linear_reference(x, weight_fp8, weight_scale_inv, block)
    n, k = _check_weight(weight_fp8, weight_scale_inv, block)
    if x.shape[-1] != k:
        raise Fp8ShapeError(f"x has {x.shape[-1]} channels but the weight takes {k}")
    rows = x.reshape(-1, k)
    if rows.shape[0] == 0:
        return x.new_empty(*x.shape[:-1], n)
    if x.device.type == "cuda" and scaled_mm_fits(n, k, block) and scaled_mm_supported(x.device, x.dtype):
        out = _scaled_mm_linear(rows, weight_fp8, weight_scale_inv)
    else:
        x_fp8, x_scale = quantize_rows_fp8(rows, block[1])
        out = fp8_block_gemm_triton(x_fp8, x_scale, weight_fp8, weight_scale_inv, block, x.dtype)
    return out.view(*x.shape[:-1], n)


def scaled_mm_fits(n: int, k: int, block: tuple[int, int]) -> bool:
    """Whether a [N, K] weight suits block-wise `torch._scaled_mm`: 128 x 128 blocks, N a whole number of
    blocks, and K a whole number of 4-block groups: cuBLAS reads the weight scales' rows padded to 4 blocks,
    which `torch._scaled_mm`'s unpadded layout cannot express (pytorch PR 166752: other K summed wrongly)."""
    return tuple(block) == SCALED_MM_BLOCK and n % 128 == 0 and k % (4 * 128) == 0


def scaled_mm_supported(device: torch.device, out_dtype: torch.dtype) -> bool:
    """Whether block-wise `torch._scaled_mm` runs, and runs right, on `device` with `out_dtype` output.

    Asked once per (device, dtype) by a small product against the reference, then cached: it needs cuBLAS 12.9
    and a Hopper GPU, and its layout rules have changed between torch releases. The first call synchronises,
    so make one (any `fp8_linear` on the device does) before capturing CUDA graphs.
    """
    key = (device, out_dtype)
    if key not in _scaled_mm_verdicts:
        _scaled_mm_verdicts[key] = device.type == "cuda" and hasattr(torch, "_scaled_mm") and _probe_scaled_mm(
            device, out_dtype
        )
    return _scaled_mm_verdicts[key]


def _probe_scaled_mm(device: torch.device, out_dtype: torch.dtype) -> bool:
    """Multiply 5 x 512 by a 256 x 512 weight whose blocks and groups all have different scales (so a
    transposed or misaligned scale shows) and compare with the reference."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 512, generator=generator) * torch.arange(1, 5).repeat_interleave(128)
    w = torch.randn(256, 512, generator=generator) * torch.arange(1, 3).repeat_interleave(128)[:, None]
    w = w * torch.arange(1, 5).repeat_interleave(128) / 8
    x, w = x.to(device, out_dtype), w.to(device)
    w_fp8, w_scale = quantize_block_fp8(w)
    try:
        got = _scaled_mm_linear(x, w_fp8, w_scale).float()
    except (RuntimeError, NotImplementedError, ValueError):
        return False
    want = fp8_block_matmul(x.float(), w_fp8, w_scale)
    return bool(torch.allclose(got, want, rtol=2e-2, atol=2e-2 * float(want.abs().max())))


def _scaled_mm_linear(rows: torch.Tensor, weight_fp8: torch.Tensor, weight_scale_inv: torch.Tensor) -> torch.Tensor:
    """rows [M, K] @ W.T through `torch._scaled_mm`, with the layouts its block-wise mode takes: x fp8
    row-major with 1 x 128 scales [M, K/128] column-major (strides (1, M)), W column-major ([K, N] view of the
    [N, K] weight) with 128 x 128 scales passed as the transposed [K/128, N/128] view of `weight_scale_inv`."""
    m = rows.shape[0]
    x_fp8, x_scale = quantize_rows_fp8(
        rows, SCALED_MM_BLOCK[1], row_multiple=_SCALED_MM_ROW_MULTIPLE, column_major_scales=True
    )
    out = torch._scaled_mm(
        x_fp8, weight_fp8.t(), scale_a=x_scale, scale_b=weight_scale_inv.contiguous().t(), out_dtype=rows.dtype
    )
    return out[:m]


def quantize_activation_fp8_triton(x: torch.Tensor, group: int = DEFAULT_BLOCK[1]) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of `engine.fp8.quantize_activation_fp8`: [..., K] -> (fp8 [..., K], fp32 scales
    [..., ceil(K/group)]), bit for bit the same values."""
    k = x.shape[-1]
    x_fp8, scale = quantize_rows_fp8(x.reshape(-1, k), group)
    return x_fp8.view(*x.shape), scale.view(*x.shape[:-1], scale.shape[-1])


def quantize_rows_fp8(
    rows: torch.Tensor, group: int, *, row_multiple: int = 1, column_major_scales: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise [M, K] per row per `group` channels with the Triton kernel.

    The outputs have M rounded up to `row_multiple` rows, the extra ones zeros with scale 1; with
    `column_major_scales` the scales [M', ceil(K/group)] are laid out with strides (1, M'), as
    `torch._scaled_mm` takes 1 x 128 scales.
    """
    from engine.kernels._fp8_linear_triton import quantize_rows_kernel

    if group & (group - 1) or group < 16:
        raise Fp8ShapeError(f"the Triton quantiser takes a power-of-two group of at least 16, got {group}")
    rows = rows if rows.stride(-1) == 1 else rows.contiguous()
    m, k = rows.shape
    padded = -(-m // row_multiple) * row_multiple
    groups = -(-k // group)
    q = torch.empty(padded, k, dtype=FP8_DTYPE, device=rows.device)
    if column_major_scales:
        scale = torch.empty(groups, padded, dtype=torch.float32, device=rows.device).t()
    else:
        scale = torch.empty(padded, groups, dtype=torch.float32, device=rows.device)
    if padded == 0:
        return q, scale
    per_program = min(_QUANT_GROUPS_PER_PROGRAM, _next_power_of_two(groups))
    grid = (padded, -(-groups // per_program))
    quantize_rows_kernel[grid](
        rows, q, scale, m, k, groups, rows.stride(0), scale.stride(0), scale.stride(1),
        GROUP=group, GROUPS_PER_PROGRAM=per_program,
    )
    return q, scale


def fp8_block_gemm_triton(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    block: tuple[int, int] = DEFAULT_BLOCK,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Triton twin of `engine.fp8.fp8_block_gemm`: x fp8 [M, K] with scales [M, ceil(K/block[1])], w fp8
    [N, K] with scales [ceil(N/block[0]), ceil(K/block[1])], fp32 accumulation, [M, N] in `out_dtype`."""
    from engine.kernels._fp8_linear_triton import block_fp8_gemm_kernel

    n, k = _check_weight(w_fp8, w_scale, block)
    m = x_fp8.shape[0]
    if x_fp8.shape[1] != k or tuple(x_scale.shape) != (m, -(-k // block[1])):
        raise Fp8ShapeError(
            f"x {tuple(x_fp8.shape)} with scales {tuple(x_scale.shape)} does not fit a weight taking {k} channels"
        )
    if block[1] & (block[1] - 1) or block[1] < 16:
        raise Fp8ShapeError(f"the Triton GEMM takes a power-of-two K block of at least 16, got {block[1]}")
    out = torch.empty(m, n, dtype=out_dtype, device=x_fp8.device)
    if m == 0:
        return out
    x_fp8, x_scale, w_fp8, w_scale = (t.contiguous() for t in (x_fp8, x_scale, w_fp8, w_scale))

    def grid(meta: dict[str, int]) -> tuple[int, int]:
        return (-(-m // meta["BLOCK_M"]), -(-n // meta["BLOCK_N"]))

    block_fp8_gemm_kernel[grid](
        x_fp8, x_scale, w_fp8, w_scale, out, m, n, k, min(_next_power_of_two(m), 512),
        WEIGHT_BLOCK_N=block[0], BLOCK_K=block[1],
    )
    return out


def _check_weight(w_fp8: torch.Tensor, w_scale: torch.Tensor, block: tuple[int, int]) -> tuple[int, int]:
    """(N, K) of a 2-D block-fp8 weight whose scale grid fits it."""
    if w_fp8.dim() != 2:
        raise Fp8ShapeError(f"a block-fp8 weight is 2-D, got shape {tuple(w_fp8.shape)}")
    n, k = w_fp8.shape
    expected = scale_grid_shape((n, k), block)
    if tuple(w_scale.shape) != expected:
        raise Fp8ShapeError(
            f"weight {(n, k)} with block {block} needs scale_inv {expected}, got {tuple(w_scale.shape)}"
        )
    return n, k


def _next_power_of_two(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()
