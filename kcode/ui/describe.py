"""Short plain-text descriptions of tool calls and their results, shared by every screen kcode draws.

The chat renderer, the progress printer and the approval prompt all name a call the same way
(`bash` shows its command, `editor` its command and path, a search its pattern), so a user who reads
one of them can read the others. Nothing here styles text: each caller paints it as it likes.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from kcode.messages import ToolCall
from tools.base import ToolResult

_HUNK_HEADER = re.compile(r"^@@ -\d+(?:,(?P<old>\d+))? \+\d+(?:,(?P<new>\d+))? @@")
# Terminal escape sequences and control characters other than tab and newline: a command's coloured
# output must not repaint the user's screen.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f]")
# Candidates for `visible` to write out: everything but tab, newline and printable ASCII. Of these,
# control characters, invisible formatting (bidi overrides, zero-width, tag characters), surrogates and
# line or paragraph separators are escaped; other non-ASCII text (accents, CJK, emoji) shows as itself.
_NOT_PLAIN = re.compile(r"[^\t\n\x20-\x7e]")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """`text` safe to show on a terminal: escape sequences and control characters removed, and of a line
    redrawn with carriage returns (a progress bar) only its last state kept."""
    lines = (line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return _CONTROL.sub("", "\n".join(lines))


def visible(text: str) -> str:
    """`text` as the user must see it before approving it: every control or invisible character written
    out (`\\r`, `\\x1b`, `\\u202e`) rather than acted on or dropped, so nothing in a command or an edit
    can hide, reorder or repaint what is shown. Tabs and newlines stay as they are: they hide nothing.

    `printable` suits output, where a redrawn progress bar should show its last state; applied to a
    command it would show `pytest -q` for `rm -rf ~ #\\rpytest -q`.
    """
    return _NOT_PLAIN.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char) not in _INVISIBLE_CATEGORIES:
        return char
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def one_line(text: str, max_chars: int) -> str:
    """The first line of `text`, cut to `max_chars`, with a mark that says how much was left out."""
    return _clipped(printable(text), max_chars)


def _clipped(text: str, max_chars: int) -> str:
    lines = text.strip().splitlines() or [""]
    first = lines[0].rstrip()
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    if len(first) + len(more) > max_chars:
        first = first[: max(1, max_chars - len(more) - 1)].rstrip() + "…"
    return first + more


def call_summary(call: ToolCall, max_chars: int = 100) -> str:
    """What the call does, without the tool's name: `pytest -q`, `str_replace src/a.py`, `"TODO" in src`.

    Control characters are written out (see `visible`), never acted on: this line stands for the call.
    """
    return _clipped(visible(_call_text(call)), max_chars)


def _call_text(call: ToolCall) -> str:
    args = call.parsed_arguments()
    if args is None:
        return call.arguments
    if call.name == "bash":
        return str(args.get("command", ""))
    if call.name == "editor":
        text = f"{args.get('command', '?')} {args.get('path', '')}".strip()
        view_range = args.get("view_range")
        if isinstance(view_range, list) and view_range:
            text += ":" + "-".join(str(n) for n in view_range[:2])
        return text
    if call.name in ("search_text", "find_files"):
        text = json.dumps(str(args.get("pattern", "")), ensure_ascii=False)
        if args.get("path"):
            text += f" in {args['path']}"
        if args.get("glob"):
            text += f" ({args['glob']})"
        return text
    if call.name == "submit":
        return str(args.get("summary", ""))
    return ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in args.items())


def diff_hunks(diff: str) -> list[str]:
    """The hunk lines of a unified diff (`@@` headers, context, `-`, `+`), without its file headers.

    Hunk headers give their line counts, so a removed line that itself begins with `--` is never
    mistaken for a `---` file header.
    """
    kept: list[str] = []
    old_left = new_left = 0
    for line in diff.splitlines():
        hunk = _HUNK_HEADER.match(line)
        if old_left <= 0 and new_left <= 0:
            if hunk:
                old_left, new_left = int(hunk["old"] or 1), int(hunk["new"] or 1)
                kept.append(line)
            elif kept and line.startswith("\\"):
                kept.append(line)
            continue
        kept.append(line)
        if line.startswith("-"):
            old_left -= 1
        elif line.startswith("+"):
            new_left -= 1
        elif not line.startswith("\\"):
            old_left -= 1
            new_left -= 1
    return kept


def diff_stat(diff: str) -> tuple[int, int]:
    """Lines added and removed by a unified diff."""
    hunks = [line for line in diff_hunks(diff) if not line.startswith("@@")]
    return sum(line.startswith("+") for line in hunks), sum(line.startswith("-") for line in hunks)


def line_count(text: str) -> int:
    return len(text.splitlines())


def result_summary(call: ToolCall, result: ToolResult, max_chars: int = 100) -> str:
    """The outcome in a few words: `exit 1 · 40 lines`, `+3 −1`, or the first line of an error."""
    if result.is_error or call.name == "submit":
        return one_line(result.output, max_chars)
    diff = result.data.get("diff")
    if isinstance(diff, str) and diff:
        added, removed = diff_stat(diff)
        return f"+{added} −{removed}"
    if call.name == "editor":  # a view: its header line says which lines of how many were read
        return printable(result.output).strip().split("\n", 1)[0][:max_chars]
    parts: list[str] = []
    exit_code = result.data.get("exit_code")
    if isinstance(exit_code, int) and exit_code != 0:
        parts.append(f"exit {exit_code}")
    count = result.data.get("output_lines")  # bash's count leaves out its status line and `[no output]`
    if not isinstance(count, int):
        count = line_count(result.output)
    parts.append("no output" if count == 0 else f"{count} line{'s' if count != 1 else ''}")
    return " · ".join(parts)


def proposed_diff(arguments: Mapping[str, Any]) -> list[str]:
    """The lines an editor call would remove and add, worked out from its arguments alone.

    The file is not read (the UI does no file I/O), so there are no line numbers: only the `-`, `+`
    and context lines of the snippet, which is what a user needs to judge the change. Lines break at
    newlines only and control characters are written out (see `visible`): the user approves this text.
    """
    command = arguments.get("command")
    if command == "str_replace":
        old = _visible_lines(str(arguments.get("old_str", "")))
        new = _visible_lines(str(arguments.get("new_str", "")))
        return list(difflib.unified_diff(old, new, lineterm="", n=max(len(old), len(new))))[3:]
    if command in ("create", "insert"):
        text = str(arguments.get("file_text" if command == "create" else "new_str", ""))
        return ["+" + line for line in _visible_lines(text)]
    return []


def _visible_lines(text: str) -> list[str]:
    lines = visible(text).split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def format_tokens(count: int) -> str:
    """A token count the eye takes in at once: 950, 12.3k, 1.24M."""
    if count < 1000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.2f}M"


def format_cost(cost_usd: float) -> str:
    """Dollars with the precision that matters at that size: $0.0042, $1.37."""
    return f"${cost_usd:.4f}" if cost_usd < 1 else f"${cost_usd:.2f}"
