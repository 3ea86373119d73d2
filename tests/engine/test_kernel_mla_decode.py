"""The MLA decode kernel against its torch reference and the model's absorbed attention, in Triton's
interpreter on the CPU: scattered and out-of-order cache blocks, unused table entries, lengths that are not
a multiple of the block size, and sequences long enough to be split into several key ranges.

Tolerances: in fp32 the interpreter computes exactly what the reference does in another order (online
softmax, split merge), so 1e-5 relative; bf16 inputs round the probabilities to bf16 before the value
product, as flash attention does, hence 2e-2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest
import torch

from engine.config import ModelConfig
from engine.errors import ModelInputError
from engine.kernels import mla_decode as mla
from engine.models.deepseek_v3 import ModelOptions, MultiHeadLatentAttention
from engine.tiny_weights import tiny_config

pytest.importorskip("triton")

RANK, ROPE = 64, 16
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""q_latent, q_pe, cache_latent, cache_k_rope, block_tables, seq_lens: `mla_decode`'s tensors in order."""
Decode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float],
                  torch.Tensor]  # fmt: skip


@pytest.fixture(autouse=True)
def _kernels_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCODE_KERNELS", "triton")


def _paged_batch(
    seq_lens: list[int], block_size: int, *, heads: int, dtype: torch.dtype, seed: int, spare_blocks: int = 0
) -> Batch:
    """Queries, a pool whose blocks are handed out shuffled with free blocks between them, and the tables;
    table entries past a sequence's last block hold -1, which must never be read."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-n // block_size) for n in seq_lens]
    width = max(needed) + spare_blocks
    pool_blocks = 2 * sum(needed) + 3
    order = torch.randperm(pool_blocks, generator=gen).tolist()  # every other block stays free: holes
    tables = torch.full((len(seq_lens), width), -1, dtype=torch.int32)
    taken = 0
    for row, count in enumerate(needed):
        tables[row, :count] = torch.tensor(order[taken : taken + 2 * count : 2], dtype=torch.int32)
        taken += 2 * count
    slots = pool_blocks * block_size
    cache_latent = torch.randn(slots, RANK, generator=gen).to(dtype)
    cache_k_rope = torch.randn(slots, ROPE, generator=gen).to(dtype)
    q_latent = torch.randn(len(seq_lens), heads, RANK, generator=gen).to(dtype)
    q_pe = torch.randn(len(seq_lens), heads, ROPE, generator=gen).to(dtype)
    return q_latent, q_pe, cache_latent, cache_k_rope, tables, torch.tensor(seq_lens, dtype=torch.int32)


@pytest.mark.parametrize(
    ("seq_lens", "block_size", "heads"),
    [
        ([1], 16, 4),  # a sequence of only its new token
        ([5, 17, 16, 33], 16, 4),  # partial, full and just-over blocks
        ([300, 1, 129, 64, 7, 250, 2, 96], 8, 2),  # eight sequences, the long ones split into key ranges
        ([260, 45], 32, 40),  # two blocks of heads (32 each), the second part padding
    ],
)
def test_kernel_matches_reference_in_fp32(seq_lens: list[int], block_size: int, heads: int) -> None:
    inputs = _paged_batch(seq_lens, block_size, heads=heads, dtype=torch.float32, seed=len(seq_lens), spare_blocks=2)
    expected = mla.mla_decode_reference(*inputs, block_size, 0.125)
    got = mla.mla_decode(*inputs, block_size, 0.125)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_long_sequences_really_use_several_key_ranges() -> None:
    """The split path and its merge are what the 300-token case above checks, not a single range."""
    assert mla._split_count(batch=8, head_blocks=1, max_tokens=304) == 2
    assert mla._split_count(batch=1, head_blocks=1, max_tokens=4096) == 16
    assert mla._split_count(batch=256, head_blocks=4, max_tokens=4096) == 1


def test_kernel_matches_reference_in_bf16() -> None:
    inputs = _paged_batch([70, 3, 200], 16, heads=4, dtype=torch.bfloat16, seed=7)
    expected = mla.mla_decode_reference(*inputs, 16, 0.1)
    got = mla.mla_decode(*inputs, 16, 0.1)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_decode_through_the_model_matches_its_absorbed_attention_over_gathered_keys() -> None:
    """The wiring the paged cache uses: the layer folds W_uk into the query and applies W_uv after, with
    `mla_decode` as its latent-space attention; the model's own absorbed path over gathered keys agrees."""
    config = ModelConfig.from_hf(tiny_config("k2"))
    assert (config.kv_lora_rank, config.qk_rope_head_dim) == (RANK, ROPE)
    attention = MultiHeadLatentAttention(config, 0, ModelOptions(dtype=torch.float32), "cpu")
    torch.manual_seed(0)
    attention.kv_b_proj.weight.data.normal_(0, 0.1)
    heads = config.num_attention_heads
    seq_lens, block_size = [23, 9, 40], 8
    _, q_pe, cache_latent, cache_k_rope, tables, lens = _paged_batch(
        seq_lens, block_size, heads=heads, dtype=torch.float32, seed=3
    )
    q_nope = torch.randn(len(seq_lens), 1, heads, config.qk_nope_head_dim)  # [B, S=1, H, nope]
    for run in (mla.mla_decode_reference, mla.mla_decode):

        def latent_attention(q_latent: torch.Tensor, q_rope: torch.Tensor, run: Decode = run) -> torch.Tensor:
            args = (cache_latent, cache_k_rope, tables, lens, block_size, config.softmax_scale)
            return run(q_latent[:, 0], q_rope[:, 0], *args)[:, None]

        out = attention.attend_in_latent_space(q_nope, q_pe[:, None], latent_attention)  # [B, 1, H, v]
        for b, length in enumerate(seq_lens):
            position = torch.arange(length)
            slots = tables[b, position // block_size].long() * block_size + position % block_size
            expected = attention.attend_over(
                q_nope[b : b + 1], q_pe[b][None, None], cache_latent[slots][None], cache_k_rope[slots][None],
                torch.ones(1, 1, length, dtype=torch.bool),
            )  # fmt: skip
            torch.testing.assert_close(out[b], expected[0], rtol=1e-4, atol=1e-5)


def test_fp32_queries_over_a_bf16_cache_come_back_in_fp32() -> None:
    """The model's CPU path computes the absorbed form in fp32 while the cache holds bf16."""
    q_latent, q_pe, cache_latent, cache_k_rope, tables, lens = _paged_batch(
        [20, 3], 8, heads=4, dtype=torch.bfloat16, seed=5
    )
    args = (q_latent.float(), q_pe.float(), cache_latent, cache_k_rope, tables, lens, 8, 0.1)
    got = mla.mla_decode(*args)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, mla.mla_decode_reference(*args), rtol=2e-2, atol=2e-2)


