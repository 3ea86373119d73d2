"""The ripgrep backend of the search tools: finding rg, running it against a deadline, parsing its output.

rg runs with `--sort path`, so it visits files in the order of the Python walk. A glob only narrows what
a search sees: rg's `-g` would re-include hidden and ignored files, so rg gets the glob as an
`--ignore-file` (whose rules rank below every ignore file in the tree), and the caller filters its results
by the glob once more.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import tempfile
from base64 import b64decode
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from tools.errors import ToolError
from tools.gitignore import PathGlob
from tools.search_results import Deadline, Hits, Line, TimedOut

MIN_RIPGREP = (13, 0)
_UNPARSED = ((b'{"type":"match"', "match"), (b'{"type":"context"', "context"))


class RipgrepUnavailable(ValueError):
    """`use_ripgrep=True` was asked for, but no ripgrep of a supported version is on PATH."""


class RipgrepFailed(ToolError):
    """rg exited with an error and printed nothing; the message quotes its stderr."""


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
    return path if found and (int(found[1]), int(found[2])) >= MIN_RIPGREP else None


@contextmanager
def glob_ignore_file(glob: PathGlob | None) -> Iterator[Path | None]:
    """An ignore file for rg hiding every file but those matching `glob` (and hidden names again)."""
    if glob is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="kcode-search-") as directory:
        path = Path(directory) / "glob-filter"
        path.write_text(f"*\n!*/\n!{glob.glob}\n.*\n", encoding="utf-8")
        yield path


@contextmanager
def rg_records(command: list[str], cwd: Path, separator: bytes, deadline: Deadline) -> Iterator[Iterator[bytes]]:
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
            raise RipgrepFailed("ripgrep failed: " + stderr.read().decode("utf-8", "replace").strip())


class _RecordReader:
    """Splits a pipe into records, giving up at the deadline even while the writer is silent."""

    def __init__(self, fd: int, separator: bytes, deadline: Deadline) -> None:
        self.fd, self.separator, self.deadline = fd, separator, deadline
        self.any_output = self.exhausted = False

    def records(self) -> Iterator[bytes]:
        pending = bytearray()
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while True:
                remaining_s = self.deadline.remaining_s()
                if remaining_s <= 0 or not selector.select(remaining_s):
                    raise TimedOut
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


def rg_hits(records: Iterator[bytes], cwd: Path) -> Iterator[Hits]:
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
            yield Hits(path, count, partial(_rg_lines, tuple(raw)))


def _rg_lines(raw: tuple[bytes, ...]) -> list[Line]:
    lines = []
    for record in raw:
        message = json.loads(record)
        data = message["data"]
        raw_line = _rg_bytes(data["lines"])
        column = 0
        if message["type"] == "match" and data["submatches"]:  # rg's offsets count bytes
            column = len(raw_line[: data["submatches"][0]["start"]].decode("utf-8", "replace"))
        text = raw_line.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
        lines.append(Line(data["line_number"], text, message["type"] == "match", column))
    return lines


def _rg_bytes(value: Mapping[str, str]) -> bytes:
    """The bytes behind one of rg's JSON strings: `text` when valid UTF-8, else base64 `bytes`."""
    return value["text"].encode("utf-8") if "text" in value else b64decode(value["bytes"])


def rg_files(records: Iterator[bytes], cwd: Path) -> Iterator[Hits]:
    return (Hits(cwd / os.fsdecode(record), 1) for record in records)
