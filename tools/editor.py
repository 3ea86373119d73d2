"""The `editor` tool: view files and directories, create files, replace one exact string, insert lines, undo.

It keeps the str_replace_editor shape that models are trained on. Every edit answers with numbered
lines around the change and a diff, keeps the file's encoding, BOM, line endings and mode (see
`tools.files`), and writes atomically. Files over `MAX_EDIT_BYTES` can be viewed, a window at a
time and without reading past it, but not edited.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tools.base import ToolResult
from tools.edit_history import Edit, EditHistory, digest, read_if_exists, remove_empty_dirs
from tools.edit_matching import MAX_REPORTED_MATCHES, find_all, line_list, not_found_hint
from tools.errors import PathOutsideWorkspace, ToolError
from tools.files import (
    BINARY_SNIFF_BYTES,
    Line,
    TextFormat,
    atomic_write,
    count_lines,
    decode,
    iter_lines,
    looks_binary,
    skip_lines,
    sniff_format,
    split_lines,
    unified_diff,
)
from tools.settings import ToolSettings
from tools.workspace import Workspace

MAX_EDIT_BYTES = 10 * 2**20
"""Larger files are viewed by streaming a window and are not editable (their undo copies would be huge)."""
_MAX_LISTED = 500

# Per command: the arguments it needs and those it may take (besides command and path).
_ARGUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "view": ((), ("view_range",)),
    "create": (("file_text",), ("overwrite",)),
    "str_replace": (("old_str",), ("new_str",)),
    "insert": (("insert_line", "new_str"), ()),
    "undo_edit": ((), ()),
}


@dataclass(frozen=True)
class _Loaded:
    """A text file read whole for editing."""

    data: bytes
    text: str
    fmt: TextFormat
    mode: int


class EditorTool:
    """The file viewer and editor; one instance per session, since it holds the undo history."""

    name = "editor"

    def __init__(self, workspace: Workspace, settings: ToolSettings, history: EditHistory | None = None) -> None:
        self.workspace = workspace
        self.settings = settings
        self.history = history or EditHistory()
        self.description = (
            "View, create and edit text files. Commands:\n"
            f"- view: a file as numbered lines, {settings.view_window_lines} from line view_range[0] (default 1), "
            "or exactly lines view_range [start, end]; or a directory, two levels deep.\n"
            "- create: write file_text to a new file (parent directories are made); overwrite: true replaces "
            "an existing file.\n"
            "- str_replace: replace old_str, which must occur exactly once in the file, with new_str "
            "(default empty). Copy old_str exactly, indentation included, without view's line numbers.\n"
            "- insert: insert new_str after line insert_line (0 inserts at the top).\n"
            "- undo_edit: revert the last edit this tool made to the file.\n"
            "Paths are relative to the workspace root. Write line breaks as \\n: edits keep each file's "
            "encoding and line endings."
        )
        self.parameters: Mapping[str, Any] = {
            "type": "object",
            "properties": {
                "command": {"type": "string", "enum": list(_ARGUMENTS)},
                "path": {"type": "string", "description": "File or directory, relative to the workspace root."},
                "view_range": {"type": "array", "items": {"type": "integer"},
                               "description": "view: [start] or [start, end], 1-based and inclusive; "
                                              "end -1 means a window from start."},
                "file_text": {"type": "string", "description": "create: the whole content of the file."},
                "overwrite": {"type": "boolean", "description": "create: replace an existing file."},
                "old_str": {"type": "string", "description": "str_replace: the exact text to replace."},
                "new_str": {"type": "string", "description": "str_replace: the replacement; insert: the text."},
                "insert_line": {"type": "integer", "description": "insert: the line to insert after (0 = top)."},
            },
            "required": ["command", "path"],
        }

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        command = arguments["command"]
        _check_arguments(command, arguments)
        try:
            return self._run(command, arguments["path"], arguments)
        except OSError as exc:  # permissions, a full disk: the model can work around these
            raise ToolError(f"{command} of {arguments['path']} failed: {exc.strerror or exc}.") from None

    def _run(self, command: str, path_arg: str, arguments: Mapping[str, Any]) -> ToolResult:
        if command == "view":
            return self._view(path_arg, arguments.get("view_range"))
        if command == "create":
            return self._create(path_arg, arguments["file_text"], arguments.get("overwrite", False))
        if command == "str_replace":
            return self._str_replace(path_arg, arguments["old_str"], arguments.get("new_str", ""))
        if command == "insert":
            return self._insert(path_arg, arguments["insert_line"], arguments["new_str"])
        return self._undo(path_arg)

    # -- view ---------------------------------------------------------------------------------------

    def _view(self, path_arg: str, view_range: list[int] | None) -> ToolResult:
        path = self.workspace.resolve(path_arg)
        shown = self.workspace.display(path)
        if path.is_dir():
            return ToolResult(self._listing(path), data={"path": shown})
        self._require_file(path, shown)
        start, end = _parse_range(view_range, self.settings.view_window_lines)
        with _open_regular(path, shown) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(BINARY_SNIFF_BYTES)
            if looks_binary(head):
                raise ToolError(f"{shown} is a binary file ({_size_text(size)}), so the editor cannot show it; "
                                f"inspect it with bash (e.g. `file {shown}` or `xxd {shown} | head`).")
            if size <= MAX_EDIT_BYTES:
                data = head + f.read()
                text_fmt = decode(data)[1]
                return self._view_window(io.BytesIO(data), text_fmt, shown, start, end, count_lines(data))
            f.seek(0)
            return self._view_window(f, sniff_format(head), shown, start, end, None, size=size)

    def _view_window(self, f: BinaryIO, fmt: TextFormat, shown: str, start: int, end: int,
                     total: int | None, size: int = 0) -> ToolResult:
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
            header = (f"{shown}: lines {start}-{last}; the file is {_size_text(size)}, so its lines were not "
                      f"counted (bash `wc -l {shown}` counts them) and it is too large to edit with this tool")
        footer = []
        if more:
            window = self.settings.view_window_lines if total is None else min(self.settings.view_window_lines,
                                                                                total - last)
            footer.append(f"[more lines follow; view_range [{last + 1}, {last + window}] shows the next {window}]")
        else:
            footer.append("[end of file]")
        keep = self.settings.max_line_chars
        output = "\n".join([header, _numbered(lines, keep), *footer, *_clip_note(lines, keep, shown)])
        return ToolResult(output, data={"path": shown})

    def _listing(self, directory: Path) -> str:
        entries: list[str] = []
        hidden: list[str] = []
        for child in _children(directory):
            if child.name.startswith("."):
                hidden.append(self._entry(child))
                continue
            entries.append(self._entry(child))
            if child.is_dir(follow_symlinks=False):
                for grandchild in _children(Path(child.path)):
                    (hidden if grandchild.name.startswith(".") else entries).append(self._entry(grandchild))
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

    def _entry(self, entry: os.DirEntry[str]) -> str:
        shown = self.workspace.display(Path(entry.path))
        if entry.is_symlink():
            return f"{shown} -> {os.readlink(entry.path)}"
        return shown + ("/" if entry.is_dir() else "")

    # -- edits --------------------------------------------------------------------------------------

    def _create(self, path_arg: str, file_text: str, overwrite: bool) -> ToolResult:
        path = self._resolve_for_write(path_arg)
        shown = self.workspace.display(path)
        if path.is_dir():
            raise ToolError(f"{shown} is a directory; give a file path to create.")
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise ToolError(f"{shown} already exists; nothing was written. Change it with str_replace or "
                                "insert, or pass overwrite: true to replace all of it.")
            loaded = self._load(path, shown)
            text = _to_lf(file_text, loaded.fmt)
            return self._commit(path, shown, loaded, text, f"Overwrote {shown}")
        created = _missing_parents(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._commit(path, shown, None, file_text, f"Created {shown}", created_dirs=created)
        except ToolError:
            remove_empty_dirs(created)
            raise

    def _str_replace(self, path_arg: str, old_str: str, new_str: str) -> ToolResult:
        path = self._resolve_for_write(path_arg)
        shown = self.workspace.display(path)
        loaded = self._load(path, shown)
        old_str, new_str = _to_lf(old_str, loaded.fmt), _to_lf(new_str, loaded.fmt)
        if not old_str:
            raise ToolError("old_str is empty. To add text use insert; to replace the whole file use create "
                            "with overwrite: true.")
        if old_str == new_str:
            raise ToolError("old_str and new_str are the same, so there is nothing to change.")
        starts = find_all(loaded.text, old_str)
        if not starts:
            raise ToolError(f"old_str was not found in {shown}; nothing was changed. "
                            + not_found_hint(loaded.text, old_str))
        if len(starts) > 1:
            where = line_list([loaded.text.count("\n", 0, s) + 1 for s in starts])
            times = len(starts) if len(starts) <= MAX_REPORTED_MATCHES else f"more than {MAX_REPORTED_MATCHES}"
            raise ToolError(f"old_str occurs {times} times in {shown}, at lines {where}; nothing was "
                            "changed. Add surrounding lines to old_str so that it matches only one place.")
        at = starts[0]
        text = loaded.text[:at] + new_str + loaded.text[at + len(old_str):]
        line = loaded.text.count("\n", 0, at) + 1
        return self._commit(path, shown, loaded, text, f"Replaced the text at line {line} of {shown}")

    def _insert(self, path_arg: str, insert_line: int, new_str: str) -> ToolResult:
        path = self._resolve_for_write(path_arg)
        shown = self.workspace.display(path)
        loaded = self._load(path, shown)
        lines = split_lines(loaded.text)
        if not 0 <= insert_line <= len(lines):
            raise ToolError(f"insert_line {insert_line} is outside {shown}, which has {len(lines):,} lines; use 0 "
                            f"(top of the file) to {len(lines)} (after the last line).")
        new_str = _to_lf(new_str, loaded.fmt)
        if not new_str:
            raise ToolError("new_str is empty, so there is nothing to insert; to insert a blank line send \"\\n\".")
        new_lines = split_lines(new_str)
        ends_with_break = loaded.text.endswith("\n") or not loaded.text
        merged = lines[:insert_line] + new_lines + lines[insert_line:]
        text = "\n".join(merged) + ("\n" if ends_with_break else "")
        where = "at the top of" if insert_line == 0 else f"after line {insert_line} of"
        count = f"{len(new_lines)} line{'s' * (len(new_lines) != 1)}"
        return self._commit(path, shown, loaded, text, f"Inserted {count} {where} {shown}")

    def _undo(self, path_arg: str) -> ToolResult:
        path = self._resolve_for_write(path_arg)
        shown = self.workspace.display(path)
        edit = self.history.last(path)
        if edit is None:
            raise ToolError(f"There is no edit to {shown} to undo: only edits made with this tool in this "
                            "session can be undone (for others, git may have the old version).")
        current = read_if_exists(path)
        if not edit.still_current(current):
            raise ToolError(f"{shown} has changed since the last edit made with this tool (another command "
                            "changed it), so undoing that edit would lose the later changes. Nothing was done; "
                            "view the file and fix it with str_replace.")
        edit.restore()
        self.history.forget(edit)
        before = _text(current)
        if edit.before is None:
            diff = unified_diff(before, "", f"a/{shown}", "/dev/null")
            message = f"Undid the creation of {shown}: the file is removed."
            return ToolResult(message, data={"path": shown, "diff": diff})
        after = _text(edit.before)
        left = self.history.count(path)
        message = (f"Undid the last edit to {shown} ({left} earlier edit{'s' * (left != 1)} can still be undone)."
                   "\n" + self._snippet(before, after))
        diff = unified_diff(before, after, f"a/{shown}", f"b/{shown}")
        return ToolResult(message, data={"path": shown, "diff": diff})

    def _commit(self, path: Path, shown: str, loaded: _Loaded | None, new_text: str, summary: str,
                created_dirs: tuple[Path, ...] = ()) -> ToolResult:
        """Write the new text in the file's own format, record the edit for undo and describe it;
        `loaded` is None for a file being created."""
        before, old_text = (loaded.data, loaded.text) if loaded else (None, "")
        fmt, mode = (loaded.fmt, loaded.mode) if loaded else (TextFormat(), None)
        try:
            data = fmt.encode(new_text)
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start:exc.end]
            if fmt.encoding == "latin-1":
                raise ToolError(f"{shown} is Latin-1 encoded (it is not valid UTF-8), and {bad!r} cannot be "
                                "stored in it; nothing was changed. Use only Latin-1 characters, or convert the "
                                "file to UTF-8 with bash first (e.g. iconv).") from None
            raise ToolError(f"{bad!r} cannot be written as UTF-8; nothing was changed. Remove it.") from None
        try:
            atomic_write(path, data, mode)
        except OSError as exc:
            raise ToolError(f"Could not write {shown}: {exc.strerror or exc}; nothing was changed.") from None
        self.history.record(Edit(path, before, mode, digest(data), created_dirs))
        diff = unified_diff(old_text, new_text, "/dev/null" if before is None else f"a/{shown}", f"b/{shown}")
        added = sum(1 for d in diff.splitlines() if d.startswith("+") and not d.startswith("+++"))
        removed = sum(1 for d in diff.splitlines() if d.startswith("-") and not d.startswith("---"))
        output = (f"{summary} (+{added} -{removed} lines). Review the lines below; undo_edit reverts the edit.\n"
                  + self._snippet(old_text, new_text))
        return ToolResult(output, data={"path": shown, "diff": diff})

    def _snippet(self, old_text: str, new_text: str) -> str:
        """Numbered lines of the new text around what changed, with context, at most one view window."""
        old, new = split_lines(old_text), split_lines(new_text)
        if not new:
            return "(the file is now empty)"
        prefix = 0
        while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
            prefix += 1
        suffix = 0
        while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
            suffix += 1
        context = self.settings.snippet_context_lines
        first = max(min(prefix, len(new) - 1) - context, 0)
        last = min(len(new) - suffix + context, len(new))
        cut = last - first > self.settings.view_window_lines
        last = first + self.settings.view_window_lines if cut else last
        keep = self.settings.max_line_chars
        lines = [Line(first + i + 1, text[:keep], len(text)) for i, text in enumerate(new[first:last])]
        note = f"\n[snippet cut at {last - first} lines; view from line {last + 1} for the rest]" if cut else ""
        return _numbered(lines, self.settings.max_line_chars) + note

    # -- paths and files ----------------------------------------------------------------------------

    def _resolve_for_write(self, path_arg: str) -> Path:
        try:
            return self.workspace.resolve(path_arg, write=True)
        except PathOutsideWorkspace:
            readable = self.workspace.resolve(path_arg)  # raises the plain "outside" error when not readable
            raise ToolError(f"{readable} can be viewed but not edited: it lies in a read-only location (such as "
                            "saved tool outputs). Copy what you need into a file in the workspace.") from None

    def _require_file(self, path: Path, shown: str) -> None:
        if not path.exists():
            parent = path.parent
            hint = (f"view {self.workspace.display(parent)} to see what is there" if parent.is_dir()
                    else "check the path")
            raise ToolError(f"{shown} does not exist; {hint}, or create it with the create command.")
        if not stat.S_ISREG(path.stat().st_mode):
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise ToolError(f"{shown} is {kind}; the editor works on regular files.")

    def _load(self, path: Path, shown: str) -> _Loaded:
        self._require_file(path, shown)
        with _open_regular(path, shown) as f:
            info = os.fstat(f.fileno())
            if info.st_size > MAX_EDIT_BYTES:
                raise ToolError(f"{shown} is {_size_text(info.st_size)}, more than the editor edits "
                                f"({_size_text(MAX_EDIT_BYTES)}); change it with a script through bash "
                                "(e.g. sed or python).")
            data = f.read()
        if looks_binary(data):
            raise ToolError(f"{shown} is a binary file, so the editor cannot change it; use bash for binary files.")
        text, fmt = decode(data)
        return _Loaded(data, text, fmt, info.st_mode)


def _open_regular(path: Path, shown: str) -> BinaryIO:
    """Open `path` for reading as a regular file, checked on the open descriptor itself: a symlink, FIFO or
    device swapped in after the path was checked is refused instead of followed or waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ToolError(f"cannot read {shown}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ToolError(f"{shown} is not a regular file; the editor works on regular files.")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _check_arguments(command: str, arguments: Mapping[str, Any]) -> None:
    needed, optional = _ARGUMENTS[command]
    missing = [name for name in needed if name not in arguments]
    stray = [name for name in arguments if name not in ("command", "path", *needed, *optional)]
    if not missing and not stray:
        return
    takes = "".join(f", {name}" for name in needed) + "".join(f", {name} (optional)" for name in optional)
    problems = []
    if missing:
        problems.append(f"missing {' and '.join(missing)}")
    if stray:
        problems.append(f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} not used by {command}")
    raise ToolError(f"Invalid arguments for {command}: {'; '.join(problems)}. {command} takes path{takes}; "
                    "call again with just those.")


def _parse_range(view_range: list[int] | None, window: int) -> tuple[int, int]:
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


def _numbered(lines: list[Line], max_chars: int) -> str:
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


def _children(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return []


def _missing_parents(path: Path) -> tuple[Path, ...]:
    """The directories `mkdir(parents=True)` will make for `path`, deepest first."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return tuple(missing)


def _to_lf(text: str, fmt: TextFormat) -> str:
    """The model writes "\n"; a CRLF it sends into a CRLF file would otherwise become CR CR LF."""
    return text.replace("\r\n", "\n") if fmt.newline == "\r\n" else text


def _text(data: bytes | None) -> str:
    return decode(data)[0] if data is not None else ""


def _size_text(size: int) -> str:
    if size >= 2**20:
        return f"{size / 2**20:,.1f} MiB"
    return f"{size / 2**10:,.1f} KiB" if size >= 2**10 else f"{size} bytes"
