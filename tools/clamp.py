"""The one clamp every tool result passes through before the model reads it.

A clamped output keeps its head and its tail, joined by a line that says how much was left out and
names the file holding the whole output, so the model can view any part of it with the editor.
"""

from __future__ import annotations

import codecs
import itertools
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from tools.settings import ToolSettings

_CHUNK_BYTES = 1 << 20
_MARKER_ROOM_CHARS = 300
"""Room beside the spill directory's name for the marker's words, counts and file name, and some head and tail."""


class OutputClamp:
    """Clamps text (or a file already on disk) to at most `limit_chars`, spilling the whole to `spill_dir`.

    A clamp that made its own spill directory removes it on `close`; one it was given is the caller's.
    """

    def __init__(self, settings: ToolSettings, spill_dir: Path | None = None, *, reserve_chars: int = 0) -> None:
        """`reserve_chars` stay free under `settings.max_output_chars` for a line the caller appends."""
        self.settings = settings
        self.limit_chars = settings.max_output_chars - reserve_chars
        if not 0 <= reserve_chars <= settings.max_output_chars // 2:
            raise ValueError(f"reserve_chars must lie between 0 and half of max_output_chars "
                             f"({settings.max_output_chars // 2}), got {reserve_chars}")
        self._owns_spill_dir = spill_dir is None
        self.spill_dir = Path(tempfile.mkdtemp(prefix="kcode-outputs-")) if spill_dir is None else Path(spill_dir)
        if len(str(self.spill_dir)) > self.limit_chars - _MARKER_ROOM_CHARS:
            raise ValueError(f"spill directory {self.spill_dir} is too long to name in a clamped output of "
                             f"{self.limit_chars} characters; use a path of at most "
                             f"{self.limit_chars - _MARKER_ROOM_CHARS} characters")
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._token = secrets.token_hex(4)  # two clamps may share one spill directory

    def new_spill_path(self, stem: str = "output") -> Path:
        """A fresh file name in the spill directory (the bash session writes outputs straight there)."""
        with self._lock:
            index = next(self._counter)
        return self.spill_dir / f"{stem}-{self._token}-{index:05d}.txt"

    def close(self) -> None:
        """Remove the spill directory with every saved output, if this clamp made it."""
        if self._owns_spill_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def text(self, text: str) -> str:
        """`text` itself when it fits; otherwise head, marker and tail, with the whole saved to a file."""
        if len(text) <= self.limit_chars:
            return text
        path = self.new_spill_path()
        path.write_text(text, encoding="utf-8")
        total_lines = _count_lines(text)
        head_chars, tail_chars = self._budgets(len(text), total_lines, path)
        return self._join(text[:head_chars], text[len(text) - tail_chars:],
                          total_chars=len(text), total_lines=total_lines, path=path)

    def file(self, path: Path) -> str:
        """Like `text`, for output already in a file; reads only the head, the tail and a streaming count."""
        total_chars, total_lines = _measure(path)
        if total_chars <= self.limit_chars:
            return path.read_bytes().decode("utf-8", errors="replace")
        head_chars, tail_chars = self._budgets(total_chars, total_lines, path)
        return self._join(_read_head(path, head_chars), _read_tail(path, tail_chars),
                          total_chars=total_chars, total_lines=total_lines, path=path)

    def _budgets(self, total_chars: int, total_lines: int, path: Path) -> tuple[int, int]:
        """Characters of head and of tail, leaving room for the marker and the two line breaks around it.

        The marker is measured with the totals in place of the omitted counts: those are never larger, so the
        real marker is never longer. The spill directory's length check in `__init__` leaves room for both.
        """
        room = self.limit_chars - len(_marker(total_lines, total_chars, total_lines, path)) - 2
        head = max(int(room * self.settings.head_fraction), 1)
        return head, max(room - head, 1)

    def _join(self, head: str, tail: str, *, total_chars: int, total_lines: int, path: Path) -> str:
        head, tail = _snap_head(head), _snap_tail(tail)
        omitted_chars = total_chars - len(head) - len(tail)
        omitted_lines = max(total_lines - _count_lines(head) - _count_lines(tail), 0)
        separator = "" if head.endswith("\n") else "\n"
        return f"{head}{separator}{_marker(omitted_lines, omitted_chars, total_lines, path)}\n{tail}"


def _marker(omitted_lines: int, omitted_chars: int, total_lines: int, path: Path) -> str:
    return (f"[... {omitted_lines:,} lines ({omitted_chars:,} characters) left out of "
            f"{total_lines:,} lines; the whole output is saved in {path} ...]")


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
