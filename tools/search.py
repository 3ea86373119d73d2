"""The search tools: regex search in file contents (`search_text`) and file search by glob (`find_files`).

Each runs ripgrep (13 or newer) when installed and a Python walk otherwise, with the same output: the
walk re-implements rg's file filtering (tools/gitignore.py), rg runs with `--sort path` so both visit
files in one order, and one formatter writes both. The model sees at most `max_search_matches` results
and a line counting the rest; counting stops at `COUNT_LIMIT`. A glob only narrows what a search sees:
rg's `-g` would re-include hidden and ignored files, so rg gets the glob as an `--ignore-file` (whose
rules rank below every ignore file in the tree) and its results are filtered by the glob once more.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from base64 import b64decode
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tools.base import ToolResult
from tools.errors import ToolError
from tools.gitignore import PathGlob, visible_files
from tools.settings import ToolSettings
from tools.workspace import Workspace

DEFAULT_TIMEOUT_S = 60.0
MAX_CONTEXT_LINES = 10
COUNT_LIMIT = 10_000
"""Past this many results a search stops and reports the count as a lower bound."""
_MIN_RIPGREP = (13, 0)
_SKIPPED = "Hidden files, binary files and files ignored by .gitignore, .ignore or .rgignore are skipped."
_NARROW = "narrow the search with a more specific pattern, a `path` or a `glob`"
_UNPARSED = ((b'{"type":"match"', "match"), (b'{"type":"context"', "context"))


class RipgrepUnavailable(ValueError):
    """`use_ripgrep=True` was asked for, but no ripgrep of a supported version is on PATH."""


class _TimedOut(Exception):
    """The search ran past its deadline."""


class _RipgrepFailed(ToolError):
    """rg exited with an error and printed nothing; the message quotes its stderr."""


@dataclass(frozen=True)
class _Deadline:
    at: float
    clock: Callable[[], float]

    def remaining_s(self) -> float:
        return self.at - self.clock()

    def check(self) -> None:
        if self.remaining_s() <= 0:
            raise _TimedOut


@dataclass(frozen=True)
class _Line:
    number: int
    text: str
    is_match: bool
    column: int = 0
    """Character offset of the first match: a clipped long line keeps the match in view."""


@dataclass(frozen=True)
class _Hits:
    """One file's results; `lines` is parsed only for the files that are shown."""

    path: Path
    count: int
    lines: Callable[[], list[_Line]] = list


@dataclass
class _Tally:
    shown: list[tuple[Path, list[_Line]]] = field(default_factory=list)
    shown_count: int = 0
    total: int = 0
    files: int = 0
    complete: bool = True
    timed_out: bool = False


def find_ripgrep() -> str | None:
    """The path of a ripgrep this module supports, or None."""
    path = shutil.which("rg")
    if path is None:
        return None
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.match(r"ripgrep (\d+)\.(\d+)", version)
    return path if found and (int(found[1]), int(found[2])) >= _MIN_RIPGREP else None


