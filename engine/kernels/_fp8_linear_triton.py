# mypy: allow-untyped-defs, allow-incomplete-defs, allow-untyped-decorators
# (a kernel's arguments are Triton values that the JIT types at launch; Python annotations would be fiction)
"""The Triton kernels behind `engine.kernels.fp8_linear`: activation quantisation and the block-fp8 GEMM.

Only that module's launchers import this one, so the CPU engine never imports triton. Both kernels follow the
checkpoint's scheme (`engine.fp8`): e4m3 values, fp32 scales, one scale per token per 128 channels for
activations and one per 128 x 128 block for weights, ragged edge blocks included.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

E4M3_MAX = tl.constexpr(448.0)


def _gemm_configs() -> list[triton.Config]:
    """Tile shapes to autotune over; exactly one under the interpreter, whose autotuner needs a GPU to time."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
    # (BLOCK_M, BLOCK_N, warps, stages): narrow tiles give decode's few rows enough programs to fill the GPU
    shapes = [(16, 16, 2, 4), (16, 32, 2, 4), (16, 64, 4, 4), (16, 128, 4, 4), (32, 128, 4, 4), (64, 64, 4, 4),
              (64, 128, 4, 3), (128, 128, 8, 3)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
            for bm, bn, warps, stages in shapes]


@triton.jit
def _round_to_e4m3_grid(v):
    """Round fp32 `v` (|v| <= 448) to the nearest e4m3fn value, ties to even, staying in fp32.

    The cast that follows is then exact. On a GPU the cast alone would round correctly; Triton's interpreter
    does not (it mis-rounds ties, loses carries into the exponent and can overflow to NaN). Adding 2^(e+20),
    whose fp32 spacing is 2^(e-3), e4m3's spacing in the binade 2^e of `v`, lets the fp32 adder do the rounding.
    """
    bits = v.to(tl.int32, bitcast=True)
    magnitude = tl.abs(v)
    exponent = ((bits >> 23) & 0xFF) - 127
    exponent = tl.maximum(exponent, -6)  # below 2^-6 e4m3fn is subnormal, evenly spaced by 2^-9
    magic = ((exponent + 20 + 127) << 23).to(tl.float32, bitcast=True)
    rounded = (magnitude + magic) - magic
    return tl.where(bits < 0, -rounded, rounded)  # the sign bit, so that -0.0 stays -0.0 as torch's cast keeps it


@triton.jit
def _round_to_bf16_grid(v):
    """Round fp32 `v` to the nearest bf16 value, ties to even, staying in fp32: the interpreter's fp32 -> bf16
    cast truncates instead. Adding 0x7FFF plus the kept lowest bit to the bits rounds the dropped half."""
    bits = v.to(tl.int32, bitcast=True)
    bits += 0x7FFF + ((bits >> 16) & 1)
    rounded = (bits & -65536).to(tl.float32, bitcast=True)  # -65536 is 0xFFFF0000: clear the dropped 16 bits
    return tl.where(v == v, rounded, v)  # NaN stays NaN


@triton.jit
def quantize_rows_kernel(
    x_ptr, q_ptr, scale_ptr,
    rows, cols, groups, x_row_stride, scale_row_stride, scale_group_stride,
    GROUP: tl.constexpr, GROUPS_PER_PROGRAM: tl.constexpr,
):
    """One program quantises GROUPS_PER_PROGRAM groups of one row; rows past `rows` (padding) become zeros with
    scale 1. Divisions are IEEE (`div_rn`) so that the values match `engine.fp8.quantize_activation_fp8`."""
    row = tl.program_id(0)
    group_ids = tl.program_id(1) * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)
    cols_idx = group_ids[:, None] * GROUP + tl.arange(0, GROUP)[None, :]
    in_row = cols_idx < cols
    cols_to_read = tl.where(row < rows, cols, 0)  # padding rows read nothing
    x = tl.load(x_ptr + row * x_row_stride + cols_idx, mask=cols_idx < cols_to_read, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=1)
    scale = tl.where(amax > 0, tl.math.div_rn(amax, E4M3_MAX), 1.0)
    q = tl.math.div_rn(x, scale[:, None])
    q = _round_to_e4m3_grid(tl.minimum(tl.maximum(q, -E4M3_MAX), E4M3_MAX))
    tl.store(q_ptr + row * cols + cols_idx, q.to(q_ptr.dtype.element_ty), mask=in_row)
    tl.store(scale_ptr + row * scale_row_stride + group_ids * scale_group_stride, scale, mask=group_ids < groups)


@triton.autotune(configs=_gemm_configs(), key=["N", "K", "M_BUCKET"])
@triton.jit
def block_fp8_gemm_kernel(
    x_ptr, x_scale_ptr, w_ptr, w_scale_ptr, out_ptr,
    M, N, K, M_BUCKET,
    WEIGHT_BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out[M, N] = (x_fp8 * x_scale) @ (w_fp8 * w_scale).T, one [BLOCK_M, BLOCK_N] tile per program.

    BLOCK_K is the scale block along K, so each step's fp8 product (exact products, fp32 sums) takes one scale
    per row of x and one per column of w. Ragged edges load as zeros. `M_BUCKET` (M rounded up to a power of
    two) only keys the autotuner, so decode and prefill sizes get their own tiles.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    k_blocks = tl.cdiv(K, BLOCK_K)
    row_ok = offs_m < M
    col_ok = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * K + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * K + offs_k[:, None]  # [BLOCK_K, BLOCK_N]: w read transposed
    x_scale_ptrs = x_scale_ptr + offs_m * k_blocks
    w_scale_ptrs = w_scale_ptr + (offs_n // WEIGHT_BLOCK_N) * k_blocks
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, k_blocks):
        k_ok = offs_k < K - kb * BLOCK_K
        a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        a_scale = tl.load(x_scale_ptrs + kb, mask=row_ok, other=0.0)
        b_scale = tl.load(w_scale_ptrs + kb, mask=col_ok, other=0.0)
        acc += tl.dot(a, b) * a_scale[:, None] * b_scale[None, :]
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if out_ptr.dtype.element_ty == tl.bfloat16:
        acc = _round_to_bf16_grid(acc)
    out_ptrs = out_ptr + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
