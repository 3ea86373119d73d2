"""The fp8 linear kernels against their torch references, run on the CPU in Triton's interpreter.

Quantisation must match `engine.fp8.quantize_activation_fp8` bit for bit (same IEEE divisions, same
round-to-nearest-even onto the e4m3 grid), including the ties the interpreter's own fp8 cast gets wrong. The
GEMM sums the same fp8 products in another order than the reference, so it matches to fp32 rounding: see
`_assert_gemm_close`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest
import torch

pytest.importorskip("triton")

from engine.errors import Fp8ShapeError
from engine.fp8 import (
    FP8_DTYPE,
    dequantize_activation_fp8,
    dequantize_block_fp8,
    fp8_block_gemm,
    fp8_block_matmul,
    quantize_activation_fp8,
    quantize_block_fp8,
)
from engine.kernels.fp8_linear import (
    fp8_block_gemm_triton,
    fp8_linear,
    fp8_linear_reference,
    quantize_activation_fp8_triton,
    quantize_rows_fp8,
    scaled_mm_fits,
    scaled_mm_supported,
)
from engine.models.deepseek_v3 import Fp8Linear

BLOCK = (128, 128)


def _activations(*shape: int, seed: int) -> torch.Tensor:
    """Random activations whose 128-channel groups differ in magnitude by up to 2^6."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator)
    groups = -(-shape[-1] // 128)
    magnitudes = 2.0 ** torch.randint(-3, 4, (*shape[:-1], groups), generator=generator).float()
    return x * magnitudes.repeat_interleave(128, dim=-1)[..., : shape[-1]]


def _weight(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A block-fp8 weight whose 128 x 128 blocks all have different scales."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=generator) * 0.05
    grid = (-(-n // 128), -(-k // 128))
    magnitudes = torch.rand(grid, generator=generator) * 4 + 0.25
    w = w * magnitudes.repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :k]
    return quantize_block_fp8(w)


def _tricky_row() -> torch.Tensor:
    """One 128-channel group with amax 448 (scale exactly 1) holding the values whose rounding is easy to get
    wrong: ties to even (1.0625 -> 1, 1.1875 -> 1.25, 17 -> 16), ties that carry into the exponent (31 -> 32,
    432 -> 448, 15.5 -> 16), subnormals and their ties (2^-10 -> 0, 3 * 2^-10 -> 2^-8), negative zero."""
    special = [448.0, 1.0625, 1.1875, 17.0, 31.0, 432.0, 440.0, 15.5, 2**-10, 3 * 2**-10, 2**-9, 5 * 2**-11, -0.0, 0.0]
    values = torch.tensor(special + [-v for v in special])
    row = torch.linspace(-447.0, 447.0, 128)
    row[: values.numel()] = values
    return row


def _assert_same_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == FP8_DTYPE:
        got, want = got.view(torch.uint8), want.view(torch.uint8)
    assert torch.equal(got, want)


@pytest.mark.parametrize("shape", [(1, 256), (7, 200), (3, 5, 384), (2, 1, 7168)])
def test_quantisation_matches_the_reference_bit_for_bit(shape: tuple[int, ...]) -> None:
    x = _activations(*shape, seed=sum(shape))
    x.view(-1, shape[-1])[0, :128] = _tricky_row()
    x.view(-1, shape[-1])[-1, -(shape[-1] % 128 or 128):] = 0.0  # an all-zero (ragged) group gets scale 1
    got_q, got_scale = quantize_activation_fp8_triton(x)
    want_q, want_scale = quantize_activation_fp8(x)
    _assert_same_bits(got_scale, want_scale)
    _assert_same_bits(got_q, want_q)


def test_quantisation_reads_bf16_activations() -> None:
    x = _activations(4, 300, seed=5).to(torch.bfloat16)
    for got, want in zip(quantize_activation_fp8_triton(x), quantize_activation_fp8(x), strict=True):
        _assert_same_bits(got, want)


def test_padded_rows_are_zero_and_column_major_scales_are_what_scaled_mm_takes() -> None:
    rows = _activations(5, 512, seed=6)
    q, scale = quantize_rows_fp8(rows, 128, row_multiple=4, column_major_scales=True)
    want_q, want_scale = quantize_activation_fp8(rows)
    assert q.shape == (8, 512) and scale.shape == (8, 4)
    assert scale.stride() == (1, 8)
    _assert_same_bits(q[:5], want_q)
    _assert_same_bits(scale[:5], want_scale)
    assert not q[5:].float().any() and torch.equal(scale[5:], torch.ones(3, 4))


def _assert_gemm_close(got: torch.Tensor, x_fp8: torch.Tensor, x_scale: torch.Tensor,
                       w_fp8: torch.Tensor, w_scale: torch.Tensor) -> None:
    """Within the rounding of the output dtype plus fp32 summation error, measured against sum |x| |w| (the
    fp8 products themselves are exact in fp32; only the order of their sums differs from the reference)."""
    want = fp8_block_gemm(x_fp8, x_scale, w_fp8, w_scale, BLOCK, torch.float32)
    magnitude = dequantize_activation_fp8(x_fp8, x_scale).abs() @ dequantize_block_fp8(w_fp8, w_scale).abs().T
    rounding = 2.0**-8 if got.dtype == torch.bfloat16 else 0.0  # one bf16 rounding of either result
    bound = 1e-5 * magnitude + rounding * want.abs()
    assert got.shape == want.shape and got.dtype in (torch.bfloat16, torch.float32)
    assert bool(((got.float() - want).abs() <= bound + 1e-30).all()), float((got.float() - want).abs().max())


@pytest.mark.parametrize(
    ("m", "n", "k", "out_dtype"),
    [
        (1, 576, 384, torch.bfloat16),  # K2's kv_a_proj_with_mqa rows with a small K
        (7, 576, 200, torch.float32),  # ragged N and ragged K
        (64, 256, 512, torch.bfloat16),
        (130, 192, 256, torch.float32),  # M past one 128-row tile, ragged N
        (512, 128, 128, torch.bfloat16),
    ],
)
def test_block_gemm_matches_the_reference(m: int, n: int, k: int, out_dtype: torch.dtype) -> None:
    x_fp8, x_scale = quantize_activation_fp8(_activations(m, k, seed=m + k))
    w_fp8, w_scale = _weight(n, k, seed=n)
    got = fp8_block_gemm_triton(x_fp8, x_scale, w_fp8, w_scale, BLOCK, out_dtype)
    assert got.dtype == out_dtype
    _assert_gemm_close(got, x_fp8, x_scale, w_fp8, w_scale)


def test_block_gemm_rejects_mismatched_shapes() -> None:
    w_fp8, w_scale = _weight(256, 256, seed=1)
    x_fp8, x_scale = quantize_activation_fp8(_activations(2, 128, seed=1))
    with pytest.raises(Fp8ShapeError, match="channels"):
        fp8_block_gemm_triton(x_fp8, x_scale, w_fp8, w_scale)
    with pytest.raises(Fp8ShapeError, match="scale_inv"):
        fp8_block_gemm_triton(x_fp8, x_scale, w_fp8, w_scale[:1])


def _fp8_layer(n: int, k: int, dtype: torch.dtype) -> Fp8Linear:
    layer = Fp8Linear(k, n, block=BLOCK, dtype=dtype, device="cpu")
    weight, scale = _weight(n, k, seed=n + k)
    layer.weight.data.copy_(weight)
    layer.weight_scale_inv.data.copy_(scale)
    return layer


@pytest.mark.parametrize("mode", ["auto", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cpu_path_is_the_weight_only_fp8linear_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, mode: str, dtype: torch.dtype
) -> None:
    monkeypatch.setenv("KCODE_KERNELS", mode)
    layer = _fp8_layer(576, 200, dtype)
    x = _activations(2, 3, 200, seed=9).to(dtype)
    got = fp8_linear(x, layer.weight, layer.weight_scale_inv, BLOCK)
    _assert_same_bits(got, layer(x))
    dense = dequantize_block_fp8(layer.weight, layer.weight_scale_inv, BLOCK, dtype)
    _assert_same_bits(got, torch.nn.functional.linear(x, dense))


@pytest.mark.parametrize(("n", "k"), [(576, 200), (256, 384)])
def test_forcing_the_kernels_runs_them_and_matches_the_fp8_reference(
    monkeypatch: pytest.MonkeyPatch, n: int, k: int
) -> None:
    monkeypatch.setenv("KCODE_KERNELS", "triton")
    w_fp8, w_scale = _weight(n, k, seed=3)
    x = _activations(2, 5, k, seed=4).to(torch.bfloat16)
    got = fp8_linear(x, w_fp8, w_scale, BLOCK)
    assert got.shape == (2, 5, n) and got.dtype == torch.bfloat16
    x_fp8, x_scale = quantize_activation_fp8(x.reshape(-1, k))
    _assert_gemm_close(got.reshape(-1, n), x_fp8, x_scale, w_fp8, w_scale)
    # the dynamic-activation reference, end to end: it differs only by summation order and bf16 rounding
    torch.testing.assert_close(got, fp8_block_matmul(x, w_fp8, w_scale, BLOCK), rtol=2**-7, atol=1e-2)
    # and activation quantisation keeps it near the weight-only path (e4m3 keeps 3 mantissa bits)
    weight_only = fp8_linear_reference(x.float(), w_fp8, w_scale, BLOCK)
    assert float((got.float() - weight_only).norm() / weight_only.norm()) < 0.05


def test_forced_kernels_take_an_empty_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCODE_KERNELS", "triton")
    w_fp8, w_scale = _weight(128, 256, seed=1)
    assert fp8_linear(torch.empty(0, 3, 256), w_fp8, w_scale, BLOCK).shape == (0, 3, 128)
    with pytest.raises(Fp8ShapeError, match="channels"):
        fp8_linear(torch.empty(2, 255), w_fp8, w_scale, BLOCK)


def test_scaled_mm_takes_only_shapes_cublas_runs_and_never_a_cpu() -> None:
    assert scaled_mm_fits(7168, 7168, (128, 128)) and scaled_mm_fits(2048, 512, (128, 128))
    assert not scaled_mm_fits(576, 7168, (128, 128))  # ragged N: the Triton GEMM
    assert not scaled_mm_fits(1024, 384, (128, 128))  # K / 128 not a multiple of 4
    assert not scaled_mm_fits(1024, 1024, (64, 64))
    assert not scaled_mm_supported(torch.device("cpu"), torch.bfloat16)


def test_every_e4m3_value_comes_back_unchanged() -> None:
    """Each finite e4m3 value shares a group with 448, so the scale is 1 and the value itself must come out."""
    grid = torch.arange(256, dtype=torch.uint8).view(FP8_DTYPE).float()
    grid = grid[grid.isfinite()]  # 254 values, ±448 among them
    rows = torch.full((2, 128), 448.0)
    rows.view(-1)[: grid.numel()] = grid.flip(0)  # -448 in the first group, the 448 fill in the second
    q, scale = quantize_activation_fp8_triton(rows)
    assert torch.equal(scale, torch.ones(2, 1))
    assert torch.equal(q.view(-1)[: grid.numel()].float(), grid.flip(0))