class _SearchTool(ABC):
    """What both tools share: where to search, which backend, the deadline, the glob filter."""

    def __init__(self, workspace: Workspace, settings: ToolSettings, *, use_ripgrep: bool | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.workspace, self.settings, self.timeout_s, self.clock = workspace, settings, timeout_s, clock
        self.ripgrep = find_ripgrep() if use_ripgrep is not False else None
        if use_ripgrep and self.ripgrep is None:
            raise RipgrepUnavailable(f"use_ripgrep=True, but no ripgrep >= {_MIN_RIPGREP[0]} is on PATH")
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
        return target

    def _subject(self, path: Path) -> bytes:
        """What a glob is matched against: the path from the workspace root (absolute outside it)."""
        return os.fsencode(self.workspace.display(path))

    def _rg_tally(self, target: Path, glob: PathGlob | None, args: list[str], separator: bytes,
                  parse: Callable[[Iterator[bytes], Path], Iterator[_Hits]], context: int = 0) -> _Tally:
        """Run rg from the workspace root (where glob rules are rooted) and tally what it finds."""
        assert self.ripgrep is not None
        root = self.workspace.root
        where = str(target.relative_to(root)) if target.is_relative_to(root) else str(target)
        with _glob_ignore_file(glob) as ignore_file:
            command = [self.ripgrep, "--no-config", "--sort", "path", "--no-ignore-global", "--no-ignore-exclude",
                       *(["--ignore-file", str(ignore_file)] if ignore_file else []), *args, "--", where]
            with _rg_records(command, root, separator, _Deadline(self.clock() + self.timeout_s, self.clock)) \
                    as records:
                hits = (hit for hit in parse(records, root)
                        if glob is None or glob.matches(self._subject(hit.path)))
                return _tally(hits, self.settings.max_search_matches, context)

    def _walk_tally(self, target: Path, glob: PathGlob | None,
                    search: Callable[[Iterator[Path]], Iterator[_Hits]], context: int = 0) -> _Tally:
        """The Python backend: walk the visible files, in rg's order, against the deadline."""
        deadline = _Deadline(self.clock() + self.timeout_s, self.clock)

        def files() -> Iterator[Path]:
            for path in visible_files(target):
                deadline.check()
                if glob is None or glob.matches(self._subject(path)):
                    yield path

        return _tally(search(files()), self.settings.max_search_matches, context)

    def _result(self, tally: _Tally, noun: str, body: list[str], nothing: str, **data: Any) -> ToolResult:
        data |= {"files": tally.files, "shown": tally.shown_count, "complete": tally.complete,
                 "timed_out": tally.timed_out}
        if not tally.total and not tally.timed_out:
            return ToolResult(f"{nothing} {_SKIPPED}", data=data)
        header, footer = _summary(tally, noun, self.timeout_s)
        return ToolResult("\n".join([header, *body, *([footer] if footer else [])]), data=data)

    def _display(self, path: Path) -> str:
        return _printable(self.workspace.display(path))

    def _where(self, target: Path, glob: PathGlob | None) -> str:
        where = "the workspace" if target == self.workspace.root else self._display(target)
        return where + (f" (files matching glob {glob.glob!r})" if glob else "")


@contextmanager
def _glob_ignore_file(glob: PathGlob | None) -> Iterator[Path | None]:
    """An ignore file for rg hiding every file but those matching `glob` (and hidden names again)."""
    if glob is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="kcode-search-") as directory:
        path = Path(directory) / "glob-filter"
        path.write_text(f"*\n!*/\n!{glob.glob}\n.*\n", encoding="utf-8")
        yield path


@contextmanager
def _rg_records(command: list[str], cwd: Path, separator: bytes, deadline: _Deadline) -> Iterator[Iterator[bytes]]:
    """rg's output split into records, read against the deadline; rg is killed if the caller stops early."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=stderr)
        assert process.stdout is not None
        reader = _RecordReader(process.stdout.fileno(), separator, deadline)
        try:
            yield reader.records()
        finally:
            if not reader.exhausted:
                process.kill()
            code = process.wait()
            process.stdout.close()
        if code == 2 and not reader.any_output:
            stderr.seek(0)
            raise _RipgrepFailed("ripgrep failed: " + stderr.read().decode("utf-8", "replace").strip())


class _RecordReader:
    """Splits a pipe into records, giving up at the deadline even while the writer is silent."""

    def __init__(self, fd: int, separator: bytes, deadline: _Deadline) -> None:
        self.fd, self.separator, self.deadline = fd, separator, deadline
        self.any_output = self.exhausted = False

    def records(self) -> Iterator[bytes]:
        pending = bytearray()
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while True:
                remaining_s = self.deadline.remaining_s()
                if remaining_s <= 0 or not selector.select(remaining_s):
                    raise _TimedOut
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                self.any_output = True
                pending += chunk
                if self.separator in chunk:  # split only then: a 100 MB line must not cost quadratic time
                    *records, rest = bytes(pending).split(self.separator)
                    pending = bytearray(rest)
                    yield from records
        self.exhausted = True
        if pending:
            yield bytes(pending)


def _tally(hits: Iterator[_Hits], limit: int, context: int) -> _Tally:
    """The first `limit` results and a count of all of them (a lower bound past COUNT_LIMIT)."""
    tally = _Tally()
    try:
        for hit in hits:
            room = limit - tally.shown_count
            if room > 0:
                tally.shown.append((hit.path, _first_matches(hit.lines(), room, context)))
                tally.shown_count += min(room, hit.count)
            tally.total += hit.count
            tally.files += 1
            if tally.total >= max(COUNT_LIMIT, limit + 1):
                tally.complete = False
                break
    except _TimedOut:
        tally.complete, tally.timed_out = False, True
    return tally


def _first_matches(lines: list[_Line], room: int, context: int) -> list[_Line]:
    """`lines` up to the `room`-th match, with that match's trailing context."""
    kept: list[_Line] = []
    matches = 0
    for line in lines:
        if matches == room and (line.is_match or line.number > kept[-1].number + context):
            break
        kept.append(line)
        matches += line.is_match
    return kept


