"""Decode steps replayed from CUDA graphs, one per batch size, so a step costs one launch, not hundreds.

At batch 1 a decode step is a few hundred small kernels whose launches, not the weights, set the pace (22 ms
a step measured on an H200 where reading the weights takes 0.35 ms). A graph captures the whole forward pass
of a decode step once per batch size in `BATCH_SIZES` and replays it: the ids, positions, cache slots, block
tables and lengths live in static buffers that each step overwrites, and the logits come back in a static
buffer too. A batch runs in the smallest captured size that holds it; the rows past it decode a dummy
sequence in the cache's scratch block, so they touch no real sequence's latents.

Capture needs the kernel path (`engine.kernels.select`): the torch references read back to the host and
change shape with the data, which a graph cannot hold. Every kernel warms up (autotunes, probes
`_scaled_mm`) in the eager passes before the capture. With `capture=False` the same static-buffer step runs
eagerly: the CPU tests check that way that padding and buffers change no token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from engine.models.deepseek_v3 import DeepseekV3ForCausalLM
from engine.paged_cache import PagedAttention, PagedLatentCache

BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
WARMUP_PASSES = 2


class _StaticStep:
    """One batch size's buffers, and the step that reads them (a graph's replay, or the eager pass)."""

    def __init__(self, batch: int, max_blocks: int, cache: PagedLatentCache) -> None:
        device = cache.device
        self.ids = torch.zeros(1, batch, dtype=torch.long, device=device)
        self.positions = torch.zeros(1, batch, dtype=torch.long, device=device)
        self.write_slots = torch.zeros(batch, dtype=torch.long, device=device)
        self.block_tables = torch.zeros(batch, max_blocks, dtype=torch.int32, device=device)
        self.seq_lens = torch.ones(batch, dtype=torch.int32, device=device)
        self.context = PagedAttention.for_decoding(cache, self.write_slots, self.block_tables, self.seq_lens)
        self.logits: torch.Tensor | None = None
        self.replay: Callable[[], None] = lambda: None


class DecodeGraphs:
    def __init__(self, model: DeepseekV3ForCausalLM, cache: PagedLatentCache, *, max_batch: int,
                 max_model_len: int, capture: bool = True) -> None:
        self.model = model
        self.cache = cache
        self.capture = capture
        self.sizes = (*[size for size in BATCH_SIZES if size < max_batch], max_batch)
        self.max_blocks = -(-max_model_len // cache.block_size)
        self._steps: dict[int, _StaticStep] = {}
        self._pool: Any = None
        """The graphs' shared memory pool (torch's opaque handle): only one replays at a time."""

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    def logits(
        self, ids: Sequence[int], positions: Sequence[int], block_tables: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """fp32 logits [n, V] of one decode step: sequence i feeds ids[i] at positions[i] (its cache then
        holds positions[i] + 1 tokens) and its blocks are block_tables[i]."""
        n = len(ids)
        step = self._step(next(size for size in self.sizes if size >= n))
        size, scratch = self.cache.block_size, self.cache.scratch_block
        padding = step.ids.shape[1] - n
        device = self.cache.device
        step.ids[0].copy_(torch.tensor([*ids, *[0] * padding]))
        step.positions[0].copy_(torch.tensor([*positions, *[0] * padding]))
        slots = [table[p // size] * size + p % size for table, p in zip(block_tables, positions, strict=True)]
        step.write_slots.copy_(torch.tensor([*slots, *[scratch * size] * padding]))
        step.seq_lens.copy_(torch.tensor([p + 1 for p in positions] + [1] * padding, dtype=torch.int32))
        tables = torch.full((step.ids.shape[1], self.max_blocks), scratch, dtype=torch.int32)
        for row, table in enumerate(block_tables):
            tables[row, : len(table)] = torch.tensor(table, dtype=torch.int32)
        step.block_tables.copy_(tables.to(device, non_blocking=True))
        step.replay()
        assert step.logits is not None, "a built step has its logits buffer"
        return step.logits[:n]

    def _step(self, batch: int) -> _StaticStep:
        if batch not in self._steps:
            self._steps[batch] = self._build(batch)
        return self._steps[batch]

    def _build(self, batch: int) -> _StaticStep:
        step = _StaticStep(batch, self.max_blocks, self.cache)
        step.block_tables.fill_(self.cache.scratch_block)
        step.write_slots.fill_(self.cache.scratch_block * self.cache.block_size)

        def forward() -> torch.Tensor:
            hidden = self.model.model(step.ids, step.positions, step.context)  # [1, b, D]
            return self.model.lm_head(hidden[0]).float()

        if not self.capture:

            def eager() -> None:
                step.logits = forward()

            step.replay = eager
            step.logits = forward()
            return step
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_PASSES):
                forward()
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            step.logits = forward()
        step.replay = graph.replay
        return step