def test_strided_query_views_are_read_and_written_right() -> None:
    """The model hands over einsum outputs, whose strides are not row-major."""
    q_latent, q_pe, cache_latent, cache_k_rope, tables, lens = _paged_batch(
        [30, 11, 2], 8, heads=4, dtype=torch.float32, seed=9
    )
    strided = q_latent.transpose(0, 1).contiguous().transpose(0, 1)  # same values, heads outermost in memory
    assert not strided.is_contiguous()
    keys = (cache_latent, cache_k_rope, tables, lens, 8, 0.3)
    got = mla.mla_decode(strided, q_pe, *keys)
    torch.testing.assert_close(got, mla.mla_decode_reference(q_latent, q_pe, *keys), rtol=1e-5, atol=1e-5)


def test_reference_runs_on_cpu_without_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCODE_KERNELS", "reference")
    inputs = _paged_batch([12, 5], 4, heads=2, dtype=torch.float32, seed=11)
    torch.testing.assert_close(mla.mla_decode(*inputs, 4, 0.2), mla.mla_decode_reference(*inputs, 4, 0.2))


def test_mismatched_shapes_name_the_bad_argument() -> None:
    q_latent, q_pe, cache_latent, cache_k_rope, tables, lens = _paged_batch(
        [4], 4, heads=2, dtype=torch.float32, seed=1
    )
    with pytest.raises(ModelInputError, match="q_pe must have shape"):
        mla.mla_decode(q_latent, q_pe[:, :1], cache_latent, cache_k_rope, tables, lens, 4, 1.0)
    with pytest.raises(ModelInputError, match="seq_lens"):
        mla.mla_decode(q_latent, q_pe, cache_latent, cache_k_rope, tables, lens.repeat(2), 4, 1.0)


_COMPILE_FOR_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from engine.kernels import mla_decode

kernels = mla_decode._kernels()
types = {"block_tables": "*i32", "seq_lens": "*i32", "partial": "*fp32", "running_max": "*fp32",
         "running_sum": "*fp32", "scale_log2": "fp32"}
for dtype, precision in (("bf16", "tf32"), ("fp32", "ieee")):
    for name in ("q_latent", "q_pe", "cache_latent", "cache_k_rope", "out"):
        types[name] = "*" + dtype
    for name, constants, warps in (
        ("partial", {"BLOCK_H": 16, "BLOCK_N": 32, "BLOCK_C": 512, "BLOCK_R": 64, "PRECISION": precision,
                     "DOT_FP32": False}, 4),
        ("partial", {"BLOCK_H": 32, "BLOCK_N": 32, "BLOCK_C": 512, "BLOCK_R": 64, "PRECISION": precision,
                     "DOT_FP32": False}, 8),
        ("merge", {"BLOCK_C": 512, "BLOCK_S": 16}, 4),
    ):
        kernel = kernels[name]
        signature = {arg: "constexpr" if arg in constants else types.get(arg, "i32") for arg in kernel.arg_names}
        source = ASTSource(kernel, signature, constants)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        assert ".entry" in compiled.asm["ptx"], name
        assert compiled.metadata.shared <= 227 * 1024, (name, compiled.metadata.shared)
"""


def test_kernels_compile_for_hopper_at_k2_widths_without_a_gpu(tmp_path: Path) -> None:
    """The interpreter runs any Python; compiling to PTX for sm_90 at K2's latent width (512) in bf16 checks the
    types, the dot shapes and the shared memory that the GPU build takes."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(tmp_path)}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], env=env, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
