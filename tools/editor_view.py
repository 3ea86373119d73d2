"""How the editor shows things: a window of numbered lines of a file, a directory two levels deep.

Directories are read through descriptors (tools/nofollow.py), so a listing never follows a symlink swapped
in for a directory after its path was checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tools.base import ToolResult
from tools.errors import ToolError
from tools.files import Line, TextFormat, iter_lines, skip_lines
from tools.nofollow import NotRegularFile, open_directory, open_regular
from tools.settings import ToolSettings
from tools.workspace import Workspace

_MAX_LISTED = 500


@dataclass(frozen=True)
class _Child:
    """One entry of a directory listing."""

    name: str
    is_dir: bool
    link: str | None
    """Where a symlink points; None for anything else."""


class FileViewer:
    """The `view` command's output for one workspace and its settings."""

    def __init__(self, workspace: Workspace, settings: ToolSettings) -> None:
        self.workspace = workspace
        self.settings = settings

    def window(self, f: BinaryIO, fmt: TextFormat, shown: str, start: int, end: int, total: int | None,
               size: int = 0) -> ToolResult:
        """Lines start..end of the file; `total` is None when the file is too large to count cheaply."""
        if total == 0:
            return ToolResult(f"{shown} is empty.", data={"path": shown})
        if total is not None and start > total:
            raise ToolError(f"view_range starts at line {start}, but {shown} has only {total:,} lines; "
                            f"use a start from 1 to {total}.")
        f.seek(fmt.bom_bytes)
        skipped = skip_lines(f, start - 1)
        if skipped < start - 1:
            raise ToolError(f"view_range starts at line {start}, but {shown} has only {skipped:,} lines.")
        lines: list[Line] = []
        more = False
        for line in iter_lines(f, start, self.settings.max_line_chars, fmt):
            if line.number > end:
                more = True
                break
            lines.append(line)
        if not lines:
            raise ToolError(f"view_range starts at line {start}, but {shown} has only {start - 1:,} lines.")
        last = lines[-1].number
        if total is not None:
            header = f"{shown}: lines {start}-{last} of {total:,}"
        else:
            header = (f"{shown}: lines {start}-{last}; the file is {size_text(size)}, so its lines were not "
                      f"counted (bash `wc -l {shown}` counts them) and it is too large to edit with this tool")
        footer = []
        if more:
            window = self.settings.view_window_lines if total is None else min(self.settings.view_window_lines,
                                                                                total - last)
            footer.append(f"[more lines follow; view_range [{last + 1}, {last + window}] shows the next {window}]")
        else:
            footer.append("[end of file]")
        keep = self.settings.max_line_chars
        output = "\n".join([header, numbered(lines, keep), *footer, *_clip_note(lines, keep, shown)])
        return ToolResult(output, data={"path": shown})

    def listing(self, directory: Path) -> str:
        entries: list[str] = []
        hidden: list[str] = []
        fd = open_directory(directory)
        try:
            for child in _scan(fd):
                (hidden if child.name.startswith(".") else entries).append(self._entry(directory, child))
                if child.is_dir and not child.name.startswith("."):
                    for grandchild in _scan_subdirectory(fd, child.name):
                        (hidden if grandchild.name.startswith(".") else entries).append(
                            self._entry(directory / child.name, grandchild))
        finally:
            os.close(fd)
        shown = self.workspace.display(directory)
        lines = [f"{shown}/ (two levels deep):" if shown != "." else "The workspace root (two levels deep):"]
        lines.extend(entries[:_MAX_LISTED])
        if len(entries) > _MAX_LISTED:
            lines.append(f"[... {len(entries) - _MAX_LISTED:,} more entries; view a subdirectory to see them]")
        if not entries:
            lines.append("(no visible entries)")
        if hidden:
            names = ", ".join(hidden[:10]) + (", ..." if len(hidden) > 10 else "")
            lines.append(f"[hidden entries are not listed: {names}; view one by its path]")
        return "\n".join(lines)

    def _entry(self, directory: Path, child: _Child) -> str:
        shown = self.workspace.display(directory / child.name)
        if child.link is not None:
            return f"{shown} -> {child.link}"
        return shown + ("/" if child.is_dir else "")


def open_regular_file(path: Path, shown: str) -> BinaryIO:
    """Open `path` for reading as a regular file (tools/nofollow.py): a symlink, FIFO or device swapped in after
    the path was checked is refused instead of followed or waited on."""
    try:
        return open_regular(path)
    except NotRegularFile as exc:
        raise ToolError(not_regular(shown, exc.kind)) from None


def not_regular(shown: str, kind: str) -> str:
    return (f"{shown} is {kind}; the editor opens only regular files (never FIFOs, sockets or devices, nor a "
            "symlink put in place after its path was checked).")


def parse_range(view_range: list[int] | None, window: int) -> tuple[int, int]:
    """(start, end) as 1-based inclusive lines; an open end gives a window of `window` lines."""
    if view_range is None:
        return 1, window
    if len(view_range) not in (1, 2):
        raise ToolError(f"view_range must be [start] or [start, end], got {view_range}.")
    start = view_range[0]
    end = view_range[1] if len(view_range) == 2 else -1
    if start < 1:
        raise ToolError(f"view_range start must be 1 or more (lines are numbered from 1), got {start}.")
    if end == -1:
        return start, start + window - 1
    if end < start:
        raise ToolError(f"view_range end {end} is before its start {start}; use [start, end] with end >= start, "
                        "or end -1 for a window.")
    return start, end


def numbered(lines: list[Line], max_chars: int) -> str:
    out = []
    for line in lines:
        marker = f" [... {line.length - max_chars:,} more characters clipped]" if line.length > max_chars else ""
        out.append(f"{line.number:6}\t{line.text}{marker}")
    return "\n".join(out)


def _clip_note(lines: list[Line], max_chars: int, shown: str) -> list[str]:
    clipped = [line.number for line in lines if line.length > max_chars]
    if not clipped:
        return []
    return [f"[lines longer than {max_chars} characters are clipped; read one whole with bash, "
            f"e.g. `sed -n '{clipped[0]}p' {shown}`]"]


def _scan(fd: int) -> list[_Child]:
    """The entries of the directory open on `fd`, sorted by name."""
    try:
        with os.scandir(fd) as entries:
            children = [_Child(entry.name, entry.is_dir(follow_symlinks=False),
                               os.readlink(entry.name, dir_fd=fd) if entry.is_symlink() else None)
                        for entry in entries]
    except OSError:
        return []
    return sorted(children, key=lambda child: child.name)


def _scan_subdirectory(parent_fd: int, name: str) -> list[_Child]:
    """The entries of directory `name` under `parent_fd`; none if it is no longer a directory."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError:
        return []
    try:
        return _scan(fd)
    finally:
        os.close(fd)


def size_text(size: int) -> str:
    if size >= 2**20:
        return f"{size / 2**20:,.1f} MiB"
    return f"{size / 2**10:,.1f} KiB" if size >= 2**10 else f"{size} bytes"
