"""The one clamp every tool result passes through before the model reads it.

A clamped output keeps its head and its tail, joined by a line that says how much was left out and
names the file holding the whole output, so the model can view any part of it with the editor.
"""

from __future__ import annotations

import codecs
import itertools
import os
import secrets
import tempfile
import threading
from pathlib import Path

from tools.settings import ToolSettings

_CHUNK_BYTES = 1 << 20


class OutputClamp:
    """Clamps text (or a file already on disk) to the configured size, spilling the whole to `spill_dir`."""

    def __init__(self, settings: ToolSettings, spill_dir: Path | None = None) -> None:
        self.settings = settings
        self.spill_dir = Path(spill_dir) if spill_dir else Path(tempfile.mkdtemp(prefix="kcode-outputs-"))
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._token = secrets.token_hex(4)  # two clamps may share one spill directory

    def new_spill_path(self, stem: str = "output") -> Path:
        """A fresh file name in the spill directory (the bash session writes outputs straight there)."""
        with self._lock:
            index = next(self._counter)
        return self.spill_dir / f"{stem}-{self._token}-{index:05d}.txt"

    def text(self, text: str) -> str:
        """`text` itself when it fits; otherwise head, marker and tail, with the whole saved to a file."""
        if len(text) <= self.settings.max_output_chars:
            return text
        path = self.new_spill_path()
        path.write_text(text, encoding="utf-8")
        return self._join(text[: self._head_budget()], text[-self._tail_budget():],
                          total_chars=len(text), total_lines=_count_lines(text), path=path)

    def file(self, path: Path) -> str:
        """Like `text`, for output already in a file; reads only the head, the tail and a streaming count."""
        total_chars, total_lines = _measure(path)
        if total_chars <= self.settings.max_output_chars:
            return path.read_bytes().decode("utf-8", errors="replace")
        head = _read_head(path, self._head_budget())
        tail = _read_tail(path, self._tail_budget())
        return self._join(head, tail, total_chars=total_chars, total_lines=total_lines, path=path)

    def _head_budget(self) -> int:
        return int(self.settings.max_output_chars * self.settings.head_fraction) - 150

    def _tail_budget(self) -> int:
        return self.settings.max_output_chars - int(self.settings.max_output_chars * self.settings.head_fraction) - 150

    def _join(self, head: str, tail: str, *, total_chars: int, total_lines: int, path: Path) -> str:
        head, tail = _snap_head(head), _snap_tail(tail)
        omitted_chars = total_chars - len(head) - len(tail)
        omitted_lines = max(total_lines - _count_lines(head) - _count_lines(tail), 0)
        marker = (f"[... {omitted_lines:,} lines ({omitted_chars:,} characters) left out of "
                  f"{total_lines:,} lines; the whole output is saved in {path} ...]")
        separator = "" if head.endswith("\n") else "\n"
        return f"{head}{separator}{marker}\n{tail}"


def _count_lines(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def _snap_head(head: str) -> str:
    """Cut the head after its last newline, unless that would throw away more than half of it."""
    cut = head.rfind("\n")
    return head[: cut + 1] if cut >= len(head) // 2 else head


def _snap_tail(tail: str) -> str:
    """Start the tail after its first newline, unless that would throw away more than half of it."""
    cut = tail.find("\n")
    return tail[cut + 1:] if 0 <= cut < len(tail) // 2 else tail


def _measure(path: Path) -> tuple[int, int]:
    """Characters and lines in a UTF-8 (or not quite) file, streaming so 100 MB costs no memory."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = newlines = 0
    last = ""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            text = decoder.decode(chunk)
            chars += len(text)
            newlines += text.count("\n")
            last = text[-1:] or last
    text = decoder.decode(b"", final=True)
    chars += len(text)
    newlines += text.count("\n")
    last = text[-1:] or last
    lines = newlines + (1 if chars and last != "\n" else 0)
    return chars, lines


def _read_head(path: Path, chars: int) -> str:
    with path.open("rb") as f:
        data = f.read(chars * 4)
    return data.decode("utf-8", errors="replace")[:chars]


def _read_tail(path: Path, chars: int) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(size - chars * 4, 0))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    return text[-chars:]
