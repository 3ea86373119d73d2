"""Decoding and encoding text files the way an editor must: the same bytes back out (tools/nofollow.py
writes them, atomically).

Decoding: UTF-8 when the whole file is valid UTF-8 (a leading BOM is remembered and written back);
otherwise Latin-1, which maps every byte to one character and so round-trips any file exactly, at
the price of showing non-ASCII text of other encodings as odd characters. Files with a NUL byte in
their first 8 KiB (binaries, UTF-16) are binary and never decoded.

Line endings: the model reads and writes "\n". A file that uses CRLF for every line break is shown
with "\n" and written back with CRLF; a file with mixed endings is kept as it is, its stray "\r"
characters visible, so that an edit never rewrites lines it did not touch.
"""

from __future__ import annotations

import codecs
import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

BINARY_SNIFF_BYTES = 8192
"""How much of a file's head is searched for a NUL byte to call it binary."""

_SKIP_CHUNK_BYTES = 1 << 16
# Every byte of the form 0b10xxxxxx continues a UTF-8 character; the others start one.
_UTF8_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))

Encoding = Literal["utf-8", "utf-8-sig", "latin-1"]
Newline = Literal["\n", "\r\n"]


@dataclass(frozen=True)
class TextFormat:
    """How a file's text maps to its bytes."""

    encoding: Encoding = "utf-8"
    newline: Newline = "\n"

    def encode(self, text: str) -> bytes:
        """The bytes for `text`; raises UnicodeEncodeError for a character Latin-1 cannot store."""
        if self.newline == "\r\n":
            text = text.replace("\n", "\r\n")
        return text.encode(self.encoding)

    @property
    def bom_bytes(self) -> int:
        return len(codecs.BOM_UTF8) if self.encoding == "utf-8-sig" else 0


@dataclass(frozen=True)
class Line:
    """One line of a file as a viewer shows it: its start only, and how long it really is."""

    number: int
    """1-based line number."""
    text: str
    """The line without its line break, cut to the number of characters asked for."""
    length: int
    """Characters in the whole line (exact for valid UTF-8 and Latin-1)."""


def looks_binary(head: bytes) -> bool:
    return b"\0" in head[:BINARY_SNIFF_BYTES]


def decode(data: bytes) -> tuple[str, TextFormat]:
    """The text of a whole file and the format that turns it back into exactly `data`."""
    encoding: Encoding = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        encoding = "latin-1"
        text = data.decode(encoding)
    breaks = data.count(b"\n")
    if breaks and data.count(b"\r\n") == breaks:
        return text.replace("\r\n", "\n"), TextFormat(encoding, "\r\n")
    return text, TextFormat(encoding, "\n")


def sniff_format(head: bytes) -> TextFormat:
    """A best guess at a file's format from its head alone, for files too large to decode whole."""
    encoding: Encoding = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
    try:
        # A head cut inside a multi-byte character is still UTF-8: the incremental decoder waits for more.
        codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeDecodeError:
        encoding = "latin-1"
    breaks = head.count(b"\n")
    newline: Newline = "\r\n" if breaks and head.count(b"\r\n") == breaks else "\n"
    return TextFormat(encoding, newline)


def count_lines(data: bytes) -> int:
    """Lines in `data`, counting a last line that has no line break."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def split_lines(text: str) -> list[str]:
    """The lines of `text` without their breaks; only "\n" breaks a line (str.splitlines also breaks on
    form feeds and Unicode separators, which would shift line numbers)."""
    if not text:
        return []
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def unified_diff(old_text: str, new_text: str, old_name: str, new_name: str) -> str:
    """A unified diff of two file texts that `git apply` accepts, down to the marker for a last line
    without a line break."""
    return "".join(difflib.unified_diff(_diff_lines(old_text), _diff_lines(new_text), old_name, new_name))


def _diff_lines(text: str) -> list[str]:
    lines = [line + "\n" for line in split_lines(text)]
    if lines and not text.endswith("\n"):
        lines[-1] += "\\ No newline at end of file\n"
    return lines


def skip_lines(f: BinaryIO, count: int) -> int:
    """Read past `count` lines in bounded memory, however long they are; returns how many there were."""
    skipped = 0
    while skipped < count and _consume_line(f, None) is not None:
        skipped += 1
    return skipped


def iter_lines(f: BinaryIO, first_number: int, keep_chars: int, fmt: TextFormat) -> Iterator[Line]:
    """The lines from the current position of `f`, each read in bounded memory: a line of 200 MB costs
    `keep_chars` characters plus a streaming count of the rest."""
    keep_bytes = 4 * keep_chars + 2  # room for keep_chars characters of UTF-8 and a CRLF
    number = first_number
    while head := f.readline(keep_bytes):
        rest_chars = 0
        if head.endswith(b"\n"):
            head = head[:-1]
        else:
            rest_chars = _consume_line(f, fmt) or 0
        if fmt.newline == "\r\n" and not rest_chars:
            head = head.removesuffix(b"\r")
        text = head.decode(fmt.encoding.removesuffix("-sig"), errors="replace")
        yield Line(number=number, text=text[:keep_chars], length=_count_chars(head, fmt) + rest_chars)
        number += 1


def _consume_line(f: BinaryIO, fmt: TextFormat | None) -> int | None:
    """Read through the next line break, a chunk at a time. Returns None at end of file, else the
    characters before the break (counted only when `fmt` is given; a CR right before it not counted)."""
    chars = 0
    seen = False
    while chunk := f.readline(_SKIP_CHUNK_BYTES):
        seen = True
        if chunk.endswith(b"\n"):
            chunk = chunk[:-1].removesuffix(b"\r")
            return chars + (_count_chars(chunk, fmt) if fmt else 0)
        chars += _count_chars(chunk, fmt) if fmt else 0
    return chars if seen else None


def _count_chars(data: bytes, fmt: TextFormat) -> int:
    if fmt.encoding == "latin-1":
        return len(data)
    return len(data.translate(None, _UTF8_CONTINUATION_BYTES))
