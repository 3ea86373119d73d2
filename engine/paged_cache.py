"""The paged latent cache: MLA's per-token latent [C] and roped key [R], per layer, in fixed-size blocks.

One pool of `num_blocks * block_size` slots serves every sequence; `engine.block_manager` decides which
blocks a sequence owns. A forward pass runs the new tokens of several sequences flattened into one row
[1, N] (a decode step contributes one token, a prefill chunk many), so no padding reaches the projections
or the experts. `PagedAttention` is that pass's `AttentionContext`: it writes each new token's latent into
its slot, then gathers every sequence's keys through its block table and runs the attention kernel. Decoding
sequences (one query each) share one padded kernel call; each prefill chunk gets its own, so a long chunk's
scores are [1, H, chunk, T] and never padded to the batch.

Where the GPU kernels run (`engine.kernels.select`), decoding rows go through the Triton MLA decode kernel,
which reads the block tables itself, and prefill chunks through PyTorch's fused attention (SDPA) over keys
decompressed per head; elsewhere every call gathers its keys and runs the model's configured form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.config import ModelConfig
from engine.errors import ModelInputError
from engine.kernels.mla_decode import mla_decode
from engine.kernels.select import use_kernels
from engine.models.deepseek_v3 import Device, LatentAttention, MultiHeadLatentAttention


class PagedLatentCache:
    """`num_blocks` blocks for sequences, plus one scratch block that padding rows of a CUDA graph's batch
    write and read, so they never touch a sequence's latents."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, *, dtype: torch.dtype, device: Device):
        slots, layers = (num_blocks + 1) * block_size, config.num_hidden_layers
        self.block_size = block_size
        self.scratch_block = num_blocks
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
    """One attention call: rows of queries [B, S], and each row's keys through its block table."""

    queries: torch.Tensor
    """[B, S] index into the pass's N tokens; padding repeats a real query and is dropped after."""
    real: torch.Tensor
    """[B, S] true where `queries` is not padding."""
    block_tables: torch.Tensor
    """[B, max_blocks] int32, padded with block 0 (never read unmasked)."""
    seq_lens: torch.Tensor
    """[B] int32: keys each row sees, its new tokens included."""
    key_slots: torch.Tensor | None
    """[B, T] cache slot of each key position; past a row's length it points anywhere and is masked. None
    for a CUDA graph's decode step, which only the MLA decode kernel runs."""
    allowed: torch.Tensor | None
    """[B, S, T] causal mask within each row's keys (None with `key_slots`)."""

    @property
    def decoding(self) -> bool:
        return self.queries.shape[1] == 1


