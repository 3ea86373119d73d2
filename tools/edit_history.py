"""Undo for the editor: what each edit replaced, kept for the session, newest last.

An undo is refused when the file no longer holds what the edit wrote (a shell command or the user
changed it since): restoring the old bytes then would silently destroy that later work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tools.nofollow import remove_empty_dirs, remove_file, write_atomic


def digest(data: bytes | None) -> str:
    """A fingerprint of a file's bytes; "" for a file that does not exist."""
    return hashlib.sha256(data).hexdigest() if data is not None else ""


@dataclass(frozen=True)
class Edit:
    """One edit to one file, with what it takes to reverse it."""

    path: Path
    before: bytes | None
    """The file's bytes before the edit; None when the edit created it."""
    mode: int | None
    """The file's mode before the edit; None when the edit created it."""
    after_digest: str
    """`digest` of the bytes the edit wrote, to notice later changes by anything else."""
    created_dirs: tuple[Path, ...] = ()
    """Directories made for a created file, deepest first, removed again by undo when empty."""

    def still_current(self, data: bytes | None) -> bool:
        """Whether `data` (the file's bytes now, None if gone) is what this edit left."""
        return digest(data) == self.after_digest

    def restore(self) -> None:
        """Put the file back as it was before this edit."""
        if self.before is None:
            remove_file(self.path)
            remove_empty_dirs(self.created_dirs)
        else:
            write_atomic(self.path, self.before, self.mode)


class EditHistory:
    """Every undoable edit of a session, oldest first; the oldest are forgotten beyond the limits,
    so a long session editing large files cannot hold unbounded memory."""

    def __init__(self, max_edits: int = 500, max_bytes: int = 128 * 2**20) -> None:
        if max_edits < 1:
            raise ValueError(f"max_edits must be at least 1, got {max_edits}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_edits = max_edits
        self.max_bytes = max_bytes
        self._edits: list[Edit] = []
        self._bytes = 0

    def record(self, edit: Edit) -> None:
        self._edits.append(edit)
        self._bytes += _size(edit)
        while len(self._edits) > 1 and (len(self._edits) > self.max_edits or self._bytes > self.max_bytes):
            self._bytes -= _size(self._edits.pop(0))

    def last(self, path: Path) -> Edit | None:
        """The newest edit to `path` still remembered."""
        return next((edit for edit in reversed(self._edits) if edit.path == path), None)

    def count(self, path: Path) -> int:
        return sum(1 for edit in self._edits if edit.path == path)

    def forget(self, edit: Edit) -> None:
        """Drop `edit` once it has been undone."""
        for index in range(len(self._edits) - 1, -1, -1):
            if self._edits[index] is edit:
                self._bytes -= _size(self._edits.pop(index))
                return
        raise ValueError(f"edit to {edit.path} is not in the history")


def _size(edit: Edit) -> int:
    return len(edit.before) if edit.before is not None else 0
