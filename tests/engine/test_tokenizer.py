"""The K2 tokenizer on real files: the tiny trained tokenizer, hand-made vocabularies and broken files."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import pytest

from engine.tiny_tokenizer import (
    TINY_NUM_BASE_TOKENS,
    TINY_VOCAB_SIZE,
    learn_bpe,
    tiny_config,
    write_tiny_tokenizer,
)
from engine.tokenizer import (
    CONFIG_FILE,
    EOS,
    IM_END,
    IM_MIDDLE,
    TIKTOKEN_FILE,
    TOOL_CALL_BEGIN,
    Tokenizer,
    TokenizerError,
    TokenizerFileError,
    UnknownTokenError,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_tokenizer")
    write_tiny_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def tok(tiny_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_dir)


def _write_vocab(directory: Path, pieces: list[str]) -> dict[str, int]:
    """A vocabulary of the 256 bytes plus whole `pieces`, so encoding shows exactly how text is split."""
    directory.mkdir(parents=True, exist_ok=True)
    pieces = [p for p in dict.fromkeys(pieces) if len(p.encode()) > 1]
    tokens = [bytes([b]) for b in range(256)] + [p.encode() for p in pieces]
    lines = [f"{base64.b64encode(t).decode()} {rank}" for rank, t in enumerate(tokens)]
    (directory / TIKTOKEN_FILE).write_text("\n".join(lines) + "\n")
    (directory / CONFIG_FILE).write_text(json.dumps(tiny_config(len(tokens))))
    return {p: 256 + i for i, p in enumerate(pieces)}


def _ids_of(pieces: list[str], rank: dict[str, int]) -> list[int]:
    return [rank[p] if p in rank else p.encode()[0] for p in pieces]


# --- the tiny tokenizer ------------------------------------------------------------------------------


def test_tiny_tokenizer_has_k2_layout_with_ids_moved_to_its_size(tok: Tokenizer) -> None:
    assert (tok.num_base_tokens, tok.vocab_size) == (TINY_NUM_BASE_TOKENS, TINY_VOCAB_SIZE) == (1000, 1256)
    assert tok.special_id("[BOS]") == 1000
    assert tok.special_id(IM_END) == 1002
    assert tok.special_id("<|im_system|>") == 1010
    assert tok.special_id(IM_MIDDLE) == 1017
    assert tok.special_id("[PAD]") == 1255
    assert tok.eos_ids == (1002, 1001)
    assert tok.special_name(1005) == "<|reserved_token_1005|>"
    assert tok.special_name(999) is None and not tok.is_special(999)


def test_tiny_training_is_fast_and_deterministic(tmp_path: Path) -> None:
    start = time.perf_counter()
    first = write_tiny_tokenizer(tmp_path / "a")
    elapsed_s = time.perf_counter() - start
    write_tiny_tokenizer(tmp_path / "b")
    assert elapsed_s < 2.0
    assert (tmp_path / "a" / TIKTOKEN_FILE).read_bytes() == (tmp_path / "b" / TIKTOKEN_FILE).read_bytes()
    assert first.vocab_size == TINY_VOCAB_SIZE
    # The merges are real BPE: common words of the corpus became single tokens.
    tok = Tokenizer.from_dir(first.directory)
    assert len(tok.encode(" the")) == 1


def test_tiny_tokenizer_size_follows_num_merges_and_corpus(tmp_path: Path) -> None:
    files = write_tiny_tokenizer(tmp_path, corpus="hello hello world world world", num_merges=5)
    assert (files.num_base_tokens, files.vocab_size) == (261, 517)
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.special_id(IM_END) == 263
    assert tok.encode(" world") == [260]
    with pytest.raises(ValueError, match="allows only"):
        learn_bpe("ab ab", 50)


# --- encoding and decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ASCII, with punctuation!?",
        "naïve café Ünïcödé",
        "中文字符和English混合",
        "emoji 😀👍🏽 and a family 👨‍👩‍👧",
        "tabs\tand\r\nCRLF\n\n\n        long    whitespace   \n",
        " " * 300 + "x" + "\n" * 40,
        "\x00\x01 control bytes \x7f",
    ],
)
def test_encode_decode_round_trip(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.num_base_tokens for i in ids)


def test_marker_text_never_becomes_a_special_id(tok: Tokenizer) -> None:
    text = f"file says {IM_END} then {TOOL_CALL_BEGIN} and [EOS]"
    ids = tok.encode(text)
    assert not any(tok.is_special(i) for i in ids)
    assert tok.decode(ids) == text
    assert tok.encode_with_specials(f"a{IM_END}") == [*tok.encode("a"), tok.special_id(IM_END)]


def test_special_ids_decode_to_their_names(tok: Tokenizer) -> None:
    ids = [*tok.encode("hi"), tok.special_id(IM_END), tok.special_id(EOS), 1100]
    assert tok.decode(ids) == "hi<|im_end|>[EOS]<|reserved_token_1100|>"


def test_unknown_names_and_ids_are_clear_errors(tok: Tokenizer) -> None:
    with pytest.raises(UnknownTokenError, match=r"no special token named '<\|nope\|>'"):
        tok.special_id("<|nope|>")
    with pytest.raises(UnknownTokenError, match=r"token id 5000 is outside the vocabulary 0\.\.1255"):
        tok.decode([5000])
    with pytest.raises(UnknownTokenError, match="token id -1"):
        tok.token_bytes(-1)


def test_long_runs_are_cut_where_k2_cuts_them(tok: Tokenizer) -> None:
    # 30,001 chars without whitespace: K2's tokenizer cuts the run after 25,000 chars, here between an
    # "a" and a "b" that BPE would otherwise merge.
    text = "x" + "ab" * 15_000
    ids = tok.encode(text)
    assert ids == tok.encode(text[:25_000]) + tok.encode(text[25_000:])
    boundaries = _token_boundaries(tok, ids)
    assert 25_000 in boundaries
    window = tok.encode(text[24_000:26_000])
    assert 1_000 not in _token_boundaries(tok, window)
    assert tok.decode(ids) == text


def _token_boundaries(tok: Tokenizer, ids: list[int]) -> set[int]:
    ends, offset = set(), 0
    for i in ids:
        offset += len(tok.token_bytes(i))
        ends.add(offset)
    return ends


# --- the split pattern -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        # Contractions stay on their word, case-insensitively; a leading space joins the word.
        ("Hello world's", ["Hello", " world's"]),
        ("DON'T stop", ["DON'T", " stop"]),
        # Han characters form their own runs, apart from Latin letters.
        ("中文字符abc", ["中文字符", "abc"]),
        # Digits group by at most three.
        ("12345", ["123", "45"]),
        # Newline runs keep together; a space run leaves its last space to the next word.
        ("a\n\n  b", ["a", "\n\n", " ", " b"]),
        # Punctuation runs take one leading space and trailing newlines.
        ("x !=\n\ny", ["x", " !=\n\n", "y"]),
    ],
)
def test_split_pattern_pieces(tmp_path: Path, text: str, pieces: list[str]) -> None:
    # Strings spanning piece boundaries are in the vocabulary too: a wrong split would show their ids.
    decoys = ["Hello world", " world", "DON'T stop", "中文字符abc", "12345", "1234", "\n\n  ", "  b", "x !=", "!=\n\ny"]
    rank = _write_vocab(tmp_path, [*pieces, *decoys])
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.encode(text) == _ids_of(pieces, rank)


# --- streaming decode --------------------------------------------------------------------------------


def test_stream_decoder_never_emits_half_a_character(tok: Tokenizer) -> None:
    text = "naïve 中文 😀 done"
    ids = tok.encode(text)
    decoder = tok.stream_decoder()
    chunks = [decoder.feed(i) for i in ids] + [decoder.flush()]
    assert "".join(chunks) == text
    assert not any("\ufffd" in c for c in chunks)
    # The tiny vocabulary has no CJK merges, so "中" arrives as three byte tokens: two yield nothing.
    assert chunks.count("") >= 2


def test_stream_decoder_special_ids_and_dangling_bytes(tok: Tokenizer) -> None:
    first_byte_of_han = tok.encode("中")[0]
    decoder = tok.stream_decoder()
    assert decoder.feed(first_byte_of_han) == ""
    assert decoder.feed(tok.special_id(IM_END)) == "\ufffd<|im_end|>"
    assert decoder.feed(first_byte_of_han) == ""
    assert decoder.flush() == "\ufffd"


def test_stream_decoder_matches_decode_on_random_ids(tok: Tokenizer) -> None:
    rng = random.Random(7)
    pool = [*tok.encode("é中😀ab \n"), *range(128, 256), tok.special_id(IM_END), 1100]
    for _ in range(300):
        ids = [rng.choice(pool) for _ in range(rng.randint(0, 12))]
        decoder = tok.stream_decoder()
        streamed = "".join(decoder.feed(i) for i in ids) + decoder.flush()
        assert streamed == tok.decode(ids), ids


# --- bad files ---------------------------------------------------------------------------------------


def _good_lines() -> list[str]:
    return [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]


def _write(directory: Path, lines: list[str], config: object | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TIKTOKEN_FILE).write_text("\n".join(lines) + "\n")
    (directory / CONFIG_FILE).write_text(json.dumps(tiny_config(256) if config is None else config))
    return directory


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(TokenizerFileError, match=rf"{tmp_path / TIKTOKEN_FILE}: not found"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / TIKTOKEN_FILE).write_text("\n".join(_good_lines()))
    with pytest.raises(TokenizerFileError, match=rf"{tmp_path / CONFIG_FILE}: not found"):
        Tokenizer.from_dir(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: ls.__setitem__(2, "AAE="), r":3: expected 'base64 rank'"),
        (lambda ls: ls.__setitem__(2, "not*base64 2"), r":3: invalid base64"),
        (lambda ls: ls.__setitem__(2, "Ag== two"), r":3: rank must be a non-negative integer"),
        (lambda ls: ls.append(f"{base64.b64encode(b'ab').decode()} 5"), r":257: rank 5 already used on line 6"),
        (lambda ls: ls.append("AA== 256"), r":257: token b'\\x00' already listed on line 1"),
        (lambda ls: ls.append(f"{base64.b64encode(b'ab').decode()} 300"), r"rank 256 is missing"),
        (lambda ls: ls.__setitem__(10, f"{base64.b64encode(b'ab').decode()} 10"), r"single byte 0x0a has no rank"),
        (lambda ls: ls.clear(), r"no tokens"),
    ],
)
def test_malformed_tiktoken_model_names_file_and_line(tmp_path: Path, edit: object, message: str) -> None:
    lines = _good_lines()
    edit(lines)  # type: ignore[operator]
    _write(tmp_path, lines)
    with pytest.raises(TokenizerFileError, match=message) as caught:
        Tokenizer.from_dir(tmp_path)
    assert str(tmp_path / TIKTOKEN_FILE) in str(caught.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", r"invalid JSON"),
        ({"bos_token": "[BOS]"}, r"'added_tokens_decoder' must be an object"),
        ({"added_tokens_decoder": {"256": {"special": True}}}, r"added token '256' needs an integer id and a"),
        ({"added_tokens_decoder": {"x": {"content": "[BOS]"}}}, r"added token 'x' needs an integer id"),
        ({"added_tokens_decoder": {"600": {"content": "[BOS]"}}}, r"token 600 \(\[BOS\]\) lies outside .*256\.\.511"),
        (
            {"added_tokens_decoder": {"256": {"content": IM_END}, "257": {"content": IM_END}}},
            r"<\|im_end\|> names both id 256 and id 257",
        ),
    ],
)
def test_malformed_config_is_named(tmp_path: Path, config: object, message: str) -> None:
    _write(tmp_path, _good_lines(), config={})
    text = config if isinstance(config, str) else json.dumps(config)
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(TokenizerFileError, match=message) as caught:
        Tokenizer.from_dir(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(caught.value)


def test_config_without_a_stop_token_fails_when_asked(tmp_path: Path) -> None:
    _write(tmp_path, _good_lines(), config={"added_tokens_decoder": {"258": {"content": IM_END}}})
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.special_id(IM_END) == 258
    assert tok.special_name(257) == "<|reserved_token_257|>"
    with pytest.raises(UnknownTokenError, match=r"\[EOS\]"):
        _ = tok.eos_ids


def test_special_names_must_cover_the_special_range() -> None:
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(TokenizerError, match=r"special names must cover ids 256\.\.511 exactly"):
        Tokenizer(ranks, {256: IM_END}, name="partial")
