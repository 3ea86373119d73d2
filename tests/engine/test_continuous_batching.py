"""Continuous batching on a real tiny fp32 checkpoint: requests that join mid-run, a cache so small that sequences
are preempted and recomputed, a shared 1,000-token prefix served from the prefix cache, and abandoned streams,
all give each request exactly the tokens it gets alone.

The model is `make_tiny(seed=1)` in float32, whose greedy continuations have logit gaps far above the ~1e-6 by
which differently batched float32 products can differ (see test_generate.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

from engine.llm import LLM
from engine.paged_cache import PagedAttention, Piece
from engine.sampling import SamplingParams
from engine.tiny import make_tiny

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
SEEDED = SamplingParams(temperature=1.0, seed=7, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "k2", dtype="fp32", seed=1)


@pytest.fixture(scope="module")
def alone(checkpoint: Path) -> LLM:
    """Runs every reference request by itself."""
    return LLM(checkpoint, dtype="float32", enable_prefix_caching=False)


def _prompts(count: int) -> list[list[int]]:
    return [[(7 * i + j) % 1200 + 20 for j in range(5 + 3 * i)] for i in range(count)]


def _alone(llm: LLM, prompt: list[int], params: SamplingParams) -> tuple[int, ...]:
    return llm.generate([prompt], params)[0].token_ids


def test_requests_that_join_a_running_batch_get_what_they_get_alone(checkpoint: Path, alone: LLM) -> None:
    llm = LLM(checkpoint, dtype="float32")
    prompts = _prompts(4)
    responses = []
    for prompt in prompts:  # a new request every three steps, while the others decode
        response = llm.completion_response(prompt, GREEDY)
        llm.start(response)
        responses.append(response)
        for _ in range(3):
            llm.step()
    assert llm.stats().running == 4, "all four must have been decoding together"
    while llm.core.has_work:
        llm.step()
    for prompt, response in zip(prompts, responses, strict=True):
        assert tuple(response.token_ids) == _alone(alone, prompt, GREEDY)


def test_a_full_cache_preempts_the_newest_and_it_still_finishes_with_its_own_tokens(
    checkpoint: Path, alone: LLM
) -> None:
    llm = LLM(checkpoint, dtype="float32", max_model_len=64, cache_tokens=64, block_size=4)
    prompts = _prompts(6)  # 5..20 prompt tokens plus 24 each: 6 sequences need ~3x the 64 slots
    params = [GREEDY, SEEDED] * 3
    outputs = llm.generate(prompts, params)
    assert llm.stats().preemptions > 0, "the cache was meant to be too small for all at once"
    for prompt, p, out in zip(prompts, params, outputs, strict=True):
        assert out.token_ids == _alone(alone, prompt, p)
        assert len(out.token_ids) == 24
    assert llm.stats().cache_blocks_used == 0


def _tokens_computed(llm: LLM, prompt: list[int]) -> tuple[int, tuple[int, ...]]:
    """How many tokens one request put through the model, and its answer."""
    sizes: list[int] = []

    def record(_: nn.Module, args: tuple[Any, ...]) -> None:
        sizes.append(args[0].shape[1])

    handle = llm.model.model.register_forward_pre_hook(record)
    try:
        tokens = _alone(llm, prompt, GREEDY)
    finally:
        handle.remove()
    return sum(sizes), tokens


def test_a_shared_1000_token_prefix_is_computed_once_and_changes_no_answer(checkpoint: Path, alone: LLM) -> None:
    llm = LLM(checkpoint, dtype="float32")
    prefix = [(31 * i) % 1200 + 20 for i in range(1000)]
    first, second = [*prefix, 5, 6, 7], [*prefix, 8, 9]
    computed_first, answer_first = _tokens_computed(llm, first)
    before = llm.stats()
    computed_second, answer_second = _tokens_computed(llm, second)
    after = llm.stats()
    assert computed_first == len(first) + 23
    hit = after.prefix_cache_hit_tokens - before.prefix_cache_hit_tokens
    assert hit == 992, "every whole 16-token block of the shared prefix"
    assert after.prefix_cache_queried_tokens - before.prefix_cache_queried_tokens == len(second) - 1
    assert computed_second == len(second) - hit + 23
    assert answer_first == _alone(alone, first, GREEDY)
    assert answer_second == _alone(alone, second, GREEDY)


def test_a_repeated_prompt_recomputes_only_its_last_token(checkpoint: Path) -> None:
    llm = LLM(checkpoint, dtype="float32", block_size=4)
    prompt = list(range(40, 72))  # 32 tokens: 8 whole blocks
    first, answer = _tokens_computed(llm, prompt)
    again, answer_again = _tokens_computed(llm, prompt)
    assert answer_again == answer and first == 32 + 23
    assert again == 4 + 23, "the last block is recomputed, since the last token's logits are needed"


def test_an_abandoned_stream_frees_its_sequence_at_once(checkpoint: Path) -> None:
    llm = LLM(checkpoint, dtype="float32")
    messages = [{"role": "user", "content": "hello"}]
    stream = llm.chat_stream(messages, None, SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
    for _ in range(5):
        next(stream)
    assert llm.stats().running == 1 and llm.stats().cache_blocks_used > 0
    stream.close()
    assert llm.stats().running == 0 and llm.stats().cache_blocks_used == 0
    assert llm.chat(messages, None, GREEDY)["choices"][0]["finish_reason"] == "length", "the engine goes on"


def test_two_streams_in_one_thread_advance_together(checkpoint: Path, alone: LLM) -> None:
    llm = LLM(checkpoint, dtype="float32")
    conversations = [[{"role": "user", "content": text}] for text in ("first question", "a second, longer one")]
    streams = [llm.chat_stream(c, None, GREEDY) for c in conversations]
    texts = ["", ""]
    live = [True, True]
    while any(live):
        for i, stream in enumerate(streams):
            if live[i]:
                chunk = next(stream, None)
                live[i] = chunk is not None
                if chunk and chunk["choices"]:
                    texts[i] += chunk["choices"][0]["delta"].get("content") or ""
    for conversation, text in zip(conversations, texts, strict=True):
        assert text == alone.chat(conversation, None, GREEDY)["choices"][0]["message"]["content"]



def test_decoding_rows_of_unlike_lengths_gather_their_keys_in_separate_calls(checkpoint: Path) -> None:
    """On the CPU every call gathers keys padded to its longest row, so decoding rows are grouped by length
    (powers of two: 3 | 4-7 | 64-127 keys); a prefill chunk keeps a call of its own."""
    llm = LLM(checkpoint, dtype="float32", block_size=4)
    table = list(range(40))
    pieces = [Piece(table, start, 1) for start in (3, 2, 100, 70, 5)] + [Piece(table, 0, 6)]
    context = PagedAttention.for_pieces(llm.core.runner.cache, pieces)
    calls = [(call.queries.flatten().tolist(), call.key_slots.shape[1]) for call in context.calls
             if call.key_slots is not None]
    assert calls == [([1], 3), ([0, 4], 6), ([3, 2], 101), ([5, 6, 7, 8, 9, 10], 6)]
