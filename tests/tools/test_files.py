"""Decoding, line streaming and diffs of tools.files, on real files."""

from __future__ import annotations

import io
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from tools.files import (
    TextFormat,
    count_lines,
    decode,
    iter_lines,
    looks_binary,
    skip_lines,
    sniff_format,
    split_lines,
    unified_diff,
)

ROUND_TRIPS = [
    b"",
    b"plain\n",
    b"no final break",
    "caf\u00e9 \u2603\n".encode(),
    b"\xef\xbb\xbfbom\r\nand crlf\r\n",
    b"crlf\r\nwith a lone \r inside\r\n",
    b"cr cr lf\r\r\n",
    b"mixed\r\nendings\n",
    b"latin-1 caf\xe9\r\n",
    b"\xef\xbb\xbfbom but then \xff invalid\n",
]


@pytest.mark.parametrize("data", ROUND_TRIPS)
def test_decode_then_encode_gives_back_the_same_bytes(data: bytes) -> None:
    text, fmt = decode(data)
    assert fmt.encode(text) == data


def test_decode_detects_encoding_bom_and_line_endings() -> None:
    assert decode("caf\u00e9\n".encode()) == ("caf\u00e9\n", TextFormat("utf-8", "\n"))
    assert decode(b"\xef\xbb\xbfx\r\ny\r\n") == ("x\ny\n", TextFormat("utf-8-sig", "\r\n"))
    assert decode(b"caf\xe9\n") == ("caf\u00e9\n", TextFormat("latin-1", "\n"))
    # Mixed endings are kept as they are, so an edit never rewrites the lines it did not touch.
    assert decode(b"a\r\nb\n") == ("a\r\nb\n", TextFormat("utf-8", "\n"))


def test_encode_refuses_a_character_latin1_cannot_store() -> None:
    with pytest.raises(UnicodeEncodeError):
        TextFormat("latin-1").encode("\u20ac")


def test_sniff_format_accepts_a_head_cut_inside_a_character() -> None:
    head = ("x" * 10 + "\u2603").encode()[:-1]
    assert sniff_format(head) == TextFormat("utf-8", "\n")
    assert sniff_format(b"caf\xe9 ok\r\n").encoding == "latin-1"
    assert sniff_format(b"\xef\xbb\xbfa\r\nb\r\n") == TextFormat("utf-8-sig", "\r\n")


def test_looks_binary_only_looks_at_the_head() -> None:
    assert looks_binary(b"ELF\0\1")
    assert not looks_binary(b"text\n")
    assert not looks_binary(b"x" * 9000 + b"\0")


def test_split_and_count_lines_break_only_on_line_feeds() -> None:
    assert split_lines("a\x0cb\u2028c\nd\n") == ["a\x0cb\u2028c", "d"]
    assert split_lines("a\n\n") == ["a", ""]
    assert split_lines("a") == ["a"]
    assert split_lines("") == []
    assert [count_lines(d) for d in (b"", b"a", b"a\n", b"a\nb", b"\n\n")] == [0, 1, 1, 2, 2]


def test_iter_lines_clips_long_lines_and_counts_their_characters() -> None:
    data = b"short\r\n" + ("\u00e9" * 30 + "\r\n").encode() + b"last"
    lines = list(iter_lines(io.BytesIO(data), 1, 10, TextFormat("utf-8", "\r\n")))
    assert [(line.number, line.text, line.length) for line in lines] == [
        (1, "short", 5), (2, "\u00e9" * 10, 30), (3, "last", 4)]


def test_skip_lines_stops_at_the_end_of_the_file() -> None:
    f = io.BytesIO(b"a\n" + b"b" * 200_000 + b"\nc\n")
    assert skip_lines(f, 2) == 2
    assert f.read() == b"c\n"
    assert skip_lines(io.BytesIO(b"a\nb"), 5) == 2


def test_a_20_mb_line_is_viewed_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "one-line.txt"
    path.write_bytes(b"y" * 20_000_000 + b"\nnext\n")
    tracemalloc.start()
    with path.open("rb") as f:
        lines = list(iter_lines(f, 1, 500, TextFormat()))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(line.text[:3], len(line.text), line.length) for line in lines] == [
        ("yyy", 500, 20_000_000), ("nex", 4, 4)]
    assert peak < 2_000_000


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize(("old", "new"), [
    ("a\nb\nc\n", "a\nB\nc\n"),
    ("a\nb", "a\nb\nc"),
    ("a\nb\n", "a\nb"),
    ("", "new file\n"),
])
def test_unified_diff_applies_with_git(tmp_path: Path, old: str, new: str) -> None:
    (tmp_path / "f.txt").write_bytes(old.encode())
    diff = unified_diff(old, new, "a/f.txt", "b/f.txt")
    (tmp_path / "change.diff").write_text(diff)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "apply", "change.diff"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "f.txt").read_bytes() == new.encode()
