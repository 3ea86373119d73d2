"""MLA decode attention in the absorbed form, reading keys straight from the paged latent cache.

A decode step has one query per sequence. In the absorbed form its nope query is already folded into latent
space (`q_latent = W_uk^T q_nope`, [H, C]), so every head scores the same cached latent [T, C] plus the roped
key [T, R], and the output stays in latent space for the caller to apply `W_uv`. The kernel walks a
sequence's block table itself (slot = table[t // block_size] * block_size + t % block_size), so no gathered
copy of the keys is ever made.

Flash-decoding: the keys of each sequence are cut into `splits` equal ranges, one program per (sequence,
block of heads, range) keeps a running max and sum while it reads its range, and a second small kernel
merges the ranges' partial results. The split length comes from the block table's width, not from
`seq_lens`, so a launch never waits on the host and can be captured in a CUDA graph.

`mla_decode_reference` is the same computation in plain torch (gather, softmax in fp32); `mla_decode` picks
the Triton path through `engine.kernels.select`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.errors import ModelInputError
from engine.kernels.select import use_kernels

_BLOCK_N = 32
"""Keys per inner step: a [32, 512] bf16 latent tile is 32 KiB of shared memory at K2's width."""
_MIN_HEAD_BLOCK = 16
"""`tl.dot` needs at least 16 rows; fewer heads are padded and masked."""
_MAX_HEAD_BLOCK = 32
"""Heads per program: the fp32 accumulator [heads, C] lives in registers."""
_MIN_SPLIT_TOKENS = 256
"""Shortest key range worth a program of its own: below it the merge costs more than the parallelism gains."""
_TARGET_PROGRAMS = 264
"""About two programs per streaming multiprocessor of an H100/H200 (132 SMs)."""


