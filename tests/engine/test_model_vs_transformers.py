"""Our DeepSeek-V3 / K2 model against transformers' DeepseekV3ForCausalLM on the same saved checkpoints.

Both run in fp32 on logits of magnitude up to ~2.6. Measured worst differences: 2.1e-6 at positions 0-23 and
7.8e-6 at 3000-3023 (transformers computes rotation angles in fp32, we in fp64); plain vs absorbed
attention 2.0e-6; loop vs grouped MoE 0 (bit-identical). Tolerance: atol = rtol = 1e-5. transformers agrees
with DeepSeek's reference semantics on every point tested here (interleaved RoPE, YaRN frequencies and
softmax mscale, -inf masking of dropped groups, latent norms with eps 1e-6), so no patching is needed.
The paged cache is checked against full recompute, with blocks out of order and sequences mixed in one pass;
the last test covers the model's own input checks.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from engine.config import ModelConfig
from engine.loader import load_model
from engine.models.deepseek_v3 import (
    AttentionForm,
    DeepseekV3ForCausalLM,
    ModelInputError,
    ModelOptions,
    Router,
    positions_from_mask,
)
from engine.paged_cache import PagedAttention, PagedLatentCache, Piece
from engine.tiny_weights import tiny_config
from tests.engine.conftest import VOCAB, HfReference, hf_config

PRESETS = ["k2", "moonlight", "deepseek_v3"]
LOGIT_ATOL = 1e-5
PROMPT_LEN, STEPS = 8, 32
BLOCK = 4


def _random_ids(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _hf_logits(ref: HfReference, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ref.model(input_ids=ids, position_ids=positions).logits


@pytest.mark.parametrize("attention", ["plain", "absorbed"])
@pytest.mark.parametrize("preset", PRESETS)
def test_logits_match_transformers(
    hf_reference: Callable[[str], HfReference], preset: str, attention: AttentionForm
) -> None:
    ref = hf_reference(preset)
    ours = load_model(ref.path, dtype=torch.float32, attention=attention)
    ids = _random_ids(2, 24, seed=0)
    # positions near 0 and past the YaRN presets' original context (256), where interpolation acts
    for start in (0, 3000):
        positions = torch.arange(start, start + 24).expand(2, 24)
        expected = _hf_logits(ref, ids, positions)
        got = ours(ids, positions)
        torch.testing.assert_close(got, expected, atol=LOGIT_ATOL, rtol=LOGIT_ATOL)


@pytest.mark.parametrize("preset", PRESETS)
def test_reference_and_fast_paths_agree(hf_reference: Callable[[str], HfReference], preset: str) -> None:
    path = hf_reference(preset).path
    ids = _random_ids(3, 20, seed=1)
    positions = torch.arange(20).expand(3, 20)
    results = {
        (attention, moe): load_model(path, dtype=torch.float32, attention=attention, moe=moe)(ids, positions)
        for attention in ("plain", "absorbed")
        for moe in ("loop", "grouped")
    }
    reference = results["plain", "loop"]
    # the MoE forms run the same rows through the same experts and add in the same order: bit-identical
    assert torch.equal(results["plain", "grouped"], reference)
    assert torch.equal(results["absorbed", "grouped"], results["absorbed", "loop"])
    # absorbed attention reassociates the products: fp32 rounding only (measured <= 2e-6)
    torch.testing.assert_close(results["absorbed", "grouped"], reference, atol=LOGIT_ATOL, rtol=LOGIT_ATOL)


def _greedy_hf(ref: HfReference, prompt: torch.Tensor) -> tuple[list[int], float]:
    """Tokens and the smallest top-1/top-2 logit gap met on the way (a near-tie would make the test fragile)."""
    sequence, smallest_gap = prompt, float("inf")
    for _ in range(STEPS):
        logits = _hf_logits(ref, sequence, torch.arange(sequence.shape[1])[None])[0, -1]
        top = logits.topk(2).values
        smallest_gap = min(smallest_gap, (top[0] - top[1]).item())
        sequence = torch.cat([sequence, logits.argmax().view(1, 1)], dim=1)
    return sequence[0, PROMPT_LEN:].tolist(), smallest_gap


def _greedy_full(model: DeepseekV3ForCausalLM, prompt: torch.Tensor) -> list[int]:
    sequence = prompt
    for _ in range(STEPS):
        logits = model(sequence, torch.arange(sequence.shape[1])[None])[0, -1]
        sequence = torch.cat([sequence, logits.argmax().view(1, 1)], dim=1)
    return sequence[0, PROMPT_LEN:].tolist()


def _paged_cache(model: DeepseekV3ForCausalLM, num_blocks: int = 16) -> PagedLatentCache:
    return PagedLatentCache(model.config, num_blocks, BLOCK, dtype=torch.float32, device="cpu")


def _paged_pass(
    model: DeepseekV3ForCausalLM, cache: PagedLatentCache, pieces: list[tuple[list[int], list[int], int]]
) -> torch.Tensor:
    """One flattened pass over (block table, new tokens, first position) pieces; [N, V] logits."""
    ids = [t for _, tokens, _ in pieces for t in tokens]
    positions = [start + i for _, tokens, start in pieces for i in range(len(tokens))]
    context = PagedAttention.for_pieces(cache, [Piece(table, start, len(tokens)) for table, tokens, start in pieces])
    return model(torch.tensor([ids]), torch.tensor([positions]), context=context)[0]


def _greedy_cached(model: DeepseekV3ForCausalLM, prompt: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    """Prefill, then decode token by token through a paged cache whose blocks are out of order."""
    cache, table = _paged_cache(model), [9, 2, 14, 0, 5, 11, 7, 3, 12, 1]
    logits = _paged_pass(model, cache, [(table, prompt[0].tolist(), 0)])[-1]
    tokens, step_logits = [], [logits]
    for step in range(STEPS):
        token = int(logits.argmax())
        tokens.append(token)
        logits = _paged_pass(model, cache, [(table, [token], PROMPT_LEN + step)])[-1]
        step_logits.append(logits)
    return tokens, step_logits


@pytest.mark.parametrize("preset", PRESETS)
def test_greedy_continuations_match_transformers(
    hf_reference: Callable[[str], HfReference], preset: str
) -> None:
    ref = hf_reference(preset)
    prompt = _random_ids(1, PROMPT_LEN, seed=4)
    expected, smallest_gap = _greedy_hf(ref, prompt)
    assert smallest_gap > 10 * LOGIT_ATOL, f"fixture has a near-tie ({smallest_gap:.2e}); change the seed"
    assert len(set(expected)) > 4, "the continuation collapsed into a loop and would test little"
    for attention in ("plain", "absorbed"):
        ours = load_model(ref.path, dtype=torch.float32, attention=attention)
        assert _greedy_full(ours, prompt) == expected
        tokens, step_logits = _greedy_cached(ours, prompt)
        assert tokens == expected
        recomputed = ours(torch.cat([prompt, torch.tensor([expected])], dim=1), torch.arange(PROMPT_LEN + STEPS)[None])
        for step, logits in enumerate(step_logits[:-1]):
            expected_step = recomputed[0, PROMPT_LEN - 1 + step]
            torch.testing.assert_close(logits, expected_step, atol=LOGIT_ATOL, rtol=LOGIT_ATOL)


def _run_padded(model: DeepseekV3ForCausalLM, prompts: list[list[int]], left: bool) -> torch.Tensor:
    """One cacheless pass over a padded batch; [B, S, V] logits."""
    width = max(map(len, prompts))
    rows, masks = [], []
    for p in prompts:
        pad = [0] * (width - len(p))
        rows.append(pad + p if left else p + pad)
        real = [True] * len(p)
        masks.append([False] * len(pad) + real if left else real + [False] * len(pad))
    mask = torch.tensor(masks)
    return model(torch.tensor(rows), positions_from_mask(mask), attention_mask=mask)


@pytest.mark.parametrize("left", [True, False], ids=["left-padded", "right-padded"])
def test_padded_batch_matches_each_sequence_alone(hf_reference: Callable[[str], HfReference], left: bool) -> None:
    model = load_model(hf_reference("deepseek_v3").path, dtype=torch.float32)
    prompts = [_random_ids(1, 5, seed=3)[0].tolist(), _random_ids(1, 11, seed=4)[0].tolist()]
    batched = _run_padded(model, prompts, left)
    for row, prompt in enumerate(prompts):
        alone = model(torch.tensor([prompt]), torch.arange(len(prompt))[None])[0]
        real = batched[row, -len(prompt) :] if left else batched[row, : len(prompt)]
        torch.testing.assert_close(real, alone, atol=LOGIT_ATOL, rtol=LOGIT_ATOL)


def test_a_flattened_pass_of_mixed_sequences_matches_each_alone(hf_reference: Callable[[str], HfReference]) -> None:
    """Sequence A is prefilled in two chunks, the second in one pass with B's whole prompt and C's decoding;
    then all three decode together. Each token's logits equal its sequence's own full recompute."""
    model = load_model(hf_reference("deepseek_v3").path, dtype=torch.float32)
    a, b, c = (_random_ids(1, n, seed=s)[0].tolist() for n, s in ((11, 3), (5, 4), (7, 5)))
    cache = _paged_cache(model)
    tables = {"a": [3, 6, 1, 10], "b": [0, 9], "c": [4, 8, 2]}
    _paged_pass(model, cache, [(tables["a"], a[:6], 0), (tables["c"], c[:6], 0)])
    second = _paged_pass(model, cache, [(tables["a"], a[6:], 6), (tables["b"], b, 0), (tables["c"], c[6:], 6)])
    decode = {"a": [7, 8], "b": [9, 10], "c": [11, 12]}
    steps = [
        _paged_pass(model, cache, [(tables[k], [decode[k][i]], len(p) + i) for k, p in (("a", a), ("b", b), ("c", c))])
        for i in range(2)
    ]
    for key, prompt, got in (
        ("a", a, [second[4], steps[0][0], steps[1][0]]),
        ("b", b, [second[9], steps[0][1], steps[1][1]]),
        ("c", c, [second[10], steps[0][2], steps[1][2]]),
    ):
        full = prompt + decode[key]
        alone = model(torch.tensor([full]), torch.arange(len(full))[None])[0, len(prompt) - 1 :]
        torch.testing.assert_close(torch.stack(got), alone, atol=LOGIT_ATOL, rtol=LOGIT_ATOL)


def test_grouped_routing_matches_transformers_when_biased_scores_are_negative() -> None:
    """With negative biased scores, masking dropped groups with 0 instead of -inf would pick from them."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    raw = tiny_config("deepseek_v3", vocab_size=VOCAB)
    config = ModelConfig.from_hf(raw)
    hf_router, ours = DeepseekV3TopkRouter(hf_config(raw)), Router(config, device="cpu")
    generator = torch.Generator().manual_seed(5)
    experts, dim = config.n_routed_experts, config.hidden_size
    with torch.no_grad():
        for router in (hf_router, ours):
            generator.manual_seed(5)
            router.weight.copy_(0.1 * torch.randn(experts, dim, generator=generator))
            router.e_score_correction_bias.copy_(-1.0 + 0.3 * torch.randn(experts, generator=generator))
        x = torch.randn(64, dim, generator=generator)
        _, hf_weights, hf_indices = hf_router(x)
    weights, indices = ours(x)
    hf_order, order = hf_indices.argsort(dim=-1), indices.argsort(dim=-1)
    assert torch.equal(indices.gather(1, order), hf_indices.gather(1, hf_order))
    torch.testing.assert_close(weights.gather(1, order), hf_weights.gather(1, hf_order), atol=1e-6, rtol=1e-6)
    groups_used = [len(set(row)) for row in (indices // (experts // config.n_group)).tolist()]
    assert max(groups_used) <= config.topk_group
    torch.testing.assert_close(weights.sum(-1), torch.full((64,), config.routed_scaling_factor))


def test_bad_inputs_are_reported(hf_reference: Callable[[str], HfReference]) -> None:
    model = load_model(hf_reference("moonlight").path, dtype=torch.float32)
    ids = _random_ids(2, 6, seed=6)
    with pytest.raises(ModelInputError, match=r"positions must have the shape of input_ids \(2, 6\), got \(2, 5\)"):
        model(ids, torch.arange(5).expand(2, 5))
    with pytest.raises(ModelInputError, match=r"input_ids must be \[batch, seq\]"):
        model(ids[0], torch.arange(6))
    with pytest.raises(ModelInputError, match="attention must be 'plain' or 'absorbed', got 'flash'"):
        ModelOptions(attention="flash")  # type: ignore[arg-type]


def test_the_sdpa_prefill_path_matches_the_plain_form(hf_reference: Callable[[str], HfReference]) -> None:
    """The GPU prefill path (PyTorch's fused attention over per-head keys) against the plain form, with a cached
    prefix: 5 new queries over 12 keys, each seeing the prefix and the new keys up to itself."""
    attention = load_model(hf_reference("k2").path, dtype=torch.float32).model.layers[0].self_attn
    generator = torch.Generator().manual_seed(8)
    heads, nope, rope, rank = attention.heads, attention.nope, attention.rope, attention.rank
    q_nope = torch.randn(1, 5, heads, nope, generator=generator)
    q_pe = torch.randn(1, 5, heads, rope, generator=generator)
    latent, k_pe = torch.randn(1, 12, rank, generator=generator), torch.randn(1, 12, rope, generator=generator)
    allowed = torch.arange(12)[None, None, :] <= (7 + torch.arange(5))[None, :, None]
    expected = attention.attend_over(q_nope, q_pe, latent, k_pe, allowed)  # the absorbed form: another route
    torch.testing.assert_close(attention.attend_with_sdpa(q_nope, q_pe, latent, k_pe, allowed), expected,
                               atol=LOGIT_ATOL, rtol=LOGIT_ATOL)
