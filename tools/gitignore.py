"""Which files a search sees: ripgrep's default filtering, re-implemented so the fallback agrees with it.

The rules, as ripgrep 13 and 14 apply them with their default flags (checked against both):

- below the search root, names starting with '.' are hidden unless an ignore file whitelists them;
- ignore files are `.rgignore`, `.ignore` and `.gitignore`, read in every walked directory and in every
  ancestor of the search root. A match in any `.rgignore` beats one in any `.ignore`, which beats one in
  any `.gitignore`; within one kind the deepest directory with a matching line decides, and within one
  file the last matching line (`!` lines whitelist);
- `.gitignore` files count only inside a git repository (a directory with a `.git` entry at or above
  the path), and only up to the nearest such directory, so a nested repository keeps its own rules;
- an ignored or hidden directory is not entered; symbolic links and special files are skipped;
- the search root itself is always searched, even when it is hidden or ignored.

Global git excludes and `.git/info/exclude` are not read (the rg backend passes flags to match): the
result then depends only on the files in the tree, not on the machine.

Globs use ripgrep's syntax (its `globset` crate): `*` and `?` stop at '/', `**` spans directories,
`[...]`/`[!...]` classes, `{a,b}` alternatives, `\\` escapes. They are matched on the path's bytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tools.errors import ToolError

_IGNORE_FILES = (b".rgignore", b".ignore", b".gitignore")
"""In order of precedence; the last one applies only inside a git repository."""

_ANY, _STAR, _PREFIX, _SUFFIX, _MIDDLE = b"[^/]", b"[^/]*", b"(?:/?|.*/)", b"/.*", b"(?:/|/.*/)"
"""Regexes of `?`, `*`, a leading `**/`, a trailing `/**` and an inner `/**/`, as globset writes them."""


class GlobError(ToolError, ValueError):
    """A glob that cannot be parsed; the message names the glob and the problem, for the model to fix."""


@dataclass(frozen=True)
class IgnoreRule:
    """One line of an ignore file: `regex` matches a path relative to the file's directory."""

    regex: re.Pattern[bytes]
    whitelist: bool
    dir_only: bool


def parse_rule(line: str) -> IgnoreRule | None:
    """The rule on one ignore-file line; None for blank and comment lines. Raises GlobError."""
    if line.startswith("#"):
        return None
    if not line.endswith("\\ "):
        line = line.rstrip()
    return _rule(line) if line else None


def _rule(line: str) -> IgnoreRule:
    whitelist = anchored = False
    if line.startswith(("\\!", "\\#")):
        line = line[1:]
    else:
        if line.startswith("!"):
            whitelist, line = True, line[1:]
        if line.startswith("/"):
            anchored, line = True, line[1:]
    dir_only = line.endswith("/")
    if dir_only:
        line = line[:-1].removesuffix("\\")
    glob = line
    # A pattern without a slash matches at any depth; one with a slash is relative to the file's directory.
    if not anchored and "/" not in line and not (glob.startswith("**/") or glob == "**"):
        glob = "**/" + glob
    # `dir/**` matches what is inside dir, not dir itself.
    if glob.endswith("/**"):
        glob += "/*"
    return IgnoreRule(re.compile(glob_regex(glob)), whitelist, dir_only)


def parse_rules(text: str) -> tuple[IgnoreRule, ...]:
    """The rules of an ignore file; a line that is not a valid glob is skipped, as ripgrep does."""
    rules = []
    for line in text.removeprefix("\ufeff").split("\n"):
        try:
            rule = parse_rule(line)
        except GlobError:
            continue
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def verdict(rules: tuple[IgnoreRule, ...], relative: bytes, is_dir: bool) -> bool | None:
    """True when the last rule matching `relative` ignores it, False when it whitelists it, else None."""
    for rule in reversed(rules):
        if (is_dir or not rule.dir_only) and rule.regex.fullmatch(relative):
            return not rule.whitelist
    return None


