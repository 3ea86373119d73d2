"""Generation on a real tiny checkpoint: paged, cached decoding equals full recompute, batching changes nothing,
sequences stop for the right reason; plus the stop-string filter and the request checks.

The model is a float32 tiny K2 (`make_tiny(seed=1)`): its greedy continuations of these prompts have top-1/top-2
logit gaps of at least 2.7e-3, far above the ~1e-6 by which batched and cached float32 products can differ.
"""

from __future__ import annotations

import pytest
import torch

from engine.errors import RequestError
from engine.llm import LLM
from engine.models.deepseek_v3 import DeepseekV3ForCausalLM
from engine.sampling import SamplingParams
from engine.sequence import Request, check_request
from engine.text_output import StopStrings, TextOutput
from engine.tiny import make_tiny

STEPS = 32
GREEDY = SamplingParams(temperature=0, max_tokens=STEPS, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    return LLM(make_tiny(tmp_path_factory.mktemp("tiny") / "k2", dtype="fp32", seed=1), dtype="float32")


def _reference_greedy(model: DeepseekV3ForCausalLM, prompt: list[int], steps: int) -> list[int]:
    """The slow, obviously right loop: the whole sequence through the model each step, no cache."""
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([sequence]), torch.arange(len(sequence))[None])[0, -1]
            sequence.append(int(logits.argmax()))
    return sequence[len(prompt) :]


def _prompt(llm: LLM, text: str) -> list[int]:
    return llm.tokenizer.encode(text)


def test_greedy_generation_equals_full_recompute_token_for_token(llm: LLM) -> None:
    for text in ("The quick brown fox", "def main():\n    return 0"):
        prompt = _prompt(llm, text)
        out = llm.generate([prompt], GREEDY)[0]
        expected = _reference_greedy(llm.model, prompt, STEPS)
        assert list(out.token_ids) == expected
        assert len(set(expected)) > 8, "the continuation collapsed into a loop and would test little"
        assert out.finish_reason == "length" and out.prompt_token_ids == tuple(prompt)


def test_each_prompt_of_a_batch_gets_what_it_gets_alone(llm: LLM) -> None:
    prompts = [_prompt(llm, t) for t in ("Hello", "The quick brown fox jumps over the lazy dog", "import os, sys")]
    assert len({len(p) for p in prompts}) == 3
    # different budgets: rows leave the batch at steps 9 and 20 while the longest runs on
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (STEPS, 9, 20)]
    batched = llm.generate(prompts, params)
    for prompt, p, out in zip(prompts, params, batched, strict=True):
        alone = llm.generate([prompt], p)[0]
        assert out.token_ids == alone.token_ids and len(out.token_ids) == p.max_tokens
        assert out.text == alone.text and out.finish_reason == "length"
    assert list(batched[0].token_ids) == _reference_greedy(llm.model, prompts[0], STEPS)


def test_a_seeded_request_samples_the_same_in_any_batch(llm: LLM) -> None:
    seeded = SamplingParams(temperature=1.0, seed=5, max_tokens=20, ignore_eos=True)
    prompt = _prompt(llm, "import os")
    alone = llm.generate([prompt], seeded)[0]
    neighbours = [SamplingParams(temperature=0.8, max_tokens=6, ignore_eos=True), seeded, GREEDY]
    batched = llm.generate([_prompt(llm, "Hello there"), prompt, _prompt(llm, "x")], neighbours)
    assert batched[1].token_ids == alone.token_ids
    assert alone.token_ids != llm.generate([prompt], GREEDY)[0].token_ids[:20]


def test_the_context_limit_cuts_the_budget_and_rejects_full_prompts(llm: LLM) -> None:
    short = LLM(llm.path, dtype="float32", max_model_len=12)
    prompt = list(range(100, 109))  # 9 tokens leave 3
    out = short.generate([prompt], GREEDY)[0]
    assert len(out.token_ids) == 3 and out.finish_reason == "length"
    assert list(out.token_ids) == _reference_greedy(llm.model, prompt, 3)
    with pytest.raises(RequestError, match="prompt 1 has 12 tokens; the context holds 12, leaving none to generate"):
        short.generate([prompt, list(range(12))], GREEDY)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ((), "the prompt is empty; give at least one token"),
        ((5, 1256), r"the prompt holds 1256; token ids are integers in 0..1255"),
        ((1, -1), r"the prompt holds -1"),
        ((1, 2.0), r"the prompt holds 2.0"),
        ((True,), r"the prompt holds True"),
        (tuple(range(100)), "the prompt has 100 tokens; the context holds 100, leaving none to generate"),
    ],
)
def test_bad_prompts_are_rejected_naming_the_value(prompt: tuple[int, ...], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        check_request(Request(prompt, GREEDY), vocab_size=1256, max_model_len=100)


def test_generate_names_the_bad_prompt_and_starts_nothing(llm: LLM) -> None:
    with pytest.raises(RequestError, match="prompt 1 holds 99999"):
        llm.generate([[1, 2], [5, 99999]], GREEDY)
    with pytest.raises(RequestError, match="no prompts given"):
        llm.generate([], GREEDY)
    assert not llm.core.has_work


def test_the_core_checks_eagerly_and_stops_a_sequence_on_its_stop_id(llm: LLM) -> None:
    with pytest.raises(RequestError, match="the prompt is empty"):
        llm.core.add(Request((), GREEDY), TextOutput(llm.tokenizer, GREEDY))
    prompt = tuple(_prompt(llm, "Hello"))
    free = _reference_greedy(llm.model, list(prompt), 12)
    stop_id = free[5]
    first = free.index(stop_id)
    params = SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_id])
    request_id = llm.core.add(Request(prompt, params), TextOutput(llm.tokenizer, params))
    events = []
    while llm.core.has_work:
        events += llm.core.step()
    assert {e.request_id for e in events} == {request_id}
    assert [e.token_id for e in events] == free[: first + 1]
    assert (events[-1].finish_reason, events[-1].stop_reason) == ("stop", stop_id)
    assert all(e.finish_reason is None for e in events[:-1])


def test_stop_strings_hold_back_a_possible_start_and_cut_at_the_first_match() -> None:
    stops = StopStrings(["END", "##"])
    assert stops.push("abc E") == "abc "  # "E" could begin "END"
    assert stops.push("N") == ""  # "EN" still could
    assert stops.push("x#") == "ENx"  # "EN" cannot any more; "#" could begin "##"
    assert stops.push("#tail END") == ""  # "##" completes first
    assert stops.matched == "##" and stops.push("more") == ""
    released = StopStrings(["STOP"])
    assert released.push("no ST") + released.flush() == "no ST" and released.matched is None
    earliest = StopStrings(["bbb", "a"])
    assert earliest.push("xxbbbya") == "xx" and earliest.matched == "bbb"
    assert StopStrings([]).push("all at once") == "all at once"


def test_text_output_drops_special_ids_unless_asked_and_trims_the_stop_string(llm: LLM) -> None:
    tok = llm.tokenizer
    ids = [*tok.encode("a, b"), tok.special_id("<|im_middle|>"), *tok.encode(" c STOP d")]
    plain = TextOutput(tok, SamplingParams(stop="STOP"))
    matched = [plain.feed(i) for i in ids]
    assert plain.finish() == "a, b c " and matched[-1] == "STOP"
    raw = TextOutput(tok, SamplingParams(skip_special_tokens=False))
    for i in ids:
        raw.feed(i)
    assert raw.finish() == "a, b<|im_middle|> c STOP d"
