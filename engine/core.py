"""The engine loop: requests join at any time, and each `step` runs one scheduled forward pass.

`LLM.generate`, `LLM.chat` and `kcode serve` all drive this one loop, so offline and served results agree.
A step returns one `TokenEvent` per sequence that produced a token (a chunk of a long prompt produces
none); a finished or aborted sequence frees its cache blocks at once, keeping its full blocks as prefix
cache for requests that start the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.block_manager import BlockManager
from engine.cuda_graphs import DecodeGraphs
from engine.errors import ModelInputError
from engine.kernels.select import use_cuda_graphs
from engine.model_runner import ModelRunner
from engine.models.deepseek_v3 import DeepseekV3ForCausalLM
from engine.paged_cache import PagedLatentCache
from engine.scheduler import Scheduler
from engine.sequence import OutputWatcher, Request, Sequence, TokenEvent, check_request, new_sequence


@dataclass(frozen=True)
class CacheOptions:
    """How big the paged latent cache is and how much one step may do (vLLM's names)."""

    cache_tokens: int = 65536
    """Token slots in the latent cache, shared by every sequence; at least `max_model_len`."""
    block_size: int = 16
    max_num_seqs: int = 64
    """Sequences running at once."""
    max_num_batched_tokens: int = 1024
    """New tokens per forward pass: prompts are prefilled in chunks of at most this, mixed with decoding.
    Peak attention memory grows with chunk x context, not context squared."""
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        for name in ("cache_tokens", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelInputError(f"{name} must be a positive integer, got {value!r}")


def check_cache_fits(options: CacheOptions, max_model_len: int) -> None:
    """A cache that holds one whole context lets every sequence finish once the others leave."""
    if options.cache_tokens < max_model_len:
        raise ModelInputError(
            f"cache_tokens ({options.cache_tokens}) must hold one whole context (max_model_len {max_model_len})"
        )


@dataclass(frozen=True)
class CoreStats:
    running: int
    waiting: int
    cache_blocks_used: int
    cache_blocks_total: int
    prefix_cache_queried_tokens: int
    prefix_cache_hit_tokens: int
    preemptions: int


class EngineCore:
    def __init__(
        self,
        model: DeepseekV3ForCausalLM,
        options: CacheOptions,
        *,
        eos_ids: frozenset[int],
        max_model_len: int,
        sampled_vocab: int | None,
    ) -> None:
        check_cache_fits(options, max_model_len)
        self.model = model
        self.eos_ids = eos_ids
        self.max_model_len = max_model_len
        num_blocks = -(-options.cache_tokens // options.block_size)
        self.blocks = BlockManager(num_blocks, options.block_size, prefix_caching=options.enable_prefix_caching)
        cache = PagedLatentCache(
            model.config, num_blocks, options.block_size, dtype=model.options.dtype, device=self.device
        )
        graphs = None
        if use_cuda_graphs(self.device) and model.options.attention == "absorbed":
            graphs = DecodeGraphs(model, cache, max_batch=options.max_num_seqs, max_model_len=max_model_len)
        self.runner = ModelRunner(model, cache, sampled_vocab=sampled_vocab, graphs=graphs)
        self.scheduler = Scheduler(
            self.blocks, max_num_seqs=options.max_num_seqs, max_num_batched_tokens=options.max_num_batched_tokens
        )
        self._sequences: dict[int, Sequence] = {}
        self._next_id = 0

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def check(self, request: Request, *, label: str = "the prompt") -> None:
        """Raise `RequestError` now for a request the model cannot take, before it is queued."""
        check_request(request, vocab_size=self.model.config.vocab_size, max_model_len=self.max_model_len, label=label)

    def add(self, request: Request, watcher: OutputWatcher) -> int:
        """Queue a request; returns its id, which its `TokenEvent`s carry."""
        self.check(request)
        request_id, self._next_id = self._next_id, self._next_id + 1
        seq = new_sequence(
            request_id, request, watcher, eos_ids=self.eos_ids, max_model_len=self.max_model_len, device=self.device
        )
        self._sequences[request_id] = seq
        self.scheduler.add(seq)
        return request_id

    def abort(self, request_id: int) -> None:
        """Drop a request (a client went away); its blocks are free for the next step. Unknown ids: nothing."""
        seq = self._sequences.pop(request_id, None)
        if seq is not None:
            self.scheduler.remove(seq)

    def step(self) -> list[TokenEvent]:
        chunks = self.scheduler.schedule()
        if not chunks:
            if self.scheduler.has_work:  # cache_tokens >= max_model_len makes this unreachable
                raise RuntimeError("the scheduler found work it could not place in the latent cache")
            return []
        tokens = iter(self.runner.run(chunks))
        events = []
        for chunk in chunks:
            seq = chunk.seq
            seq.num_computed += chunk.count
            seq.named_blocks = self.blocks.name_full_blocks(seq.block_table, seq.tokens, seq.num_computed,
                                                            seq.named_blocks)
            if chunk.samples:
                event = seq.append(next(tokens))
                events.append(event)
                if event.finish_reason is not None:
                    self.abort(seq.id)
        return events

    def stats(self) -> CoreStats:
        s = self.scheduler
        return CoreStats(
            running=len(s.running),
            waiting=len(s.waiting),
            cache_blocks_used=self.blocks.used_blocks,
            cache_blocks_total=self.blocks.num_blocks,
            prefix_cache_queried_tokens=s.stats.prefix_queried_tokens,
            prefix_cache_hit_tokens=s.stats.prefix_hit_tokens,
            preemptions=s.stats.preemptions,
        )
