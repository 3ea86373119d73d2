"""One forward pass over a scheduled step: the chunks' tokens flattened into one row, then a token for each
sequence whose chunk reached its end.

Rows never mix: each sequence attends only to its own cache blocks, and every other layer works token by
token, so a sequence gets the tokens it would get alone, up to the floating-point rounding of differently
shaped products.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.cuda_graphs import DecodeGraphs
from engine.models.deepseek_v3 import DeepseekV3ForCausalLM
from engine.paged_cache import PagedAttention, PagedLatentCache, Piece
from engine.sampling import sample
from engine.scheduler import ScheduledChunk


class ModelRunner:
    def __init__(self, model: DeepseekV3ForCausalLM, cache: PagedLatentCache, *, sampled_vocab: int | None,
                 graphs: DecodeGraphs | None = None) -> None:
        """Ids at or above `sampled_vocab` get -inf logits before the logits processors run, so a model
        vocabulary padded past its tokenizer's never yields an id the tokenizer cannot decode. With `graphs`,
        steps that only decode replay a CUDA graph."""
        self.model = model
        self.cache = cache
        self.sampled_vocab = sampled_vocab
        self.graphs = graphs

    @torch.inference_mode()
    def run(self, chunks: Sequence[ScheduledChunk]) -> list[int]:
        """The next token of each chunk that `samples`, in the chunks' order; the others only fill the cache."""
        sampling = [c.seq for c in chunks if c.samples]
        if not sampling:
            self._forward(chunks)
            return []
        decoding = all(c.count == 1 and c.samples for c in chunks)
        if self.graphs is not None and decoding and len(chunks) <= self.graphs.max_batch:
            logits = self.graphs.logits([c.seq.tokens[c.start] for c in chunks], [c.start for c in chunks],
                                        [c.seq.block_table for c in chunks])
        else:
            logits = self._forward(chunks)
        if self.sampled_vocab is not None:
            logits[:, self.sampled_vocab :] = float("-inf")
        for row, seq in enumerate(sampling):
            for processor in seq.params.logits_processors:
                logits[row] = processor(seq.output, logits[row])
        return sample(logits, [s.params for s in sampling], [s.generator for s in sampling])

    def _forward(self, chunks: Sequence[ScheduledChunk]) -> torch.Tensor:
        """The chunks' tokens flattened into one row through the model; fp32 logits [B, V] of the last token of
        each chunk that samples."""
        device = self.cache.device
        ids = [t for c in chunks for t in c.seq.tokens[c.start : c.start + c.count]]
        positions = [p for c in chunks for p in range(c.start, c.start + c.count)]
        context = PagedAttention.for_pieces(self.cache, [Piece(c.seq.block_table, c.start, c.count) for c in chunks])
        hidden = self.model.model(
            torch.tensor([ids], device=device), torch.tensor([positions], device=device), context
        )  # [1, N, D]
        ends, end = [], 0
        for chunk in chunks:
            end += chunk.count
            if chunk.samples:
                ends.append(end - 1)
        return self.model.lm_head(hidden[0, torch.tensor(ends, device=device, dtype=torch.long)]).float()
