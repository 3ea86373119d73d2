"""The destructive-command guard: which shell commands would lose work that cannot be got back.

Runs on every bash call in every approval mode (see `approvals`): in `ask` and `auto-edit` such a
command always needs an explicit yes with a warning naming what would be lost; in `yolo` and headless
runs it is refused unless destructive commands were allowed. It judges the commands `shell_syntax`
finds, so it sees through `&&`, pipes, subshells, `bash -c`, `sudo`, `xargs`, `find -exec`, quoting
and the like. When it cannot know a path (a variable, `cd $X` earlier, `xargs` input) it assumes the
worst. Harmless look-alikes (`rm -rf ./build`, `git reset --soft`, `echo "rm -rf /"`) pass.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kcode.agent.shell_syntax import (
    HARMLESS_TARGETS,
    WRITE_OPERATORS,
    ParsedCommand,
    SimpleCommand,
    Word,
    parse_command,
)
from kcode.agent.shell_wrappers import FIND_TESTS, SHELLS, unwrap

_DOWNLOADERS = frozenset({"curl", "wget", "fetch", "aria2c", "http", "https", "xh", "nc", "ncat", "socat"})
_CODE_RUNNERS = SHELLS | {"python", "python3", "perl", "ruby", "node", "php", "source", ".", "eval"}
_FORMATTERS = re.compile(r"mkfs(\..+)?|mke2fs|mkswap|mkdosfs|mkntfs")
_HARMLESS_DEVICES = HARMLESS_TARGETS | {"/dev/zero", "/dev/random", "/dev/urandom", "/dev/full"}
_UNREADABLE = frozenset({"unparsed", "control_character", "line_continuation", "too_deep"})
_MENTIONS_DANGER = re.compile(r"\b(rm|dd|mkfs\S*|shred|wipefs|chmod|chown|chgrp|truncate|git|curl|wget)\b")
_HOME_VARIABLE = re.compile(r"(\$HOME|\$\{HOME\})(/.*)?")


@dataclass(frozen=True)
class Danger:
    """One thing a command would destroy; `what` reads after "This command …" ("deletes your home …")."""

    what: str


def find_dangers(command: str, *, workspace: Path, home: Path,
                 cwd: Path | Literal["unknown"] | None = None) -> list[Danger]:
    """What `command` would destroy, in the order found; empty when it looks harmless.

    `cwd` is where the shell stands: the workspace when not given, and with "unknown" a relative path
    is assumed to point anywhere.
    """
    parsed = parse_command(command)
    start = None if cwd == "unknown" else _real(cwd if cwd is not None else workspace)
    guard = _Guard(_real(workspace), _real(home), start)
    found: list[Danger] = []
    for danger in guard.dangers(parsed, command):
        if danger not in found:
            found.append(danger)
    return found


@dataclass(frozen=True)
class _Guard:
    workspace: Path
    home: Path
    cwd: Path | None

    def dangers(self, parsed: ParsedCommand, text: str) -> Iterator[Danger]:
        mention = _MENTIONS_DANGER.search(text.replace("\\\n", ""))
        if parsed.hazards & _UNREADABLE and mention is not None:
            yield Danger(f"cannot be read reliably (odd syntax or control characters) and may run {mention.group(1)}")
        for function in parsed.functions:
            if function.name in function.calls:
                yield Danger(f"starts a fork bomb (function {function.name} calls itself)")
        for command in parsed.commands:
            if command.words and not command.words[0].literal and (_forceful(command.argv[1:]) or mention):
                yield Danger(f"runs a program only known when it runs ({command.words[0].text})")
            yield from self._command(command)

    def _command(self, command: SimpleCommand) -> Iterator[Danger]:
        cwd = self._cwd(command)
        for redirect in command.redirects:
            target = redirect.target
            if redirect.operator in WRITE_OPERATORS and target is not None and target.text not in HARMLESS_TARGETS \
                    and not (redirect.operator in (">&", "<&") and (target.text.isdigit() or target.text == "-")):
                yield from self._write(target, cwd, "writes to")
        program = command.program
        if program in _CODE_RUNNERS and command.inputs & _DOWNLOADERS:
            yield Danger(f"runs code downloaded from the network ({' | '.join(sorted(command.inputs & _DOWNLOADERS))}"
                         f" into {program})")
        elif program in SHELLS | {"eval"}:
            yield from self._shell(command)
        check = _CHECKS.get(program)
        if check is not None:
            yield from check(self, command, cwd)
        elif _FORMATTERS.fullmatch(program):
            device = next((a for a in reversed(command.argv[1:]) if not a.startswith("-")), "a device")
            yield Danger(f"formats {device}, erasing everything on it ({program})")

    # -- rules per program ---------------------------------------------------------------------------------
    def _shell(self, command: SimpleCommand) -> Iterator[Danger]:
        """A shell running text that only exists at run time: piped in, or a `-c` script built by expansions."""
        wrapped = unwrap(command.argv)
        if command.program == "eval" or wrapped:
            words = command.words[1:] if command.program == "eval" else [command.words[w.script] for w in wrapped
                                                                          if w.script is not None]
            if any(not word.literal for word in words):
                yield Danger(f"runs shell code only known when it runs ({command.program} of an expansion)")
        elif command.inputs and len(command.argv) == 1 + sum(a.startswith("-") for a in command.argv[1:]):
            yield Danger(f"runs shell commands piped into it, only known when it runs "
                         f"({' | '.join(sorted(command.inputs))} | {command.program})")

    def _rm(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        options, targets = _split_options(command.words[1:])
        if not any(o == "--recursive" or (not o.startswith("--") and set(o[1:]) & {"r", "R"}) for o in options):
            for target in targets:  # single files: those outside the workspace (and the temp dir) only
                yield from self._write(target, cwd, "deletes")
            return
        if command.more_arguments:
            yield Danger(f"deletes, recursively, paths only known when it runs (given by {command.wrappers[-1]})")
        for target in targets:
            yield from self._delete(target, cwd, "deletes")

    def _find(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        argv = command.argv
        if "-delete" not in argv:
            return
        index = 1
        starts: list[Word] = []
        while index < len(argv) and not argv[index].startswith("-") and argv[index] not in ("(", "!"):
            starts.append(command.words[index])
            index += 1
        narrowed = any(a in FIND_TESTS for a in argv)
        for start in starts or [Word(".")]:
            target = start if not narrowed else Word(start.text.rstrip("/") + "/…", start.expansions)
            yield from self._delete(target, cwd, "deletes")

    def _git(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        argv = command.argv
        index = 1
        while index < len(argv) and argv[index].startswith("-"):
            index += 2 if argv[index] in ("-C", "-c", "--git-dir", "--work-tree", "--namespace") else 1
        if index >= len(argv):
            return
        sub, rest = argv[index], argv[index + 1:]
        flags = _short_flags(rest)
        if sub == "reset" and ("--hard" in rest or "--merge" in rest):
            yield Danger("discards uncommitted changes in the workspace (git reset --hard)")
        elif sub == "clean" and ("f" in flags or "--force" in rest) and not ("n" in flags or "--dry-run" in rest):
            ignored = ", ignored ones included" if "x" in flags or "X" in flags else ""
            yield Danger(f"deletes untracked files{ignored} (git clean -f)")
        elif sub == "checkout" and (_pathspec_after_dashdash(rest) or "f" in flags or "--force" in rest
                                    or any(a in (".", "./", ":/", "*", ":(top)") for a in rest)):
            yield Danger("discards uncommitted changes to files (git checkout of paths)")
        elif sub == "restore" and _restores_worktree(rest):
            yield Danger("discards uncommitted changes to files (git restore)")
        elif sub == "stash" and rest[:1] in (("drop",), ("clear",)):
            yield Danger(f"deletes stashed changes (git stash {rest[0]})")
        elif sub == "push" and (flags & {"f", "d"} or any(a.startswith(("--force", "--mirror", "--delete", "+", ":"))
                                                       for a in rest)):
            yield Danger("rewrites or deletes history on the remote (git push --force/--delete)")
        elif sub == "branch" and ("D" in flags or (("d" in flags or "--delete" in rest)
                                                   and ("f" in flags or "--force" in rest))):
            yield Danger("deletes a branch even if its commits are merged nowhere (git branch -D)")

    def _dd(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        for word in command.words[1:]:
            if word.text.startswith("of="):
                yield from self._write(Word(word.text[3:], word.expansions), cwd, "overwrites")

    def _wipe(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        _, targets = _split_options(command.words[1:], values={"-n", "--iterations", "-s", "--size", "-t", "--types",
                                                               "-O", "--offset", "--random-source"})
        for target in targets:
            yield from self._write(target, cwd, _WIPES[command.program])

    def _chmod(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        options, operands = _split_options(command.words[1:])
        if not any(o == "--recursive" or (not o.startswith("--") and "R" in o) for o in options):
            return
        has_reference = any(o.startswith("--reference") for o in options)
        for target in operands[0 if has_reference else 1:]:
            place = self._place(target, cwd)
            if place is not None and not place.startswith("the workspace"):
                yield Danger(f"changes the owner or permissions of {place}, recursively ({command.program} -R)")

    def _truncate(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        _, targets = _split_options(command.words[1:], values={"-s", "--size", "-r", "--reference"})
        for target in targets:
            yield from self._write(target, cwd, "truncates")

    def _tee(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        for target in _split_options(command.words[1:])[1]:
            yield from self._write(target, cwd, "writes to")

    def _copy(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        """cp, mv, ln and install overwrite their destination: the `-t` directory or the last operand."""
        options, operands = _split_options(command.words[1:], values={"-t", "--target-directory", "-S", "--suffix",
                                                                      "-m", "--mode", "-o", "--owner", "-g", "--group"})
        words = list(command.words)
        target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w.text in ("-t", "--target-directory")), None)
        target = target or next((Word(o.split("=", 1)[1]) for o in options if o.startswith("--target-directory=")),
                                None)
        if target is None and len(operands) >= 2:
            target = operands[-1]
        if target is not None:
            yield from self._write(target, cwd, "overwrites or writes into")

    def _rsync(self, command: SimpleCommand, cwd: Path | None) -> Iterator[Danger]:
        options, operands = _split_options(command.words[1:])
        if any(o.startswith(("--delete", "--remove-source-files")) for o in options) and len(operands) >= 2 \
                and ":" not in operands[-1].text:
            yield from self._delete(operands[-1], cwd, "deletes files in")

    # -- places ---------------------------------------------------------------------------------------------
    def _delete(self, target: Word, cwd: Path | None, verb: str) -> Iterator[Danger]:
        place = self._place(target, cwd)
        if place is not None:
            yield Danger(f"{verb} {place}")

    def _write(self, target: Word, cwd: Path | None, verb: str) -> Iterator[Danger]:
        """Writing or deleting one file: only outside the workspace (and the temp dir), or on a device.

        A plain relative name in an unknown directory passes: one file is at stake, not a tree.
        """
        if cwd is None and target.literal and not target.text.startswith("/"):
            return
        path = _resolve(target, cwd, self.home)
        if path is not None and path.as_posix().startswith("/dev/"):
            if path.as_posix() not in _HARMLESS_DEVICES and not path.as_posix().startswith(("/dev/tcp/", "/dev/udp/")):
                yield Danger(f"{verb} the device {path}")
            return  # /dev/null and the like; a network socket (bash's /dev/tcp) loses nothing
        if path is not None and _within(path, _TEMP) and not _within(path, self.home) \
                and not _within(self.workspace, path):
            return  # the system's temp dir: scratch space, not work
        place = self._place(target, cwd)
        if place is not None and not (path is not None and _within(path, self.workspace)
                                      and not _within(path, self.workspace / ".git")):
            yield Danger(f"{verb} {place}")

    def _place(self, target: Word, cwd: Path | None) -> str | None:
        """What is lost if `target` goes, or None when it lies safely inside the workspace."""
        path = _resolve(target, cwd, self.home)
        if path is None and cwd is None and target.literal and not target.text.startswith("/"):
            return f"{target.text} in a directory only known when it runs"
        if path is None:
            return f"a path only known when it runs ({target.text})"
        real = _real(path)
        for candidate in (path, real):
            if candidate == Path("/"):
                return "the whole filesystem (/)"
            if _within(self.home, candidate):
                return f"your home directory ~ ({self.home})"
            if candidate == self.workspace:
                return f"the workspace ({self.workspace})"
            if _within(self.workspace, candidate):
                return f"{candidate}, which holds the workspace"
            if _within(candidate, self.workspace / ".git"):
                return f"the repository's history ({self.workspace / '.git'})"
        if not _within(path, self.workspace) or not _within(real, self.workspace):
            return f"{path}, outside the workspace"
        return None

    def _cwd(self, command: SimpleCommand) -> Path | None:
        cwd: Path | None = self.cwd
        for change in command.directory_changes:
            cwd = _resolve(change, cwd, self.home) if change is not None else None
        return cwd


_CHECKS = {"rm": _Guard._rm, "find": _Guard._find, "git": _Guard._git, "dd": _Guard._dd, "shred": _Guard._wipe,
           "wipefs": _Guard._wipe, "blkdiscard": _Guard._wipe, "chmod": _Guard._chmod, "chown": _Guard._chmod,
           "chgrp": _Guard._chmod, "truncate": _Guard._truncate, "tee": _Guard._tee, "cp": _Guard._copy,
           "mv": _Guard._copy, "ln": _Guard._copy, "install": _Guard._copy, "rsync": _Guard._rsync}
_WIPES = {"shred": "shreds", "wipefs": "wipes the filesystem signatures of", "blkdiscard": "discards all data on"}
_TEMP = Path(os.path.realpath(tempfile.gettempdir()))


def _resolve(word: Word, cwd: Path | None, home: Path) -> Path | None:
    """Where `word` points as a path, None when that depends on something only known at run time.

    A glob stands for what it can match: `dir/*` for everything in `dir` (so for `dir` itself), any other
    pattern for some entry of the directory before it.
    """
    text, expansions = word.text, set(word.expansions)
    if "tilde" in expansions:
        if text != "~" and not text.startswith("~/"):
            return None  # another user's home
        text, expansions = str(home) + text[1:], expansions - {"tilde"}
    if "parameter" in expansions:
        match = _HOME_VARIABLE.fullmatch(text)
        if match is None or "$" in (match.group(2) or ""):
            return None
        text, expansions = str(home) + (match.group(2) or ""), expansions - {"parameter"}
    if expansions - {"glob"}:
        return None
    if "glob" in expansions:
        parts = Path(text).parts
        first = next(i for i, part in enumerate(parts) if set(part) & set("*?["))
        everything = re.fullmatch(r"\.?\*+", parts[first]) is not None
        text = str(Path(*parts[:first]) if first else Path(".")) + ("" if everything else "/…")
    if not os.path.isabs(text):
        if cwd is None:
            return None
        text = str(cwd / text)
    return Path(os.path.normpath(text))


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _split_options(words: tuple[Word, ...], values: frozenset[str] | set[str] = frozenset()
                   ) -> tuple[list[str], list[Word]]:
    """(options, operands) of a GNU-style command line: `--` ends the options; `values` take the next word."""
    options: list[str] = []
    operands: list[Word] = []
    index = 0
    while index < len(words):
        text = words[index].text
        if text == "--":
            operands.extend(words[index + 1:])
            break
        if text.startswith("-") and text != "-" and words[index].literal:
            options.append(text)
            index += 2 if text in values else 1
            continue
        operands.append(words[index])
        index += 1
    return options, operands


def _short_flags(args: list[str] | tuple[str, ...]) -> set[str]:
    return {c for a in args if a.startswith("-") and not a.startswith("--") for c in a[1:]}


def _forceful(args: tuple[str, ...]) -> bool:
    return any(a in ("--recursive", "--force", "--hard", "--delete") or re.fullmatch(r"-[a-zA-Z]*[rRf][a-zA-Z]*", a)
               for a in args)


def _pathspec_after_dashdash(args: list[str] | tuple[str, ...]) -> bool:
    return "--" in args and list(args).index("--") < len(args) - 1


def _restores_worktree(args: list[str] | tuple[str, ...]) -> bool:
    """`git restore` touches the working tree unless only `--staged`/`-S` is given."""
    staged = "--staged" in args or "S" in _short_flags(args)
    worktree = "--worktree" in args or "W" in _short_flags(args)
    paths = [a for a in args if not a.startswith("-")]
    return bool(paths) and (worktree or not staged)
