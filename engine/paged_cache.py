"""The paged latent cache: MLA's per-token latent [C] and roped key [R], per layer, in fixed-size blocks.

One pool of `num_blocks * block_size` slots serves every sequence; `engine.block_manager` decides which
blocks a sequence owns. A forward pass runs the new tokens of several sequences flattened into one row
[1, N] (a decode step contributes one token, a prefill chunk many), so no padding reaches the projections
or the experts. `PagedAttention` is that pass's `AttentionContext`: it writes each new token's latent into
its slot, then gathers every sequence's keys through its block table and runs the attention kernel. Decoding
sequences (one query each) share one padded kernel call; each prefill chunk gets its own, so a long chunk's
scores are [1, H, chunk, T] and never padded to the batch.

The gather is a torch index on CPU and GPU alike; a fused kernel that reads through the block table is the
GPU issue's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.config import ModelConfig
from engine.models.deepseek_v3 import AttendKernel, Device


class PagedLatentCache:
    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, *, dtype: torch.dtype, device: Device):
        slots, layers = num_blocks * block_size, config.num_hidden_layers
        self.block_size = block_size
        self.latent = torch.zeros(layers, slots, config.kv_lora_rank, dtype=dtype, device=device)
        self.k_rope = torch.zeros(layers, slots, config.qk_rope_head_dim, dtype=dtype, device=device)

    @property
    def device(self) -> torch.device:
        return self.latent.device

    def slots(self, block_table: Sequence[int], start: int, end: int) -> list[int]:
        """The slots of a sequence's tokens start..end-1."""
        size = self.block_size
        return [block_table[t // size] * size + t % size for t in range(start, end)]


@dataclass(frozen=True)
class Piece:
    """One sequence's part of a pass: its tokens start..start+count-1, the first `start` already cached."""

    block_table: Sequence[int]
    start: int
    count: int


@dataclass(frozen=True)
class _KernelCall:
    """One attention kernel call: rows of queries [B, S] and the key slots [B, T] each row may see."""

    queries: torch.Tensor
    """[B, S] index into the pass's N tokens; padding repeats a real query and is dropped after."""
    real: torch.Tensor
    """[B, S] true where `queries` is not padding."""
    key_slots: torch.Tensor
    """[B, T] cache slot of each visible key; padding points at slot 0 and is masked."""
    allowed: torch.Tensor
    """[B, S, T] causal mask within each row's keys."""


class PagedAttention:
    """The `AttentionContext` of one pass over `pieces`, flattened in order into the pass's N tokens."""

    def __init__(self, cache: PagedLatentCache, pieces: Sequence[Piece]) -> None:
        self.cache = cache
        device = cache.device
        self.write_slots = torch.tensor(
            [slot for p in pieces for slot in cache.slots(p.block_table, p.start, p.start + p.count)], device=device
        )
        offsets = [0]
        for piece in pieces:
            offsets.append(offsets[-1] + piece.count)
        decodes = [i for i, p in enumerate(pieces) if p.count == 1]
        chunks = [i for i, p in enumerate(pieces) if p.count > 1]
        groups = ([decodes] if decodes else []) + [[i] for i in chunks]
        self.calls = [self._kernel_call([pieces[i] for i in g], [offsets[i] for i in g], device) for g in groups]

    def _kernel_call(self, pieces: list[Piece], offsets: list[int], device: torch.device) -> _KernelCall:
        width = max(p.count for p in pieces)
        visible = max(p.start + p.count for p in pieces)
        queries, real, key_slots, last_query = [], [], [], []
        for piece, offset in zip(pieces, offsets, strict=True):
            queries.append([offset + min(s, piece.count - 1) for s in range(width)])
            real.append([s < piece.count for s in range(width)])
            seen = piece.start + piece.count
            key_slots.append(self.cache.slots(piece.block_table, 0, seen) + [0] * (visible - seen))
            last_query.append(piece.start + piece.count - 1)
        query_position = torch.tensor([[p.start] for p in pieces], device=device) + torch.arange(width, device=device)
        query_position = query_position.minimum(torch.tensor(last_query, device=device)[:, None])  # [B, S]
        allowed = torch.arange(visible, device=device)[None, None, :] <= query_position[..., None]
        return _KernelCall(
            torch.tensor(queries, device=device),
            torch.tensor(real, device=device),
            torch.tensor(key_slots, device=device),
            allowed,
        )

    def attend(
        self, layer: int, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
        kernel: AttendKernel,
    ) -> torch.Tensor:
        """q_nope/q_pe [1, N, H, *], latent/k_pe [1, N, *] -> [1, N, H, v]."""
        cache_latent, cache_k_rope = self.cache.latent[layer], self.cache.k_rope[layer]
        cache_latent[self.write_slots] = latent[0]
        cache_k_rope[self.write_slots] = k_pe[0]
        out: torch.Tensor | None = None
        for call in self.calls:
            result = kernel(
                q_nope[0, call.queries], q_pe[0, call.queries],
                cache_latent[call.key_slots], cache_k_rope[call.key_slots], call.allowed,
            )  # [B, S, H, v]
            if out is None:
                out = result.new_empty(q_nope.shape[1], *result.shape[2:])
            out[call.queries[call.real]] = result[call.real]
        assert out is not None, "a pass has at least one piece"
        return out[None]
