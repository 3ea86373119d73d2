"""The search tools: regex search in file contents (`search_text`) and file search by glob (`find_files`).

Each runs ripgrep (13 or newer, tools/search_ripgrep.py) when installed and the Python walk here
otherwise, with the same output: the walk re-implements rg's file filtering (tools/gitignore.py), both
visit files in one order, and one formatter writes both. The model sees at most `max_search_matches`
results and a line counting the rest (tools/search_results.py). Results in files that look like secrets
(tools/secret_files.py) are left out and counted apart.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from tools.base import ToolResult
from tools.errors import ToolError
from tools.gitignore import PathGlob, visible_files
from tools.search_results import Deadline, Hits, Line, Tally, secret_note, summary, tally
from tools.search_ripgrep import (
    MIN_RIPGREP,
    RipgrepFailed,
    RipgrepUnavailable,
    find_ripgrep,
    glob_ignore_file,
    rg_files,
    rg_hits,
    rg_records,
)
from tools.secret_files import SecretFiles, refusal
from tools.settings import ToolSettings
from tools.workspace import Workspace

DEFAULT_TIMEOUT_S = 60.0
MAX_CONTEXT_LINES = 10
_SKIPPED = ("Hidden files, binary files, files ignored by .gitignore, .ignore or .rgignore, and files that look "
            "like secrets (.env, private keys) are skipped.")


class _SearchTool(ABC):
    """What both tools share: where to search, which backend, the deadline, the glob filter."""

    def __init__(self, workspace: Workspace, settings: ToolSettings, *, use_ripgrep: bool | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.workspace, self.settings, self.timeout_s, self.clock = workspace, settings, timeout_s, clock
        self.secrets = SecretFiles(settings.secret_files)
        self.ripgrep = find_ripgrep() if use_ripgrep is not False else None
        if use_ripgrep and self.ripgrep is None:
            raise RipgrepUnavailable(f"use_ripgrep=True, but no ripgrep >= {MIN_RIPGREP[0]} is on PATH")
        self.description = self._describe()

    @abstractmethod
    def _describe(self) -> str:
        """The description the model reads, which names the limits and the regex dialect in force."""

    def _target(self, arguments: Mapping[str, Any]) -> Path:
        target = self.workspace.resolve(arguments.get("path") or ".")
        if not target.exists():
            raise ToolError(f"{arguments.get('path')} does not exist; give a file or directory in the workspace")
        if not (target.is_dir() or target.is_file()):
            raise ToolError(f"{arguments.get('path')} is neither a regular file nor a directory")
        if not os.access(target, os.R_OK):
            raise ToolError(f"{arguments.get('path')} is not readable")
        if target.is_file():
            glob = self.secrets.match(self.workspace.display(target)) or self.secrets.match(arguments["path"])
            if glob is not None:
                raise ToolError(refusal(self.workspace.display(target), glob, "search"))
        return target

    def _is_secret(self, path: Path) -> bool:
        return self.secrets.match(self.workspace.display(path)) is not None

    def _subject(self, path: Path) -> bytes:
        """What a glob is matched against: the path from the workspace root (absolute outside it)."""
        return os.fsencode(self.workspace.display(path))

    def _rg_tally(self, target: Path, glob: PathGlob | None, args: list[str], separator: bytes,
                  parse: Callable[[Iterator[bytes], Path], Iterator[Hits]], context: int = 0) -> Tally:
        """Run rg from the workspace root (where glob rules are rooted) and tally what it finds."""
        assert self.ripgrep is not None
        root = self.workspace.root
        where = str(target.relative_to(root)) if target.is_relative_to(root) else str(target)
        with glob_ignore_file(glob) as ignore_file:
            command = [self.ripgrep, "--no-config", "--sort", "path", "--no-ignore-global", "--no-ignore-exclude",
                       *(["--ignore-file", str(ignore_file)] if ignore_file else []), *args, "--", where]
            with rg_records(command, root, separator, Deadline(self.clock() + self.timeout_s, self.clock)) \
                    as records:
                hits = (hit for hit in parse(records, root)
                        if glob is None or glob.matches(self._subject(hit.path)))
                return tally(hits, self.settings.max_search_matches, context, self._is_secret)

    def _walk_tally(self, target: Path, glob: PathGlob | None,
                    search: Callable[[Iterator[Path]], Iterator[Hits]], context: int = 0) -> Tally:
        """The Python backend: walk the visible files, in rg's order, against the deadline."""
        deadline = Deadline(self.clock() + self.timeout_s, self.clock)

        def files() -> Iterator[Path]:
            for path in visible_files(target):
                deadline.check()
                if glob is None or glob.matches(self._subject(path)):
                    yield path

        return tally(search(files()), self.settings.max_search_matches, context, self._is_secret)

    def _result(self, tally: Tally, noun: str, body: list[str], nothing: str, **data: Any) -> ToolResult:
        data |= {"files": tally.files, "shown": tally.shown_count, "complete": tally.complete,
                 "timed_out": tally.timed_out, "secret_files_left_out": tally.secret_files}
        note = [secret_note(tally, noun)] if tally.secret_files else []
        if not tally.total and not tally.timed_out:
            return ToolResult("\n".join([f"{nothing} {_SKIPPED}", *note]), data=data)
        header, footer = summary(tally, noun, self.timeout_s)
        return ToolResult("\n".join([header, *body, *([footer] if footer else []), *note]), data=data)

    def _display(self, path: Path) -> str:
        return _printable(self.workspace.display(path))

    def _where(self, target: Path, glob: PathGlob | None) -> str:
        where = "the workspace" if target == self.workspace.root else self._display(target)
        return where + (f" (files matching glob {glob.glob!r})" if glob else "")


