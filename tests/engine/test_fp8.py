"""Block-fp8 quantisation references: exact against straightforward torch, ragged shapes included."""

from __future__ import annotations

import pytest
import torch

from engine.fp8 import (
    FP8_DTYPE,
    FP8_MAX,
    Fp8ShapeError,
    dequantize_activation_fp8,
    dequantize_block_fp8,
    fp8_block_matmul,
    quantize_activation_fp8,
    quantize_block_fp8,
    scale_grid_shape,
)

# K2's kv_a_proj_with_mqa (576 x 7168: 576 = 4.5 blocks), one block, sub-block, ragged both ways
SHAPES = [(576, 7168), (128, 128), (1, 5), (300, 200), (129, 257)]


def _reference_dequant(w_fp8: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Expand every scale over its block, crop to the weight, multiply."""
    expanded = scale_inv.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)
    return w_fp8.float() * expanded[: w_fp8.shape[0], : w_fp8.shape[1]]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dequantize_equals_reference_bit_for_bit(shape: tuple[int, int]) -> None:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.02
    w_fp8, scale_inv = quantize_block_fp8(w)
    assert w_fp8.dtype == FP8_DTYPE and w_fp8.shape == shape
    assert scale_inv.dtype == torch.float32
    assert tuple(scale_inv.shape) == (-(-shape[0] // 128), -(-shape[1] // 128))
    assert torch.equal(dequantize_block_fp8(w_fp8, scale_inv), _reference_dequant(w_fp8, scale_inv, (128, 128)))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_quantize_matches_per_block_reference(shape: tuple[int, int]) -> None:
    """Each block's scale is its amax / 448 and its values are w / scale rounded to e4m3."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    w_fp8, scale_inv = quantize_block_fp8(w)
    for r in range(scale_inv.shape[0]):
        for c in range(scale_inv.shape[1]):
            rows, cols = slice(128 * r, 128 * (r + 1)), slice(128 * c, 128 * (c + 1))
            block = w[rows, cols]
            assert scale_inv[r, c] == block.abs().max() / FP8_MAX
            assert torch.equal(w_fp8[rows, cols], (block / scale_inv[r, c]).to(FP8_DTYPE))
            assert w_fp8[rows, cols].float().abs().max() == FP8_MAX  # the block maximum uses the full range


def test_round_trip_error_is_within_e4m3_precision() -> None:
    w = torch.randn(300, 200, generator=torch.Generator().manual_seed(2))
    w_fp8, scale_inv = quantize_block_fp8(w)
    error = (dequantize_block_fp8(w_fp8, scale_inv) - w).abs()
    scale = _reference_dequant(torch.ones_like(w), scale_inv, (128, 128))
    # 3 mantissa bits: half a step is 2^-4 relative; below the normal range the step is 2^-9 of the scale
    assert bool((error <= w.abs() * 2**-4 + scale * 2**-10).all())


def test_zero_block_gets_unit_scale_and_zero_values() -> None:
    w = torch.zeros(130, 140)
    w[129, 139] = 3.0
    w_fp8, scale_inv = quantize_block_fp8(w)
    assert scale_inv[0, 0] == 1.0 and scale_inv[1, 1] == 3.0 / FP8_MAX
    assert torch.equal(dequantize_block_fp8(w_fp8, scale_inv), w)


def test_non_default_block_and_output_dtype() -> None:
    w = torch.randn(70, 50, generator=torch.Generator().manual_seed(3))
    w_fp8, scale_inv = quantize_block_fp8(w, block=(32, 16))
    assert tuple(scale_inv.shape) == scale_grid_shape((70, 50), (32, 16)) == (3, 4)
    deq = dequantize_block_fp8(w_fp8, scale_inv, block=(32, 16), dtype=torch.bfloat16)
    assert deq.dtype == torch.bfloat16
    assert torch.equal(deq, _reference_dequant(w_fp8, scale_inv, (32, 16)).to(torch.bfloat16))


def test_mismatched_scale_grid_is_rejected_with_both_shapes() -> None:
    w_fp8, scale_inv = quantize_block_fp8(torch.randn(576, 300))
    with pytest.raises(Fp8ShapeError, match=r"needs scale_inv \(5, 3\), got \(4, 3\)"):
        dequantize_block_fp8(w_fp8, scale_inv[:4])
    with pytest.raises(Fp8ShapeError, match="2-D"):
        quantize_block_fp8(torch.randn(2, 3, 4))


def test_activation_quantisation_is_per_token_per_128_channels() -> None:
    x = torch.randn(3, 5, 300, generator=torch.Generator().manual_seed(4))
    x_fp8, scale = quantize_activation_fp8(x)
    assert x_fp8.shape == x.shape and scale.shape == (3, 5, 3)
    for group in range(3):
        channels = slice(128 * group, 128 * (group + 1))
        expected_scale = x[..., channels].abs().amax(dim=-1) / FP8_MAX
        assert torch.equal(scale[..., group], expected_scale)
        assert torch.equal(x_fp8[..., channels], (x[..., channels] / expected_scale[..., None]).to(FP8_DTYPE))
    error = (dequantize_activation_fp8(x_fp8, scale) - x).abs()
    assert bool((error <= x.abs() * 2**-4 + scale.repeat_interleave(128, -1)[..., :300] * 2**-10).all())


def test_block_matmul_reference() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(4, 7, 576, generator=generator).to(torch.bfloat16)
    w = torch.randn(300, 576, generator=generator) * 0.02
    w_fp8, scale_inv = quantize_block_fp8(w)
    out = fp8_block_matmul(x, w_fp8, scale_inv)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 7, 300)
    x_fp8, x_scale = quantize_activation_fp8(x)
    expected = dequantize_activation_fp8(x_fp8, x_scale) @ _reference_dequant(w_fp8, scale_inv, (128, 128)).T
    assert torch.equal(out, expected.to(torch.bfloat16))
    exact = x.float() @ w.T
    assert (out.float() - exact).norm() / exact.norm() < 0.05  # two e4m3 roundings: a few percent at most
    with pytest.raises(Fp8ShapeError, match="576"):
        fp8_block_matmul(x[..., :500], w_fp8, scale_inv)