def _summary(tally: _Tally, noun: str, timeout_s: float) -> tuple[str, str]:
    """The header and footer around the results."""
    found = f"{tally.total:,} {noun}{'' if tally.total == 1 else 's'}"
    if noun != "file":
        found += f" in {tally.files:,} file{'' if tally.files == 1 else 's'}"
    if tally.timed_out:
        header = (f"The search stopped at its {timeout_s:g} s time limit; {found} were found before that. "
                  "Search a smaller `path` or add a `glob`.")
    else:
        header = f"{found}:" if tally.complete else f"At least {found} (counting stopped there):"
    if tally.shown_count == tally.total and tally.complete:
        return header, ""
    more = f"{tally.total - tally.shown_count:,}" + ("" if tally.complete else "+")
    return header, f"[{more} more {noun}s not shown; {_NARROW} to see them.]"


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
                context: int) -> tuple[_Tally, str]:
        if self.ripgrep:
            args = ["--json", "--no-mmap", "--encoding", "none", "--engine", "auto", "--context", str(context),
                    *(["--ignore-case"] if ignore_case else []), "--regexp", pattern]
            try:
                return self._rg_tally(target, glob, args, b"\n", _rg_hits, context), "ripgrep"
            except _RipgrepFailed as exc:
                # An rg built without PCRE2 cannot do look-around or backreferences; Python's re can.
                if "look-around" not in str(exc) and "backreferences" not in str(exc):
                    lines = str(exc).removeprefix("ripgrep failed: ").splitlines()
                    message = "\n".join(line for line in lines if line.strip("~"))
                    raise ToolError(f"Invalid regex {pattern!r} for ripgrep:\n{message}") from exc
        regex = _compile(pattern, ignore_case)
        return self._walk_tally(target, glob, partial(_python_hits, regex=regex, context=context), context), "python"

    def _format(self, shown: list[tuple[Path, list[_Line]]], context: int) -> list[str]:
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
            tally = self._rg_tally(target, glob, ["--files", "--null"], b"\0", _rg_files)
        else:
            tally = self._walk_tally(target, glob, lambda paths: (_Hits(path, 1) for path in paths))
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


def _python_hits(files: Iterator[Path], *, regex: re.Pattern[str], context: int) -> Iterator[_Hits]:
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
            yield _Hits(path, len(columns), partial(_with_context, lines, columns, context))


def _with_context(lines: list[str], columns: dict[int, int], context: int) -> list[_Line]:
    numbers = sorted({near for index in columns
                      for near in range(max(index - context, 0), min(index + context + 1, len(lines)))})
    return [_Line(index + 1, lines[index].removesuffix("\r"), index in columns, columns.get(index, 0))
            for index in numbers]


def _rg_hits(records: Iterator[bytes], cwd: Path) -> Iterator[_Hits]:
    """Files with matches from `rg --json`; a file in which rg met a NUL byte is dropped as binary."""
    path, raw, count, data = cwd, [], 0, {}
    for record in records:
        # The bulk are matches and context: sort them without parsing, as they may never be shown.
        kind = next((name for prefix, name in _UNPARSED if record.startswith(prefix)), None)
        if kind is None:
            message = json.loads(record)
            kind, data = message.get("type"), message.get("data", {})
        if kind in ("match", "context"):
            raw.append(record)
            count += kind == "match"
        elif kind == "begin":
            path, raw, count = cwd / os.fsdecode(_rg_bytes(data["path"])), [], 0
        elif kind == "end" and count and data.get("binary_offset") is None:
            yield _Hits(path, count, partial(_rg_lines, tuple(raw)))


def _rg_lines(raw: tuple[bytes, ...]) -> list[_Line]:
    lines = []
    for record in raw:
        message = json.loads(record)
        data = message["data"]
        raw_line = _rg_bytes(data["lines"])
        column = 0
        if message["type"] == "match" and data["submatches"]:  # rg's offsets count bytes
            column = len(raw_line[: data["submatches"][0]["start"]].decode("utf-8", "replace"))
        text = raw_line.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
        lines.append(_Line(data["line_number"], text, message["type"] == "match", column))
    return lines


def _rg_bytes(value: Mapping[str, str]) -> bytes:
    """The bytes behind one of rg's JSON strings: `text` when valid UTF-8, else base64 `bytes`."""
    return value["text"].encode("utf-8") if "text" in value else b64decode(value["bytes"])


def _rg_files(records: Iterator[bytes], cwd: Path) -> Iterator[_Hits]:
    return (_Hits(cwd / os.fsdecode(record), 1) for record in records)


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
