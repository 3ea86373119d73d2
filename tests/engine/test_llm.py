"""The public API on real tiny checkpoints: `LLM.generate`, `LLM.chat`, `LLM.chat_stream`, `make_tiny`.

A random tiny model writes no tool calls of its own, so tool-call tests script the output through the one seam
vLLM also offers, a logits processor: the real model runs every step and the processor only overrides which
token wins, so rendering, prefill, decoding, stopping, parsing and streaming are all the real paths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import engine
from engine import errors
from engine.chat_format import render_ids
from engine.config import ConfigError
from engine.llm import LLM
from engine.loader import CheckpointError
from engine.sampling import LogitsProcessor, SamplingParams
from engine.tiny import make_tiny
from engine.tiny_tokenizer import TINY_VOCAB_SIZE, write_tiny_tokenizer
from engine.tiny_weights import tiny_config, write_tiny_checkpoint
from engine.tokenizer import Tokenizer, TokenizerFileError, UnknownTokenError

USER = [{"role": "user", "content": "List the files, please."}]
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    return LLM(make_tiny(tmp_path_factory.mktemp("tiny") / "k2-tiny", dtype="fp32", seed=1), dtype="float32")


def forcing(script: Sequence[int]) -> LogitsProcessor:
    """Make the scripted ids win, one per step, then leave the model alone."""

    def force(generated: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if len(generated) >= len(script):
            return logits
        forced = torch.full_like(logits, float("-inf"))
        forced[script[len(generated)]] = 0.0
        return forced

    return force


def _ids(tok: Tokenizer, *parts: str) -> list[int]:
    """Ordinary text parts encoded, `<|...|>` marker names as their special ids."""
    out: list[int] = []
    for part in parts:
        out.extend([tok.special_id(part)] if part.startswith("<|") else tok.encode(part))
    return out


def _call(header: str, arguments: str) -> list[str]:
    return ["<|tool_call_begin|>", header, "<|tool_call_argument_begin|>", arguments, "<|tool_call_end|>"]


def _scripted(llm: LLM, *parts: str, max_tokens: int = 64) -> tuple[list[int], SamplingParams]:
    script = _ids(llm.tokenizer, *parts)
    return script, SamplingParams(temperature=0, max_tokens=max_tokens, logits_processors=[forcing(script)])


def _stream(llm: LLM, params: SamplingParams, tools: Any = None) -> list[dict[str, Any]]:
    return list(llm.chat_stream(USER, tools, params))


def _streamed_content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def _streamed_calls(chunks: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    calls: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        for piece in (chunk["choices"][0]["delta"].get("tool_calls", []) if chunk["choices"] else []):
            calls.setdefault(piece["index"], []).append(piece)
    return calls


# ---- generate ----------------------------------------------------------------------------------------------


def test_text_and_token_id_prompts_give_the_same_completion_in_vllm_shape(llm: LLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    by_text = llm.generate("def main():", params)[0]
    by_ids = llm.generate(list(by_text.prompt_token_ids), params)[0]
    assert by_text.prompt == "def main():" and by_ids.prompt is None
    assert by_text.prompt_token_ids == tuple(llm.tokenizer.encode("def main():"))
    assert by_ids.token_ids == by_text.token_ids and by_ids.text == by_text.text
    assert by_text.outputs[0].text == by_text.text and by_text.outputs[0].token_ids == by_text.token_ids
    assert by_text.request_id != by_ids.request_id
    both: list[str | list[int]] = ["def main():", list(by_text.prompt_token_ids)]
    mixed = llm.generate(both, params)
    assert [o.token_ids for o in mixed] == [by_text.token_ids] * 2
    # prompt text is trusted like a rendered template: marker names become their special ids
    marked = llm.generate("<|im_user|>hi", params)[0]
    assert marked.prompt_token_ids[0] == llm.tokenizer.special_id("<|im_user|>")


def test_max_tokens_ends_with_length(llm: LLM) -> None:
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0]
    assert len(out.token_ids) == 5 and out.finish_reason == "length" and out.outputs[0].stop_reason is None
    assert out.text == llm.tokenizer.decode(t for t in out.token_ids if not llm.tokenizer.is_special(t))


def test_a_stop_string_ends_the_output_and_is_cut_from_the_text(llm: LLM) -> None:
    free = llm.generate("The quick brown fox", SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))[0]
    stop = next(w for i in range(6, len(free.text)) if (w := free.text[i : i + 3]).isascii() and w.isalpha())
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, stop=["@@never@@", stop])
    out = llm.generate("The quick brown fox", params)[0]
    assert out.text == free.text[: free.text.index(stop)]
    assert (out.finish_reason, out.outputs[0].stop_reason) == ("stop", stop)
    assert out.token_ids == free.token_ids[: len(out.token_ids)] and len(out.token_ids) < 32


def test_stop_token_ids_and_eos_end_the_output_unless_eos_is_ignored(llm: LLM) -> None:
    tok = llm.tokenizer
    free = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))[0]
    stop_id = free.token_ids[4]
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=16, stop_token_ids=[stop_id]))[0]
    assert out.token_ids == free.token_ids[: free.token_ids.index(stop_id) + 1]
    assert (out.finish_reason, out.outputs[0].stop_reason) == ("stop", stop_id)
    eos = tok.special_id("[EOS]")
    script = [*tok.encode("ok"), eos]
    stopped = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=10, logits_processors=[forcing(script)]))
    assert list(stopped[0].token_ids) == script and stopped[0].text == "ok"
    assert (stopped[0].finish_reason, stopped[0].outputs[0].stop_reason) == ("stop", None)
    ignoring = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logits_processors=[forcing(script)])
    kept_going = llm.generate("Hello", ignoring)[0]
    assert list(kept_going.token_ids[: len(script)]) == script
    assert len(kept_going.token_ids) == 10 and kept_going.finish_reason == "length"


def test_seeds_reproduce_and_differ_and_filters_that_keep_one_token_are_greedy(llm: LLM) -> None:
    def run(**kw: Any) -> tuple[int, ...]:
        return llm.generate("import os", SamplingParams(max_tokens=16, ignore_eos=True, **kw))[0].token_ids

    assert run(seed=3) == run(seed=3)
    assert len({run(seed=3), run(seed=4), run(seed=5)}) == 3
    greedy = run(temperature=0)
    assert run(temperature=1.5, top_k=1, seed=6) == greedy
    assert run(temperature=1.5, top_p=1e-9, seed=7) == greedy
    assert run(seed=3) != greedy


def test_bad_arguments_raise_clear_errors(llm: LLM, tmp_path: Path) -> None:
    with pytest.raises(errors.SamplingParamsError, match="sampling_params must be one SamplingParams or 2 of them"):
        llm.generate(["a", "b"], [SamplingParams()])
    with pytest.raises(errors.RequestError, match="prompt 0 is empty"):
        llm.generate([""])
    with pytest.raises(errors.ModelInputError, match=r"dtype must be one of \['bfloat16', 'float16', 'float32'\]"):
        LLM(llm.path, dtype="int8")
    with pytest.raises(errors.ModelInputError, match=r"max_model_len must be in 2\.\.8192"):
        LLM(llm.path, max_model_len=9000)
    weights_only = tmp_path / "no-tokenizer"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (weights_only / name).write_bytes((llm.path / name).read_bytes())
    with pytest.raises(TokenizerFileError, match=r"tiktoken.model: not found"):
        LLM(weights_only)


def test_ids_past_the_tokenizer_in_a_padded_vocabulary_are_never_sampled(tmp_path: Path) -> None:
    """The head gives every tokenizer id logit 0 and the 64 padding ids random ones: unmasked, greedy picks
    a padding id at once and decoding it raises UnknownTokenError."""
    config = tiny_config("k2", vocab_size=TINY_VOCAB_SIZE) | {"vocab_size": TINY_VOCAB_SIZE + 64}
    root = write_tiny_checkpoint(tmp_path / "padded", config, dtype="fp32", seed=1)
    write_tiny_tokenizer(root)
    tensors = load_file(root / "model.safetensors")
    tensors["lm_head.weight"][:TINY_VOCAB_SIZE] = 0.0
    save_file(tensors, root / "model.safetensors")
    padded = LLM(root, dtype="float32")
    with torch.no_grad():
        logits = padded.model(torch.tensor([[5, 6, 7]]), torch.arange(3)[None])[0, -1]
    assert logits.argmax().item() >= TINY_VOCAB_SIZE
    for params in (SamplingParams(temperature=0, max_tokens=8), SamplingParams(temperature=1.0, max_tokens=8, seed=3)):
        out = padded.generate([[5, 6, 7]], params)[0]
        assert len(out.token_ids) == 8 and max(out.token_ids) < TINY_VOCAB_SIZE
    reply = padded.chat(USER, sampling_params=SamplingParams(temperature=1.0, max_tokens=8, seed=4))
    assert reply["usage"]["completion_tokens"] >= 1


def test_settings_the_config_rules_out_fail_before_any_weight_is_read(llm: LLM, tmp_path: Path) -> None:
    """No weights in the directory: a check that ran after loading would report the missing file instead."""
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for file in llm.path.iterdir():
        if file.suffix != ".safetensors":
            (no_weights / file.name).write_bytes(file.read_bytes())
    with pytest.raises(errors.ModelInputError, match=r"max_model_len must be in 2\.\.8192.*got 9000"):
        LLM(no_weights, max_model_len=9000)
    with pytest.raises(errors.ModelInputError, match="dtype must be one of"):
        LLM(no_weights, dtype="int8")
    with pytest.raises(CheckpointError, match="has neither"):
        LLM(no_weights, max_model_len=64)  # settings that pass reach the weights
    config = json.loads((no_weights / "config.json").read_text())
    (no_weights / "config.json").write_text(json.dumps(config | {"vocab_size": TINY_VOCAB_SIZE - 256}))
    with pytest.raises(CheckpointError, match=rf"has {TINY_VOCAB_SIZE} ids, the model only {TINY_VOCAB_SIZE - 256}"):
        LLM(no_weights)


def test_fp8_weights_kept_or_dequantised_at_load_generate_the_same(tmp_path: Path) -> None:
    path = make_tiny(tmp_path / "fp8", dtype="fp8", seed=1)
    dequantised = LLM(path, dtype="float32")
    kept = LLM(path, dtype="float32", keep_fp8=True)
    kept_dtypes = {n: p.dtype for n, p in kept.model.named_parameters()}
    assert kept_dtypes["model.layers.0.self_attn.kv_b_proj.weight"] == torch.float8_e4m3fn
    ids = torch.tensor([dequantised.tokenizer.encode("def main():")])
    positions = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        assert torch.equal(kept.model(ids, positions), dequantised.model(ids, positions))
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    expected = dequantised.generate("def main():", params)[0].token_ids
    assert kept.generate("def main():", params)[0].token_ids == expected and len(set(expected)) > 8


# ---- chat --------------------------------------------------------------------------------------------------


def test_chat_returns_an_openai_completion_with_matching_usage(llm: LLM) -> None:
    params = SamplingParams(temperature=0.8, seed=2, max_tokens=12)
    reply = llm.chat(USER, sampling_params=params)
    assert set(reply) == {"id", "object", "created", "model", "choices", "usage"}
    assert reply["id"].startswith("chatcmpl-") and reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int) and reply["model"] == "k2-tiny"
    (choice,) = reply["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and "tool_calls" not in choice["message"]
    usage = reply["usage"]
    assert usage["prompt_tokens"] == len(render_ids(llm.tokenizer, USER))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    prompt = render_ids(llm.tokenizer, USER)
    same = llm.generate([prompt], params)[0]
    assert usage["completion_tokens"] == len(same.token_ids)
    assert choice["finish_reason"] == same.finish_reason


def test_streamed_chunks_add_up_to_the_chat_reply(llm: LLM) -> None:
    params = SamplingParams(temperature=1.0, seed=4, max_tokens=24, stop=["@@never@@"])
    reply = llm.chat(USER, sampling_params=params)
    chunks = _stream(llm, params)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"] != reply["id"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert _streamed_content(chunks) == reply["choices"][0]["message"]["content"]
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == reply["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert usage["choices"] == [] and usage["usage"] == reply["usage"]


def test_a_stop_string_in_chat_is_cut_from_content_and_never_streamed(llm: LLM) -> None:
    _, params = _scripted(llm, "alpha beta STOP gamma", "<|im_end|>")
    stopping = SamplingParams(temperature=0, max_tokens=64, stop="STOP", logits_processors=params.logits_processors)
    reply = llm.chat(USER, sampling_params=stopping)
    assert reply["choices"][0]["message"]["content"] == "alpha beta "
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert _streamed_content(_stream(llm, stopping)) == "alpha beta "


def test_streamed_text_never_splits_a_utf8_character(llm: LLM) -> None:
    text = "naïve 日本語 ✓"
    script, params = _scripted(llm, text, "<|im_end|>")
    assert any("\ufffd" in llm.tokenizer.decode(script[:k]) for k in range(1, len(script))), "no split to test"
    pieces = [c["choices"][0]["delta"].get("content", "") for c in _stream(llm, params) if c["choices"]]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert llm.chat(USER, sampling_params=params)["choices"][0]["message"]["content"] == text


def test_tool_calls_come_back_parsed_and_stream_as_openai_deltas(llm: LLM) -> None:
    tok = llm.tokenizer
    script, params = _scripted(
        llm,
        "Let me look.",
        "<|tool_calls_section_begin|>",
        *_call("functions.read_file:0", '{"path": "a.py"}'),
        *_call("functions.read_file:1", '{"path": "b.py"}'),
        "<|tool_calls_section_end|>",
        "<|im_end|>",
    )
    reply = llm.chat(USER, TOOLS, params)
    (choice,) = reply["choices"]
    assert choice["finish_reason"] == "tool_calls" and "problems" not in choice
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"] == [
        {"id": f"functions.read_file:{i}", "type": "function", "function": {"name": "read_file", "arguments": a}}
        for i, a in enumerate(['{"path": "a.py"}', '{"path": "b.py"}'])
    ]
    assert reply["usage"]["completion_tokens"] == len(script)
    assert reply["usage"]["prompt_tokens"] == len(render_ids(tok, USER, TOOLS))
    chunks = _stream(llm, params, TOOLS)
    assert _streamed_content(chunks) == "Let me look."
    calls = _streamed_calls(chunks)
    assert sorted(calls) == [0, 1]
    for index, pieces in calls.items():
        head, rest = pieces[0], pieces[1:]
        assert head == {"index": index, "id": f"functions.read_file:{index}", "type": "function",
                        "function": {"name": "read_file", "arguments": ""}}  # fmt: skip
        assert rest and all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in rest)
        arguments = "".join(p["function"]["arguments"] for p in rest)
        assert json.loads(arguments) == {"path": ["a.py", "b.py"][index]}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_malformed_tool_calls_become_clean_output_never_an_exception(llm: LLM) -> None:
    section = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|im_end|>")
    # arguments that are not JSON: returned raw, for the client to validate and tell the model
    _, bad_json = _scripted(llm, section[0], *_call("functions.bash:0", '{"cmd": ls'), *section[1:])
    reply = llm.chat(USER, TOOLS, bad_json)
    (call,) = reply["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "bash", "arguments": '{"cmd": ls'}
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert any("not valid JSON" in p for p in reply["choices"][0]["problems"])
    # a header that is not functions.NAME:IDX: no call, a plain stop, the problem noted
    _, bad_header = _scripted(llm, "Hmm.", section[0], *_call("run it now!", "{}"), *section[1:])
    for choice in (llm.chat(USER, TOOLS, bad_header)["choices"][0], _stream(llm, bad_header, TOOLS)[-2]["choices"][0]):
        assert choice["finish_reason"] == "stop" and "is not functions.NAME:IDX" in " ".join(choice["problems"])
    assert llm.chat(USER, TOOLS, bad_header)["choices"][0]["message"] == {"role": "assistant", "content": "Hmm."}
    # cut off by max_tokens inside the arguments: finish "length", the partial call flagged
    script, _ = _scripted(llm, section[0], *_call("functions.bash:0", '{"cmd": "ls -la /tmp"}'), *section[1:])
    cut = SamplingParams(temperature=0, max_tokens=len(script) - 5, logits_processors=[forcing(script)])
    reply = llm.chat(USER, TOOLS, cut)
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "bash"
    assert any("may be incomplete" in p for p in reply["choices"][0]["problems"])
    assert _stream(llm, cut, TOOLS)[-2]["choices"][0]["finish_reason"] == "length"


def test_a_bare_call_header_is_recovered_from_the_requests_tools_in_chat_and_stream(llm: LLM) -> None:
    section = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|im_end|>")
    _, bare = _scripted(llm, section[0], *_call("call_3", '{"path": "a.py"}'), *section[1:])
    reply = llm.chat(USER, TOOLS, bare)["choices"][0]
    assert reply["finish_reason"] == "tool_calls"
    (call,) = reply["message"]["tool_calls"]
    assert call["id"] == "functions.read_file:3" and call["function"]["name"] == "read_file"
    assert any("read_file" in p for p in reply["problems"]), "the recovery is reported"
    streamed = _streamed_calls(_stream(llm, bare, TOOLS))
    assert streamed[0][0]["id"] == "functions.read_file:3"
    assert "".join(p["function"].get("arguments", "") for p in streamed[0]) == '{"path": "a.py"}'
    two_tools = [*TOOLS, {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    ambiguous = llm.chat(USER, two_tools, bare)["choices"][0]
    assert ambiguous["finish_reason"] == "stop" and "tool_calls" not in ambiguous["message"]


def test_bad_messages_fail_before_streaming_starts(llm: LLM) -> None:
    with pytest.raises(errors.ChatFormatError):
        llm.chat_stream([{"role": "wizard", "content": "hi"}])


# ---- make_tiny and the package ----------------------------------------------------------------------------


def test_make_tiny_writes_a_real_checkpoint_directory_with_a_matching_tokenizer(tmp_path: Path) -> None:
    path = make_tiny(tmp_path / "k2", dtype="bf16", shards=2, seed=3)
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tiktoken.model", "tokenizer_config.json"} <= names
    assert sum(n.endswith(".safetensors") for n in names) == 2
    config = json.loads((path / "config.json").read_text())
    tok = Tokenizer.from_dir(path)
    assert config["vocab_size"] == tok.vocab_size == TINY_VOCAB_SIZE
    assert config["eos_token_id"] == tok.special_id("[EOS]") and config["bos_token_id"] == tok.special_id("[BOS]")
    moonlight = json.loads((make_tiny(tmp_path / "moon", preset="moonlight") / "config.json").read_text())
    assert moonlight["eos_token_id"] == tok.special_id("<|im_end|>")
    wide = make_tiny(tmp_path / "wide", dtype="fp32", overrides={"hidden_size": 160, "num_hidden_layers": 2})
    loaded = LLM(wide, dtype="float32")
    assert loaded.model.config.hidden_size == 160 and len(loaded.model.model.layers) == 2


def test_make_tiny_rejects_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(errors.TinyCheckpointError, match="unknown preset 'k3'"):
        make_tiny(tmp_path / "a", preset="k3")
    with pytest.raises(errors.TinyCheckpointError, match="dtype must be 'fp32', 'bf16' or 'fp8', got 'int4'"):
        make_tiny(tmp_path / "b", dtype="int4")  # type: ignore[arg-type]
    with pytest.raises(errors.TinyCheckpointError, match="vocab_size must stay the tiny tokenizer's 1256, got 2000"):
        make_tiny(tmp_path / "c", overrides={"vocab_size": 2000})
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_the_package_exports_its_api_and_one_error_hierarchy() -> None:
    assert engine.LLM is LLM and engine.SamplingParams is SamplingParams and engine.make_tiny is make_tiny
    assert (ConfigError, CheckpointError, UnknownTokenError) == (
        errors.ConfigError, errors.CheckpointError, errors.UnknownTokenError
    )
    for name in dir(errors):
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, errors.EngineError) and issubclass(value, ValueError)