class PathGlob:
    """A file filter written as one gitignore-style glob: `*.py` matches names at any depth, a glob with
    a slash matches the whole path (`src/**/*.rs`), a trailing slash would match directories only."""

    def __init__(self, glob: str) -> None:
        if not glob.strip():
            raise GlobError("the glob is empty; give one such as '*.py'")
        if "\n" in glob or "\r" in glob:
            raise GlobError(f"glob {glob!r} spans several lines; give one glob")
        # Read as the whitelist line the rg backend writes, so both read a glob the same way.
        line = "!" + glob
        self.glob = glob
        self._rule = _rule(line if line.endswith("\\ ") else line.rstrip())

    def matches(self, path: bytes) -> bool:
        """Whether a file at `path` (as bytes, relative to the glob's root) passes the filter."""
        return not self._rule.dir_only and self._rule.regex.fullmatch(path) is not None


def glob_regex(glob: str) -> bytes:
    """The regex for `glob` with globset's semantics (`*` never crosses '/'). Raises GlobError."""
    tokens = _GlobParser(glob).parse()
    if tokens == [_PREFIX]:  # a glob that is only `**` matches everything
        return b".*"
    return b"".join(tokens)


class _GlobParser:
    """Turns a glob into regex pieces; mirrors globset's parser so edge cases agree with ripgrep."""

    def __init__(self, glob: str) -> None:
        self.glob = glob
        self.position = 0
        self.previous: str | None = None
        self.current: str | None = None
        self.stack: list[list[bytes]] = [[]]  # the outer sequence, then one list per alternative

    def parse(self) -> list[bytes]:
        while (char := self._bump()) is not None:
            if char == "?":
                self.stack[-1].append(_ANY)
            elif char == "*":
                self._star()
            elif char == "[":
                self._class()
            elif char == "{":
                if len(self.stack) > 1:
                    raise self._error("nested alternate groups are not allowed")
                self.stack.append([])
            elif char == "}":
                if len(self.stack) == 1:
                    raise self._error("unopened alternate group; escape '}' as '\\}'")
                branches = [b"".join(self.stack.pop()) for _ in range(len(self.stack) - 1)]
                branches = [branch for branch in reversed(branches) if branch]
                if branches:
                    self.stack[-1].append(b"(?:" + b"|".join(branches) + b")")
            elif char == "," and len(self.stack) > 1:
                self.stack.append([])
            elif char == "\\":
                escaped = self._bump()
                if escaped is None:
                    raise self._error("dangling '\\' at the end")
                self.stack[-1].append(_literal(escaped))
            else:
                self.stack[-1].append(_literal(char))
        if len(self.stack) > 1:
            raise self._error("unclosed alternate group; close '{' with '}'")
        return self.stack[0]

    def _bump(self) -> str | None:
        self.previous = self.current
        self.current = self.glob[self.position] if self.position < len(self.glob) else None
        self.position += 1
        return self.current

    def _peek(self) -> str | None:
        return self.glob[self.position] if self.position < len(self.glob) else None

    def _star(self) -> None:
        tokens, previous = self.stack[-1], self.previous
        if self._peek() != "*":
            tokens.append(_STAR)
            return
        self._bump()
        if not tokens:
            if self._peek() not in (None, "/"):
                tokens.extend((_STAR, _STAR))
            else:
                self._bump()
                tokens.append(_PREFIX)
            return
        following = self._peek()
        if previous != "/" or (following is not None and following != "/"
                                and not (following in ",}" and len(self.stack) > 1)):
            tokens.extend((_STAR, _STAR))  # `**` that is not a whole path component acts as `*`
            return
        is_suffix = following != "/"
        if following in (None, "/"):
            self._bump()
        last = tokens.pop()  # the '/' before `**`, which the recursive token includes
        tokens.append(last if last in (_PREFIX, _SUFFIX) else _SUFFIX if is_suffix else _MIDDLE)

    def _class(self) -> None:
        negated = self._peek() in ("!", "^")
        if negated:
            self._bump()
        ranges: list[list[str]] = []
        first, in_range = True, False
        while True:
            char = self._bump()
            if char is None:
                raise self._error("unclosed character class; close '[' with ']'")
            if char == "]" and not first:
                break
            if char == "-" and not first and not in_range:
                in_range = True
            elif in_range:
                if char < ranges[-1][0]:
                    raise self._error(f"invalid range {ranges[-1][0]}-{char}")
                ranges[-1][1] = char
                in_range = False
            else:
                ranges.append([char, char])
            first = False
        if in_range:
            ranges.append(["-", "-"])
        body = b"".join(_literal(low) if low == high else _literal(low) + b"-" + _literal(high)
                        for low, high in ranges)
        self.stack[-1].append(b"[" + (b"^" if negated else b"") + body + b"]")

    def _error(self, problem: str) -> GlobError:
        return GlobError(f"invalid glob {self.glob!r}: {problem}")