class SearchTextTool(_SearchTool):
    """Regex search of file contents, like `rg PATTERN`."""

    name = "search_text"
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "Regular expression, matched against one line at a time."},
            "path": {"type": "string",
                     "description": "File or directory to search, relative to the workspace root (default: all)."},
            "glob": {"type": "string",
                     "description": "Only search files matching this glob: '*.py' and 'test_*.py' match file "
                                    "names at any depth, '*.{ts,tsx}' either suffix; a glob with '/' matches the "
                                    "path from the workspace root, e.g. 'src/**/*.rs'."},
            "ignore_case": {"type": "boolean", "description": "Match regardless of case (default false)."},
            "context": {"type": "integer",
                        "description": f"Lines shown before and after each match, 0-{MAX_CONTEXT_LINES} (default 0)."},
        },
        "required": ["pattern"],
    }

    def _describe(self) -> str:
        dialect = "ripgrep's (Rust) regex syntax" if self.ripgrep else "Python `re` syntax"
        return (
            "Search file contents for a regular expression, like ripgrep. Prints matching lines as "
            "`path:line:text` (context lines as `path-line-text`, groups split by `--`), sorted by path and "
            "line, paths relative to the workspace root. The pattern uses " + dialect + ", one line at a "
            "time: escape .()[]{}*+?|^$\\ to match them literally. " + _SKIPPED + " At most "
            f"{self.settings.max_search_matches} matching lines are shown; narrow with `path` or `glob` for more."
        )

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        pattern: str = arguments["pattern"]
        if not pattern:
            raise ToolError("pattern is empty; give a regular expression")
        # rg refuses a line break (its PCRE2 fallback would accept one and never match): refuse it on both paths.
        if "\n" in pattern or re.search(r"(?<!\\)(?:\\\\)*\\n", pattern):
            raise ToolError(f"Invalid regex {pattern!r}: it matches a line break, but the search is line by line")
        context = arguments.get("context", 0)
        if not 0 <= context <= MAX_CONTEXT_LINES:
            raise ToolError(f"context must be between 0 and {MAX_CONTEXT_LINES} lines, got {context}")
        ignore_case = bool(arguments.get("ignore_case", False))
        glob = PathGlob(arguments["glob"]) if arguments.get("glob") is not None else None
        target = self._target(arguments)
        tally, backend = self._search(pattern, target, glob, ignore_case, context)
        return self._result(tally, "matching line", self._format(tally.shown, context),
                            f"No matches for {pattern!r} in {self._where(target, glob)}.", backend=backend,
                            matches=tally.total)

    def _search(self, pattern: str, target: Path, glob: PathGlob | None, ignore_case: bool,
                context: int) -> tuple[Tally, str]:
        if self.ripgrep:
            args = ["--json", "--no-mmap", "--encoding", "none", "--engine", "auto", "--context", str(context),
                    *(["--ignore-case"] if ignore_case else []), "--regexp", pattern]
            try:
                return self._rg_tally(target, glob, args, b"\n", rg_hits, context), "ripgrep"
            except RipgrepFailed as exc:
                # An rg built without PCRE2 cannot do look-around or backreferences; Python's re can.
                if "look-around" not in str(exc) and "backreferences" not in str(exc):
                    lines = str(exc).removeprefix("ripgrep failed: ").splitlines()
                    message = "\n".join(line for line in lines if line.strip("~"))
                    raise ToolError(f"Invalid regex {pattern!r} for ripgrep:\n{message}") from exc
        regex = _compile(pattern, ignore_case)
        return self._walk_tally(target, glob, partial(_python_hits, regex=regex, context=context), context), "python"

    def _format(self, shown: list[tuple[Path, list[Line]]], context: int) -> list[str]:
        out: list[str] = []
        previous: tuple[Path, int] | None = None
        for path, lines in shown:
            name = self._display(path)
            for line in lines:
                if context and previous is not None and previous != (path, line.number - 1):
                    out.append("--")
                mark = ":" if line.is_match else "-"
                text = _clip(line.text, line.column, self.settings.max_line_chars)
                out.append(f"{name}{mark}{line.number}{mark}{text}")
                previous = (path, line.number)
        return out


