"""The paged cache's bookkeeping alone: blocks handed out and given back, shared prefixes found by name, and
the order in which freed blocks are reused."""

from __future__ import annotations

import pytest

from engine.block_manager import BlockManager
from engine.errors import ModelInputError


def test_allocation_grows_a_table_block_by_block_and_refuses_without_changing_anything() -> None:
    blocks = BlockManager(4, 4)
    table: list[int] = []
    assert blocks.allocate(table, 5) and len(table) == 2 and blocks.free_blocks == 2
    assert blocks.allocate(table, 8) and len(table) == 2, "8 tokens still fit in two blocks"
    other: list[int] = []
    assert not blocks.allocate(other, 13), "13 tokens need 4 blocks, 2 are free"
    assert other == [] and blocks.free_blocks == 2
    blocks.free(table)
    assert table == [] and blocks.free_blocks == 4 and blocks.used_blocks == 0


def test_a_named_prefix_is_found_shared_and_survives_its_owner() -> None:
    blocks = BlockManager(8, 4)
    tokens = list(range(10, 21))  # 11 tokens: two full blocks and a partial one
    table: list[int] = []
    blocks.allocate(table, len(tokens))
    assert blocks.name_full_blocks(table, tokens, num_computed=11, named=0) == 2
    assert blocks.cached_prefix(tokens) == table[:2]
    assert blocks.cached_prefix([*tokens[:4], 99, *tokens[5:]]) == table[:1], "a change in block 2 stops the match"
    assert blocks.cached_prefix([99, *tokens[1:]]) == [], "names chain: block 2 alone never matches"
    shared = table[:2]
    blocks.share(shared)
    blocks.free(table)  # the first owner leaves; the sharer still holds two blocks
    assert blocks.used_blocks == 2
    rest: list[int] = []
    assert blocks.allocate(rest, 4 * 6) and not blocks.allocate(rest, 4 * 7)  # every free block, no more
    assert set(rest).isdisjoint(shared) and blocks.cached_prefix(tokens) == shared


def test_freed_blocks_keep_their_names_until_reused_least_recently_freed_first() -> None:
    blocks = BlockManager(3, 2)
    first, second = [1, 2], [3, 4]
    tables: list[list[int]] = [[], []]
    for table, tokens in zip(tables, (first, second), strict=True):
        blocks.allocate(table, 2)
        blocks.name_full_blocks(table, tokens, num_computed=2, named=0)
    blocks.free(tables[0])
    blocks.free(tables[1])
    assert blocks.cached_prefix(first) and blocks.cached_prefix(second)
    new: list[int] = []
    blocks.allocate(new, 2)  # the never-named block goes first
    assert blocks.cached_prefix(first) and blocks.cached_prefix(second)
    blocks.allocate(new, 4)  # then the one freed first
    assert blocks.cached_prefix(first) == [] and blocks.cached_prefix(second) != []


def test_without_prefix_caching_nothing_is_named() -> None:
    blocks = BlockManager(2, 2, prefix_caching=False)
    table: list[int] = []
    blocks.allocate(table, 4)
    assert blocks.name_full_blocks(table, [1, 2, 3, 4], num_computed=4, named=0) == 0
    assert blocks.cached_prefix([1, 2, 3, 4]) == []


@pytest.mark.parametrize(("num_blocks", "block_size"), [(0, 16), (4, 0)])
def test_an_empty_cache_is_refused(num_blocks: int, block_size: int) -> None:
    with pytest.raises(ModelInputError, match="at least one block of one slot"):
        BlockManager(num_blocks, block_size)