def _literal(char: str) -> bytes:
    return re.escape(char.encode("utf-8", "surrogateescape"))


@dataclass(frozen=True)
class _Dir:
    """A directory on the chain from the filesystem root to the entry being judged."""

    path: bytes
    rules: tuple[tuple[IgnoreRule, ...], ...]  # one tuple per name in _IGNORE_FILES
    has_git: bool
    in_git: bool  # this directory or an ancestor has a `.git` entry
    parent: _Dir | None


def _load_dir(path: bytes, parent: _Dir | None) -> _Dir:
    rules = tuple(_read_rules(os.path.join(path, name)) for name in _IGNORE_FILES)
    has_git = os.path.exists(os.path.join(path, b".git"))
    return _Dir(path, rules, has_git, has_git or (parent is not None and parent.in_git), parent)


def _read_rules(path: bytes) -> tuple[IgnoreRule, ...]:
    try:
        with open(path, "rb") as f:
            return parse_rules(f.read().decode("utf-8", "replace"))
    except OSError:
        return ()


def _ancestors(path: bytes) -> _Dir | None:
    """The chain of `path`'s ancestors, deepest last in construction and first in lookup."""
    chain: list[bytes] = []
    while (parent := os.path.dirname(path)) != path:
        chain.append(parent)
        path = parent
    node = None
    for directory in reversed(chain):
        node = _load_dir(directory, node)
    return node


def _ignored(node: _Dir, path: bytes, is_dir: bool) -> bool | None:
    """The ignore files' verdict on `path`, an entry of `node`'s directory."""
    for kind in range(len(_IGNORE_FILES)):
        is_git = _IGNORE_FILES[kind] == b".gitignore"
        if is_git and not node.in_git:
            return None
        current: _Dir | None = node
        while current is not None:
            if current.rules[kind]:
                relative = path[len(current.path):].lstrip(b"/")
                found = verdict(current.rules[kind], relative, is_dir)
                if found is not None:
                    return found
            if is_git and current.has_git:
                break
            current = current.parent
    return None


def visible_files(start: Path) -> Iterator[Path]:
    """The files a search of `start` sees, in ripgrep's `--sort path` order (by name bytes, depth first).

    `start` is yielded as is when it is not a directory.
    """
    if not start.is_dir():
        yield start
        return
    root = os.fsencode(start)
    stack = [(_load_dir(root, _ancestors(root)), _sorted_entries(root))]
    while stack:
        node, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if entry.is_symlink():
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if not is_dir and not entry.is_file(follow_symlinks=False):
            continue
        ignored = _ignored(node, entry.path, is_dir)
        if ignored or (ignored is None and entry.name.startswith(b".")):
            continue
        if is_dir:
            stack.append((_load_dir(entry.path, node), _sorted_entries(entry.path)))
        else:
            yield Path(os.fsdecode(entry.path))


def _sorted_entries(path: bytes) -> Iterator[os.DirEntry[bytes]]:
    try:
        with os.scandir(path) as entries:
            return iter(sorted(entries, key=lambda entry: entry.name))
    except OSError:
        return iter(())