def mla_decode_reference(
    q_latent: torch.Tensor,
    q_pe: torch.Tensor,
    cache_latent: torch.Tensor,
    cache_k_rope: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    block_size: int,
    softmax_scale: float,
) -> torch.Tensor:
    """q_latent [B, H, C], q_pe [B, H, R] over each sequence's first seq_lens[b] cached tokens -> [B, H, C]."""
    _check(q_latent, q_pe, cache_latent, cache_k_rope, block_tables, seq_lens, block_size)
    width = block_tables.shape[1] * block_size
    position = torch.arange(width, device=q_latent.device)
    slots = block_tables.long()[:, position // block_size] * block_size + position % block_size  # [B, T]
    visible = position[None, :] < seq_lens.long()[:, None]  # [B, T]
    slots = torch.where(visible, slots, 0)  # unused table entries may hold anything
    latent, k_rope = cache_latent[slots].float(), cache_k_rope[slots].float()  # [B, T, C], [B, T, R]
    scores = torch.einsum("bhc,btc->bht", q_latent.float(), latent) + torch.einsum("bhr,btr->bht", q_pe.float(), k_rope)
    scores = (scores * softmax_scale).masked_fill(~visible[:, None], float("-inf"))
    out = torch.einsum("bht,btc->bhc", scores.softmax(dim=-1), latent)
    return out.to(q_latent.dtype)


def mla_decode(
    q_latent: torch.Tensor,
    q_pe: torch.Tensor,
    cache_latent: torch.Tensor,
    cache_k_rope: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    block_size: int,
    softmax_scale: float,
) -> torch.Tensor:
    """The Triton kernel where `engine.kernels.select` says so, else `mla_decode_reference`.

    `block_tables` [B, max_blocks] and `seq_lens` [B] are int32; seq_lens[b] >= 1 counts the new token, which
    must already be in the cache. Entries past a sequence's last block are never read.
    """
    if not use_kernels(q_latent.device):
        return mla_decode_reference(
            q_latent, q_pe, cache_latent, cache_k_rope, block_tables, seq_lens, block_size, softmax_scale
        )
    _check(q_latent, q_pe, cache_latent, cache_k_rope, block_tables, seq_lens, block_size)
    return _launch(q_latent, q_pe, cache_latent, cache_k_rope, block_tables, seq_lens, block_size, softmax_scale)


def _check(
    q_latent: torch.Tensor,
    q_pe: torch.Tensor,
    cache_latent: torch.Tensor,
    cache_k_rope: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    block_size: int,
) -> None:
    batch, heads, rank = q_latent.shape
    rope = q_pe.shape[-1]
    expected = {
        "q_pe": (q_pe.shape, (batch, heads, rope)),
        "cache_latent": (cache_latent.shape, (cache_latent.shape[0], rank)),
        "cache_k_rope": (cache_k_rope.shape, (cache_latent.shape[0], rope)),
        "block_tables": (block_tables.shape, (batch, block_tables.shape[-1])),
        "seq_lens": (seq_lens.shape, (batch,)),
    }
    for name, (got, want) in expected.items():
        if tuple(got) != want:
            raise ModelInputError(f"mla_decode: {name} must have shape {want}, got {tuple(got)}")
    if block_size < 1:
        raise ModelInputError(f"mla_decode: block_size must be >= 1, got {block_size}")


def _dot_width(size: int) -> int:
    """A power of two covering `size`, and at least the 16 that `tl.dot` needs on every side."""
    return max(16, 1 << (size - 1).bit_length())


def _split_count(batch: int, head_blocks: int, max_tokens: int) -> int:
    """Enough key ranges to occupy the GPU, none shorter than `_MIN_SPLIT_TOKENS`."""
    wanted = math.ceil(_TARGET_PROGRAMS / (batch * head_blocks))
    return max(1, min(wanted, math.ceil(max_tokens / _MIN_SPLIT_TOKENS)))


def _launch(
    q_latent: torch.Tensor,
    q_pe: torch.Tensor,
    cache_latent: torch.Tensor,
    cache_k_rope: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    block_size: int,
    softmax_scale: float,
) -> torch.Tensor:
    import triton

    kernels = _kernels()
    batch, heads, rank = q_latent.shape
    rope = q_pe.shape[-1]
    head_block = min(_MAX_HEAD_BLOCK, max(_MIN_HEAD_BLOCK, triton.next_power_of_2(heads)))
    head_blocks = triton.cdiv(heads, head_block)
    max_tokens = block_tables.shape[1] * block_size
    splits = _split_count(batch, head_blocks, max_tokens)
    split_len = triton.cdiv(triton.cdiv(max_tokens, splits), _BLOCK_N) * _BLOCK_N
    device = q_latent.device
    partial = torch.empty(batch, heads, splits, rank, dtype=torch.float32, device=device)
    running_max = torch.empty(batch, heads, splits, dtype=torch.float32, device=device)
    running_sum = torch.empty_like(running_max)
    out = torch.empty(q_latent.shape, dtype=q_latent.dtype, device=q_latent.device)  # contiguous, as written
    dtype = cache_latent.dtype  # tl.dot takes operands of one dtype: the queries follow the cache
    q_latent, q_pe = q_latent.to(dtype).contiguous(), q_pe.to(dtype).contiguous()
    cache_latent, cache_k_rope = cache_latent.contiguous(), cache_k_rope.to(dtype).contiguous()
    block_tables, seq_lens = block_tables.contiguous(), seq_lens.contiguous()
    precision = "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs get exact products
    # Triton's interpreter multiplies bf16 operands of tl.dot as their raw uint16 bits: widen them there
    dot_fp32 = bool(triton.knobs.runtime.interpret) and dtype != torch.float32
    kernels["partial"][(batch, head_blocks, splits)](
        q_latent, q_pe, cache_latent, cache_k_rope, block_tables, seq_lens,
        partial, running_max, running_sum,
        heads, rank, rope, block_tables.shape[1], block_size, split_len, splits,
        softmax_scale * 1.4426950408889634,  # log2(e): the kernel uses exp2
        BLOCK_H=head_block, BLOCK_N=_BLOCK_N,
        BLOCK_C=_dot_width(rank), BLOCK_R=_dot_width(rope),
        PRECISION=precision, DOT_FP32=dot_fp32, num_warps=4 if head_block == 16 else 8, num_stages=2,
    )  # fmt: skip
    kernels["merge"][(batch, heads)](
        partial, running_max, running_sum, out, rank, splits,
        BLOCK_C=triton.next_power_of_2(rank), BLOCK_S=triton.next_power_of_2(splits), num_warps=4,
    )  # fmt: skip
    return out


_KERNELS: dict[str, Any] = {}


def _kernels() -> dict[str, Any]:
    """Define the Triton kernels on first use, so importing this module never imports triton."""
    if _KERNELS:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[untyped-decorator]
    def partial_kernel(  # type: ignore[no-untyped-def]
        q_latent, q_pe, cache_latent, cache_k_rope, block_tables, seq_lens,
        partial, running_max, running_sum,
        heads, rank, rope, max_blocks, block_size, split_len, splits, scale_log2,
        BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
        PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
    ):  # fmt: skip
        seq, head_block, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        head = head_block * BLOCK_H + tl.arange(0, BLOCK_H)
        chan, rot = tl.arange(0, BLOCK_C), tl.arange(0, BLOCK_R)
        head_ok, chan_ok, rot_ok = head < heads, chan < rank, rot < rope
        q_rows = (seq * heads + head)[:, None]
        ql = tl.load(q_latent + q_rows * rank + chan[None, :], mask=head_ok[:, None] & chan_ok[None, :], other=0.0)
        qr = tl.load(q_pe + q_rows * rope + rot[None, :], mask=head_ok[:, None] & rot_ok[None, :], other=0.0)
        value_dtype = cache_latent.dtype.element_ty  # probabilities round to it before the value product
        if DOT_FP32:
            ql, qr = ql.to(tl.float32), qr.to(tl.float32)
        length = tl.minimum(tl.load(seq_lens + seq), max_blocks * block_size)  # as the reference: table's width
        start = split * split_len
        end = tl.minimum(start + split_len, length)
        best = tl.full([BLOCK_H], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_H], tl.float32)
        acc = tl.zeros([BLOCK_H, BLOCK_C], tl.float32)
        for first in range(start, end, BLOCK_N):
            token = first + tl.arange(0, BLOCK_N)
            token_ok = token < end
            block = tl.load(block_tables + seq * max_blocks + token // block_size, mask=token_ok, other=0)
            slot = (block.to(tl.int64) * block_size + token % block_size)[:, None]
            latent_ok, rope_ok = token_ok[:, None] & chan_ok[None, :], token_ok[:, None] & rot_ok[None, :]
            kl = tl.load(cache_latent + slot * rank + chan[None, :], mask=latent_ok, other=0.0)  # [N, C]
            kr = tl.load(cache_k_rope + slot * rope + rot[None, :], mask=rope_ok, other=0.0)  # [N, R]
            if DOT_FP32:
                kl, kr = kl.to(tl.float32), kr.to(tl.float32)
            scores = tl.dot(ql, tl.trans(kl), input_precision=PRECISION)
            scores = tl.dot(qr, tl.trans(kr), acc=scores, input_precision=PRECISION) * scale_log2  # [H, N]
            scores = tl.where(token_ok[None, :], scores, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, axis=1))
            keep = tl.exp2(best - new_best)
            probs = tl.exp2(scores - new_best[:, None])
            total = total * keep + tl.sum(probs, axis=1)
            weights = probs.to(value_dtype).to(kl.dtype)
            acc = tl.dot(weights, kl, acc=acc * keep[:, None], input_precision=PRECISION)
            best = new_best
        rows = (seq * heads + head) * splits + split
        tl.store(running_max + rows, best, mask=head_ok)
        tl.store(running_sum + rows, total, mask=head_ok)
        tl.store(partial + rows[:, None] * rank + chan[None, :], acc, mask=head_ok[:, None] & chan_ok[None, :])

    @triton.jit  # type: ignore[untyped-decorator]
    def merge_kernel(  # type: ignore[no-untyped-def]
        partial, running_max, running_sum, out, rank, splits, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr
    ):
        row = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)  # (sequence, head)
        split, chan = tl.arange(0, BLOCK_S), tl.arange(0, BLOCK_C)
        split_ok, chan_ok = split < splits, chan < rank
        best = tl.load(running_max + row * splits + split, mask=split_ok, other=float("-inf"))
        total = tl.load(running_sum + row * splits + split, mask=split_ok, other=0.0)
        overall = tl.max(best, axis=0)  # finite: the first range always holds the sequence's first key
        weight = tl.exp2(best - overall)  # an empty range has -inf max, so weight 0
        acc = tl.zeros([BLOCK_C], tl.float32)
        for index in range(splits):  # one range at a time: [splits, C] at once would not fit in registers
            scale = tl.exp2(tl.load(running_max + row * splits + index) - overall)
            acc += scale * tl.load(partial + (row * splits + index) * rank + chan, mask=chan_ok, other=0.0)
        merged = acc / tl.sum(total * weight, axis=0)
        tl.store(out + row * rank + chan, merged.to(out.dtype.element_ty), mask=chan_ok)

    _KERNELS.update(partial=partial_kernel, merge=merge_kernel)
    return _KERNELS
