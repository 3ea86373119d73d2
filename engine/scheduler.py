"""Continuous batching: which sequences run in the next forward pass, and how many of their tokens.

Every step has a budget of `max_num_batched_tokens` new tokens. Running sequences go first, oldest first:
a decoding one takes one token, one still prefilling takes the next chunk of its prompt that the budget
leaves. Waiting sequences then join in arrival order while the budget, `max_num_seqs` and free blocks allow,
first taking whatever whole blocks of their prompt the prefix cache already holds. So prompts are prefilled
in chunks mixed with other sequences' decoding, and a newcomer starts at the next step, not after the
batch drains.

When a running sequence needs a block and none is free, the newest running sequence is preempted: its blocks
are freed and it goes back to the front of the queue, keeping what it generated. When it runs again its
prompt and output are computed anew (often mostly from the prefix cache), and it continues with exactly the
tokens it would have produced without the interruption.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.block_manager import BlockManager
from engine.sequence import Sequence


@dataclass(frozen=True)
class ScheduledChunk:
    seq: Sequence
    start: int
    count: int

    @property
    def samples(self) -> bool:
        """True when the chunk reaches the sequence's last token, so the pass yields its next one."""
        return self.start + self.count == len(self.seq.tokens)


@dataclass
class SchedulerStats:
    preemptions: int = 0
    prefix_queried_tokens: int = 0
    prefix_hit_tokens: int = 0


class Scheduler:
    def __init__(self, blocks: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        """In the order they were admitted: the last is the newest, the first to be preempted."""
        self.stats = SchedulerStats()

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """A finished or cancelled sequence: its blocks are freed at once (named ones stay as prefix cache)."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq.block_table)

    def schedule(self) -> list[ScheduledChunk]:
        budget = self.max_num_batched_tokens
        chunks: list[ScheduledChunk] = []
        preempted = False
        for seq in list(self.running):
            if budget == 0 or seq not in self.running:
                break
            count = min(seq.uncomputed, budget)
            while not self.blocks.allocate(seq.block_table, seq.num_computed + count):
                self._preempt(self.running[-1])
                preempted = True
                if seq not in self.running:
                    break
            if seq in self.running:
                chunks.append(ScheduledChunk(seq, seq.num_computed, count))
                budget -= count
        while self.waiting and budget and len(self.running) < self.max_num_seqs and not preempted:
            seq = self.waiting[0]
            self._reuse_cached_prefix(seq)
            count = min(seq.uncomputed, budget)
            if not self.blocks.allocate(seq.block_table, seq.num_computed + count):
                self.blocks.free(seq.block_table)  # give the prefix back: it may wait long
                seq.num_computed = seq.named_blocks = 0
                break
            self.stats.prefix_queried_tokens += len(seq.tokens) - 1
            self.stats.prefix_hit_tokens += seq.num_computed
            self.running.append(self.waiting.popleft())
            chunks.append(ScheduledChunk(seq, seq.num_computed, count))
            budget -= count
        return chunks

    def _reuse_cached_prefix(self, seq: Sequence) -> None:
        """Start from the cached blocks of the sequence's tokens; the last token is always computed, since its
        logits are what the pass is for."""
        cached = self.blocks.cached_prefix(seq.tokens[:-1])
        self.blocks.share(cached)
        seq.block_table = list(cached)
        seq.named_blocks = len(cached)
        seq.num_computed = len(cached) * self.blocks.block_size

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.block_table)
        seq.num_computed = seq.named_blocks = 0
        self.waiting.appendleft(seq)
        self.stats.preemptions += 1
