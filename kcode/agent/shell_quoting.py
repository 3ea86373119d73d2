"""Quote removal as bash does it, for the three ways a word can be quoted (none, double, `$'…'`).

tree-sitter-bash finds where words and quoted strings begin and end but leaves their text as written;
these turn that text into what the program receives. Single quotes need nothing: their text is literal.
"""

from __future__ import annotations

import re

_ANSI_C = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", "'": "'", '"': '"', "?": "?"}


def unquoted(raw: str) -> tuple[str, bool]:
    """An unquoted word's text with backslashes removed, and whether it has an unescaped glob character."""
    text: list[str] = []
    glob = False
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "\\" and index + 1 < len(raw):
            if raw[index + 1] != "\n":
                text.append(raw[index + 1])
            index += 2
            continue
        glob = glob or char in "*?["
        text.append(char)
        index += 1
    return "".join(text), glob


def double_quoted(raw: str) -> str:
    """Inside double quotes a backslash escapes only `$`, a backquote, `"`, itself and a newline."""
    return re.sub(r'\\([$`"\\\n])', lambda m: "" if m.group(1) == "\n" else m.group(1), raw)


def ansi_c(body: str) -> str:
    """The text of `$'…'`, with its C-style escapes decoded as bash decodes them."""
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\" or index + 1 == len(body):
            out.append(char)
            index += 1
            continue
        code = body[index + 1]
        index += 2
        if code in _ANSI_C:
            out.append(_ANSI_C[code])
        elif code in "01234567":
            digits = re.match(r"[0-7]{0,2}", body[index:])
            assert digits is not None
            out.append(chr(int(code + digits.group(0), 8) & 0xFF))
            index += len(digits.group(0))
        elif code in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = re.match(rf"[0-9A-Fa-f]{{1,{width}}}", body[index:])
            if digits is None:
                out.append("\\" + code)
                continue
            out.append(chr(min(int(digits.group(0), 16), 0x10FFFF)))
            index += len(digits.group(0))
        elif code == "c" and index < len(body):
            out.append(chr(ord(body[index]) & 0x1F))
            index += 1
        else:
            out.append("\\" + code)
    return "".join(out)

