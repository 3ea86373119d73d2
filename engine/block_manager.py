"""Which blocks of the paged latent cache each sequence owns, and which full blocks hold a known prefix.

The cache is cut into blocks of `block_size` token slots. A sequence's block table lists its blocks in token
order, so its token t lives in slot `table[t // block_size] * block_size + t % block_size`. Blocks are
reference counted: a prompt prefix that several sequences share is stored once.

Prefix caching: once a block is full of computed tokens it is named by a hash of its tokens and of the name of
the block before it, so equal names mean equal prefixes and, since a token's latent depends only on the tokens
up to it, equal cached values. A freed block keeps its name and contents until the slots are needed again:
unnamed free blocks are reused first, then named ones least recently freed first, so the prefixes used last
live longest. This module knows token ids and block numbers only; the tensors live in `engine.paged_cache`.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence

from engine.errors import ModelInputError

BlockName = bytes


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ModelInputError(f"the cache needs at least one block of one slot, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self._refs = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        """Blocks nobody holds, in the order they are reused."""
        self._name_of: dict[int, BlockName] = {}
        self._block_named: dict[BlockName, int] = {}

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prefixes ------------------------------------------------------------------------------------

    def cached_prefix(self, tokens: Sequence[int]) -> list[int]:
        """The blocks holding the longest run of whole blocks at the start of `tokens` that is cached."""
        blocks: list[int] = []
        if not self.prefix_caching:
            return blocks
        name: BlockName = b""
        for start in range(0, len(tokens) - self.block_size + 1, self.block_size):
            name = _block_name(name, tokens[start : start + self.block_size])
            block = self._block_named.get(name)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def share(self, blocks: Sequence[int]) -> None:
        """Take a reference to each of `blocks` (from `cached_prefix`), taking free ones off the free list."""
        for block in blocks:
            self._refs[block] += 1
            self._free.pop(block, None)

    def name_full_blocks(self, table: Sequence[int], tokens: Sequence[int], num_computed: int, named: int) -> int:
        """Name the blocks of `table` that `num_computed` tokens fill, from block `named` on; returns how many
        of the table's blocks are named now. A block whose prefix another block already holds stays unnamed."""
        if not self.prefix_caching:
            return named
        full = num_computed // self.block_size
        name = self._name_of.get(table[named - 1], b"") if named else b""
        for i in range(named, full):
            name = _block_name(name, tokens[i * self.block_size : (i + 1) * self.block_size])
            if name not in self._block_named:
                self._block_named[name] = table[i]
                self._name_of[table[i]] = name
        return full

    # ---- allocation ----------------------------------------------------------------------------------

    def allocate(self, table: list[int], num_tokens: int) -> bool:
        """Grow `table` to hold `num_tokens` tokens; False, changing nothing, when too few blocks are free."""
        needed = self.blocks_for(num_tokens) - len(table)
        if needed > len(self._free):
            return False
        for _ in range(max(needed, 0)):
            block, _ = self._free.popitem(last=False)
            self._forget(block)
            self._refs[block] = 1
            table.append(block)
        return True

    def free(self, table: list[int]) -> None:
        """Drop the sequence's references, last block first, and empty its table."""
        for block in reversed(table):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None
                if block not in self._name_of:
                    self._free.move_to_end(block, last=False)  # nothing to keep: reuse it first
        table.clear()

    def _forget(self, block: int) -> None:
        name = self._name_of.pop(block, None)
        if name is not None:
            del self._block_named[name]


def _block_name(previous: BlockName, tokens: Sequence[int]) -> BlockName:
    """A 128-bit digest of the previous block's name and this block's ids: a collision would serve another
    prompt's cache, so a strong hash rather than Python's `hash`."""
    return hashlib.blake2b(previous + array("q", tokens).tobytes(), digest_size=16).digest()
