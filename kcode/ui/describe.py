"""Short plain-text descriptions of tool calls and their results, shared by every screen kcode draws.

The chat renderer, the progress printer and the approval prompt all name a call the same way
(`bash` shows its command, `editor` its command and path, a search its pattern), so a user who reads
one of them can read the others. Nothing here styles text: each caller paints it as it likes.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from kcode.messages import ToolCall
from tools.base import ToolResult

_HUNK_HEADER = re.compile(r"^@@ -\d+(?:,(?P<old>\d+))? \+\d+(?:,(?P<new>\d+))? @@")
# Terminal escape sequences and control characters other than tab and newline: a command's coloured
# output must not repaint the user's screen.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f]")


def parse_arguments(call: ToolCall) -> dict[str, Any] | None:
    """The call's arguments as a dict, or None when the model sent something that is not a JSON object."""
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def printable(text: str) -> str:
    """`text` safe to show on a terminal: escape sequences and control characters removed, and of a line
    redrawn with carriage returns (a progress bar) only its last state kept."""
    lines = (line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return _CONTROL.sub("", "\n".join(lines))


def one_line(text: str, max_chars: int) -> str:
    """The first line of `text`, cut to `max_chars`, with a mark that says how much was left out."""
    lines = printable(text).strip().splitlines() or [""]
    first = lines[0].rstrip()
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    if len(first) + len(more) > max_chars:
        first = first[: max(1, max_chars - len(more) - 1)].rstrip() + "…"
    return first + more


def call_summary(call: ToolCall, max_chars: int = 100) -> str:
    """What the call does, without the tool's name: `pytest -q`, `str_replace src/a.py`, `"TODO" in src`."""
    args = parse_arguments(call)
    if args is None:
        return one_line(call.arguments, max_chars)
    if call.name == "bash":
        return one_line(str(args.get("command", "")), max_chars)
    if call.name == "editor":
        text = f"{args.get('command', '?')} {args.get('path', '')}".strip()
        view_range = args.get("view_range")
        if isinstance(view_range, list) and view_range:
            text += ":" + "-".join(str(n) for n in view_range[:2])
        return one_line(text, max_chars)
    if call.name in ("search_text", "find_files"):
        text = json.dumps(str(args.get("pattern", "")), ensure_ascii=False)
        if args.get("path"):
            text += f" in {args['path']}"
        if args.get("glob"):
            text += f" ({args['glob']})"
        return one_line(text, max_chars)
    if call.name == "submit":
        return one_line(str(args.get("summary", "")), max_chars)
    return one_line(", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in args.items()),
                    max_chars)


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
    count = line_count(result.output)
    parts.append("no output" if count == 0 else f"{count} line{'s' if count != 1 else ''}")
    return " · ".join(parts)


def proposed_diff(arguments: Mapping[str, Any]) -> list[str]:
    """The lines an editor call would remove and add, worked out from its arguments alone.

    The file is not read (the UI does no file I/O), so there are no line numbers: only the `-`, `+`
    and context lines of the snippet, which is what a user needs to judge the change.
    """
    command = arguments.get("command")
    if command == "str_replace":
        old = str(arguments.get("old_str", "")).splitlines()
        new = str(arguments.get("new_str", "")).splitlines()
        return list(difflib.unified_diff(old, new, lineterm="", n=max(len(old), len(new))))[3:]
    if command in ("create", "insert"):
        text = str(arguments.get("file_text" if command == "create" else "new_str", ""))
        return ["+" + line for line in text.splitlines()]
    return []


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