class FindFilesTool(_SearchTool):
    """File search by glob, like `rg --files -g GLOB`."""

    name = "find_files"
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string",
                        "description": "Glob: 'test_*.py' or 'setup.py' match file names at any depth; a glob "
                                       "with '/' matches the path from the workspace root ('src/**/*.ts'); "
                                       "'**' spans directories, '{a,b}' gives alternatives."},
            "path": {"type": "string",
                     "description": "Directory to search, relative to the workspace root (default: all)."},
        },
        "required": ["pattern"],
    }

    def _describe(self) -> str:
        return ("Find files by name or path glob. Prints matching file paths (not directories), relative to the "
                f"workspace root, sorted; at most {self.settings.max_search_matches}. " + _SKIPPED)

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        glob = PathGlob(arguments["pattern"])
        target = self._target(arguments)
        if self.ripgrep:
            tally = self._rg_tally(target, glob, ["--files", "--null"], b"\0", rg_files)
        else:
            tally = self._walk_tally(target, glob, lambda paths: (Hits(path, 1) for path in paths))
        return self._result(tally, "file", [self._display(path) for path, _ in tally.shown],
                            f"No files match {glob.glob!r} in {self._where(target, None)}.",
                            backend="ripgrep" if self.ripgrep else "python")


def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """The Python backend's regex. Nested sets and set operations (`[[:alpha:]]`, `[a&&b]`) are rg syntax
    Python would silently misread; it warns about them, and that warning is an error here."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        try:
            return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except (re.error, FutureWarning) as exc:
            raise ToolError(f"Invalid regex {pattern!r} (Python re syntax, no POSIX classes): {exc}") from exc


def _python_hits(files: Iterator[Path], *, regex: re.Pattern[str], context: int) -> Iterator[Hits]:
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data:  # binary, as ripgrep judges it
            continue
        lines = data.decode("utf-8", "replace").split("\n")
        if lines[-1] == "":
            lines.pop()
        columns = {index: found.start() for index, line in enumerate(lines) if (found := regex.search(line))}
        if columns:
            yield Hits(path, len(columns), partial(_with_context, lines, columns, context))


def _with_context(lines: list[str], columns: dict[int, int], context: int) -> list[Line]:
    numbers = sorted({near for index in columns
                      for near in range(max(index - context, 0), min(index + context + 1, len(lines)))})
    return [Line(index + 1, lines[index].removesuffix("\r"), index in columns, columns.get(index, 0))
            for index in numbers]


def _printable(text: str) -> str:
    """`text` with undecodable bytes shown as U+FFFD, so it can be written as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _clip(text: str, column: int, limit: int) -> str:
    """`text` cut to `limit` characters around `column`, with markers for what was left out."""
    if len(text) <= limit:
        return text
    start = 0 if column < limit * 3 // 4 else min(column - limit // 4, len(text) - limit)
    end = start + limit
    head = f"[...{start:,} chars] " if start else ""
    tail = f" [...{len(text) - end:,} more chars]" if end < len(text) else ""
    return head + text[start:end] + tail