class PagedAttention:
    """The `AttentionContext` of one pass: where its N new tokens go, and the attention calls that read them."""

    def __init__(self, cache: PagedLatentCache, write_slots: torch.Tensor, calls: list[_KernelCall]) -> None:
        self.cache = cache
        self.write_slots = write_slots
        self.calls = calls
        self.use_kernels = use_kernels(cache.device)

    @classmethod
    def for_pieces(cls, cache: PagedLatentCache, pieces: Sequence[Piece]) -> PagedAttention:
        """A pass over `pieces`, flattened in order into the pass's N tokens: decoding rows share one call,
        each prefill chunk gets its own."""
        device = cache.device
        write_slots = torch.tensor(
            [slot for p in pieces for slot in cache.slots(p.block_table, p.start, p.start + p.count)], device=device
        )
        offsets = [0]
        for piece in pieces:
            offsets.append(offsets[-1] + piece.count)
        decodes = [i for i, p in enumerate(pieces) if p.count == 1]
        chunks = [i for i, p in enumerate(pieces) if p.count > 1]
        if use_kernels(device):  # the decode kernel reads each row's own length: one launch for all
            groups = [decodes] if decodes else []
        else:  # gathered keys are padded to the group's longest row: group rows of like length
            by_length = sorted(decodes, key=lambda i: pieces[i].start)
            buckets: dict[int, list[int]] = {}
            for i in by_length:
                buckets.setdefault((pieces[i].start + 1).bit_length(), []).append(i)
            groups = list(buckets.values())
        groups += [[i] for i in chunks]
        calls = [_kernel_call(cache, [pieces[i] for i in g], [offsets[i] for i in g]) for g in groups]
        return cls(cache, write_slots, calls)

    @classmethod
    def for_decoding(
        cls, cache: PagedLatentCache, write_slots: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor
    ) -> PagedAttention:
        """A decode step over static buffers (`engine.cuda_graphs`): one query per row, the row's new token
        written at write_slots[row], its keys read by the MLA decode kernel through the block tables."""
        rows = torch.arange(len(write_slots), device=write_slots.device)[:, None]
        real = torch.ones_like(rows, dtype=torch.bool)
        return cls(cache, write_slots, [_KernelCall(rows, real, block_tables, seq_lens, key_slots=None, allowed=None)])

    def attend(
        self, layer: int, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
        attention: MultiHeadLatentAttention,
    ) -> torch.Tensor:
        """q_nope/q_pe [1, N, H, *], latent/k_pe [1, N, *] -> [1, N, H, v]. Decoding rows go through the MLA decode
        kernel, which reads the block tables itself, where kernels run; everything else gathers its keys."""
        cache_latent, cache_k_rope = self.cache.latent[layer], self.cache.k_rope[layer]
        cache_latent[self.write_slots] = latent[0]
        cache_k_rope[self.write_slots] = k_pe[0]
        out: torch.Tensor | None = None
        for call in self.calls:
            q_nope_rows, q_pe_rows = q_nope[0, call.queries], q_pe[0, call.queries]  # [B, S, H, *]
            if call.decoding and self.use_kernels and attention.form == "absorbed":
                decode = self._decode_kernel(call, cache_latent, cache_k_rope, attention.scale)
                result = attention.attend_in_latent_space(q_nope_rows, q_pe_rows, decode)
            else:
                if call.key_slots is None or call.allowed is None:
                    raise ModelInputError("a CUDA graph's decode step runs only on the absorbed form's decode kernel")
                attend = attention.attend_with_sdpa if self.use_kernels and not call.decoding else attention.attend_over
                result = attend(
                    q_nope_rows, q_pe_rows, cache_latent[call.key_slots], cache_k_rope[call.key_slots], call.allowed
                )  # [B, S, H, v]
            if out is None:
                out = result.new_empty(q_nope.shape[1], *result.shape[2:])
            out[call.queries[call.real]] = result[call.real]
        assert out is not None, "a pass has at least one piece"
        return out[None]

    def _decode_kernel(
        self, call: _KernelCall, cache_latent: torch.Tensor, cache_k_rope: torch.Tensor, scale: float
    ) -> LatentAttention:
        """Latent-space attention of one query per row, straight from the cache through the block tables."""

        def attend(q_latent: torch.Tensor, q_rope: torch.Tensor) -> torch.Tensor:  # [B, 1, H, *]
            out = mla_decode(q_latent[:, 0], q_rope[:, 0], cache_latent, cache_k_rope, call.block_tables,
                             call.seq_lens, self.cache.block_size, scale)
            return out[:, None]

        return attend


def _kernel_call(cache: PagedLatentCache, pieces: list[Piece], offsets: list[int]) -> _KernelCall:
    """The rows of one attention call, each reading its keys through its block table."""
    device, size = cache.device, cache.block_size
    width = max(p.count for p in pieces)
    lens = [p.start + p.count for p in pieces]
    visible = max(lens)
    blocks = -(-visible // size)
    tables = [list(p.block_table[: -(-n // size)]) for p, n in zip(pieces, lens, strict=True)]
    block_tables = torch.tensor([t + [0] * (blocks - len(t)) for t in tables], dtype=torch.int32, device=device)
    position = torch.arange(visible, device=device)
    key_slots = block_tables.long()[:, position // size] * size + position % size  # [B, T]
    rows = zip(pieces, offsets, strict=True)
    queries = torch.tensor([[offset + min(s, p.count - 1) for s in range(width)] for p, offset in rows])
    starts = torch.tensor([p.start for p in pieces], device=device)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    query_position = (starts[:, None] + torch.arange(width, device=device)).minimum(seq_lens[:, None] - 1)
    return _KernelCall(
        queries=queries.to(device),
        real=torch.arange(width, device=device)[None, :] < (seq_lens - starts)[:, None],
        block_tables=block_tables,
        seq_lens=seq_lens,
        key_slots=key_slots,
        allowed=position[None, None, :] <= query_position[..., None],
    )
