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
from typing import Any

from tools.base import ToolResult
from tools.edit_history import Edit, EditHistory, digest
from tools.edit_matching import MAX_REPORTED_MATCHES, find_all, line_list, not_found_hint
from tools.editor_view import FileViewer, not_regular, numbered, open_regular_file, parse_range, size_text
from tools.errors import PathOutsideWorkspace, ToolError
from tools.files import (
    BINARY_SNIFF_BYTES,
    Line,
    TextFormat,
    count_lines,
    decode,
    looks_binary,
    sniff_format,
    split_lines,
    unified_diff,
)
from tools.nofollow import (
    describe,
    entry_mode,
    read_regular,
    write_atomic,
)
from tools.secret_files import SecretFiles, refusal
from tools.settings import ToolSettings
from tools.workspace import Workspace

MAX_EDIT_BYTES = 10 * 2**20
"""Larger files are viewed by streaming a window and are not editable (their undo copies would be huge)."""

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
        self._viewer = FileViewer(workspace, settings)
        self.secrets = SecretFiles(settings.secret_files)
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
            "encoding and line endings. Files that look like secrets (.env, private keys, credential files) "
            "are not opened."
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
        if self._require_entry(path, shown, directory_ok=True):
            return ToolResult(self._viewer.listing(path), data={"path": shown})
        self._refuse_secret(path_arg, path, "read")
        start, end = parse_range(view_range, self.settings.view_window_lines)
        with open_regular_file(path, shown) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(BINARY_SNIFF_BYTES)
            if looks_binary(head):
                raise ToolError(f"{shown} is a binary file ({size_text(size)}), so the editor cannot show it; "
                                f"inspect it with bash (e.g. `file {shown}` or `xxd {shown} | head`).")
            if size <= MAX_EDIT_BYTES:
                data = head + f.read()
                text_fmt = decode(data)[1]
                return self._viewer.window(io.BytesIO(data), text_fmt, shown, start, end, count_lines(data))
            f.seek(0)
            return self._viewer.window(f, sniff_format(head), shown, start, end, None, size=size)

    # -- edits --------------------------------------------------------------------------------------

    def _create(self, path_arg: str, file_text: str, overwrite: bool) -> ToolResult:
        path = self._resolve_for_write(path_arg)
        shown = self.workspace.display(path)
        mode = entry_mode(path)
        if mode is not None and stat.S_ISDIR(mode):
            raise ToolError(f"{shown} is a directory; give a file path to create.")
        if mode is not None:
            if not overwrite:
                raise ToolError(f"{shown} already exists; nothing was written. Change it with str_replace or "
                                "insert, or pass overwrite: true to replace all of it.")
            loaded = self._load(path, shown)
            text = _to_lf(file_text, loaded.fmt)
            return self._commit(path, shown, loaded, text, f"Overwrote {shown}")
        return self._commit(path, shown, None, file_text, f"Created {shown}", make_parents=True)

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
        current = read_regular(path)
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
                make_parents: bool = False) -> ToolResult:
        """Write the new text in the file's own format, record the edit for undo and describe it;
        `loaded` is None for a file being created, whose missing parent directories are made."""
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
            created_dirs = write_atomic(path, data, mode, make_parents=make_parents)
        except OSError as exc:
            raise ToolError(f"Could not write {shown}: {exc.strerror or exc}; nothing was changed.") from None
        self.history.record(Edit(path, before, mode, digest(data), tuple(created_dirs)))
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
        return numbered(lines, self.settings.max_line_chars) + note

    # -- paths and files ----------------------------------------------------------------------------

    def _resolve_for_write(self, path_arg: str) -> Path:
        try:
            path = self.workspace.resolve(path_arg, write=True)
        except PathOutsideWorkspace:
            readable = self.workspace.resolve(path_arg)  # raises the plain "outside" error when not readable
            raise ToolError(f"{readable} can be viewed but not edited: it lies in a read-only location (such as "
                            "saved tool outputs). Copy what you need into a file in the workspace.") from None
        self._refuse_secret(path_arg, path, "read or write")
        return path

    def _refuse_secret(self, path_arg: str, path: Path, doing: str) -> None:
        """Refuse a file that looks like it holds credentials, by the name asked for or the one it resolves to."""
        shown = self.workspace.display(path)
        for subject in (shown, path_arg):
            glob = self.secrets.match(subject)
            if glob is not None:
                raise ToolError(refusal(shown, glob, doing))

    def _require_entry(self, path: Path, shown: str, *, directory_ok: bool = False) -> bool:
        """Refuse a missing path and anything but a regular file (or a directory, when `directory_ok`);
        whether it is a directory. The open that follows checks the entry again, on its descriptor."""
        mode = entry_mode(path)
        if mode is None:
            parent = path.parent
            hint = (f"view {self.workspace.display(parent)} to see what is there" if parent.is_dir()
                    else "check the path")
            raise ToolError(f"{shown} does not exist; {hint}, or create it with the create command.")
        if stat.S_ISDIR(mode) and directory_ok:
            return True
        if not stat.S_ISREG(mode):
            raise ToolError(not_regular(shown, describe(mode)))
        return False

    def _load(self, path: Path, shown: str) -> _Loaded:
        self._require_entry(path, shown)
        with open_regular_file(path, shown) as f:
            info = os.fstat(f.fileno())
            if info.st_size > MAX_EDIT_BYTES:
                raise ToolError(f"{shown} is {size_text(info.st_size)}, more than the editor edits "
                                f"({size_text(MAX_EDIT_BYTES)}); change it with a script through bash "
                                "(e.g. sed or python).")
            data = f.read()
        if looks_binary(data):
            raise ToolError(f"{shown} is a binary file, so the editor cannot change it; use bash for binary files.")
        text, fmt = decode(data)
        return _Loaded(data, text, fmt, info.st_mode)


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


def _to_lf(text: str, fmt: TextFormat) -> str:
    """The model writes "\n"; a CRLF it sends into a CRLF file would otherwise become CR CR LF."""
    return text.replace("\r\n", "\n") if fmt.newline == "\r\n" else text


def _text(data: bytes | None) -> str:
    return decode(data)[0] if data is not None else ""
