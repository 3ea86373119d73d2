"""Finding `str_replace`'s old text: every occurrence, and a useful hint when there is none."""

from __future__ import annotations

import itertools
import re

from tools.files import split_lines

MAX_REPORTED_MATCHES = 20
"""Line numbers named in one message; past this it says "and more"."""
_LINE_NUMBER_PREFIX = re.compile(r"^\s*\d+\t", re.MULTILINE)


def find_all(text: str, needle: str) -> list[int]:
    """Start offsets of `needle`, overlapping ones included (both make the edit ambiguous), up to a cap."""
    starts: list[int] = []
    at = text.find(needle)
    while at != -1 and len(starts) <= MAX_REPORTED_MATCHES:
        starts.append(at)
        at = text.find(needle, at + 1)
    return starts


def not_found_hint(text: str, old_str: str) -> str:
    """Where the text the model meant probably is, so its next str_replace can succeed."""
    if _LINE_NUMBER_PREFIX.search(old_str):
        return ("old_str seems to include the line numbers that view shows (like '    12\\t'); leave them "
                "out and send only the file's text.")
    tokens = old_str.split()
    if tokens:
        pattern = re.compile(r"\s+".join(re.escape(token) for token in tokens))
        matches = itertools.islice(pattern.finditer(text), MAX_REPORTED_MATCHES + 1)
        near = [text.count("\n", 0, match.start()) + 1 for match in matches]
        if near:
            return (f"It matches if whitespace is ignored at line{'s' * (len(near) > 1)} {line_list(near)}: view "
                    "there and copy the text exactly (indentation, tabs or spaces, trailing spaces).")
        first = next(line.strip() for line in old_str.split("\n") if line.strip())
        found = [number for number, line in enumerate(split_lines(text), 1) if first in line]
        if found:
            return (f"Its first line occurs at line{'s' * (len(found) > 1)} {line_list(found)}; view from "
                    "there and copy the lines after it exactly.")
    return "View the file and copy the text to replace exactly, indentation included."


def line_list(numbers: list[int]) -> str:
    """ "3, 7 and 9", or the first few and "and more" when there are too many to name."""
    shown = [str(n) for n in numbers[:MAX_REPORTED_MATCHES]]
    if len(numbers) > MAX_REPORTED_MATCHES:
        return ", ".join(shown) + " and more"
    return ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]
