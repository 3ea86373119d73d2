"""The programs an "always" approval may widen to: those that only read, or only write their usual outputs.

An allowlist, because a blocklist of dangerous programs was widened by every program it forgot. Each
entry names the options that make its program write elsewhere or run other code, and they are refused:
`sort -o`, `rg --pre`, `find -exec`, `pytest --basetemp` (pytest empties that directory). Long options
are refused with every abbreviation getopt and argparse accept (`sort --outp=x` is `--output=x`); short
ones inside any cluster (`sort -ro x`). An approval of a command outside this list, or with a refused
option, is remembered exactly instead (see `approvals`).

git is deliberately absent: even `git status` and `git diff` run programs named in the repository's
config (`core.fsmonitor`, diff drivers, textconv filters), which the agent can write, so no git command
is widened. pytest and mypy are present although they run project code (conftest.py, mypy plugins):
running the project's tests is what approving them means, and the sandbox bounds what that code does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kcode.agent.shell_syntax import SimpleCommand


@dataclass(frozen=True)
class _Entry:
    """What one allowed program may not be given."""

    refused_long: frozenset[str] = frozenset()
    refused_short: str = ""
    refused_words: frozenset[str] = frozenset()
    subcommands: frozenset[str] | None = None
    """When set, the program is allowed only with one of these as its first argument."""
    max_operands: int | None = None
    """Programs whose next operand is an output file (`uniq IN OUT`, `xxd IN OUT`)."""


_PLAIN = _Entry()
_PYTEST = _Entry(
    refused_long=frozenset({
        "basetemp",  # pytest deletes the directory it is given
        "junitxml", "junit-xml", "resultlog", "result-log", "report-log", "debug", "cov-report", "html",
        "override-ini", "rootdir",  # move the cache (written on every run) anywhere
        "pastebin",  # uploads the session's output
    }),
    refused_short="o",  # -o: an ini override, e.g. cache_dir=/anywhere
)
_MYPY = _Entry(refused_long=frozenset({
    "cache-dir", "install-types", "junit-xml", "html-report", "xml-report", "txt-report", "linecount-report",
    "linecoverage-report", "memory-xml-report", "cobertura-xml-report", "lineprecision-report", "any-exprs-report",
    "xslt-html-report", "xslt-txt-report",
}))
_RUFF = _Entry(refused_long=frozenset({"fix", "unsafe-fixes", "fix-only", "add-noqa", "output-file", "cache-dir"}),
               refused_short="o", subcommands=frozenset({"check"}))
_FLAKE8 = _Entry(refused_long=frozenset({"output-file", "tee"}))

_PROGRAMS: dict[str, _Entry] = {
    **dict.fromkeys((
        "ls", "cat", "head", "tail", "wc", "nl", "cut", "tr", "paste", "fold", "column", "comm", "cmp", "diff", "rev",
        "seq", "od", "hexdump", "strings", "stat", "du", "df", "basename", "dirname", "realpath", "readlink", "pwd",
        "echo", "true", "false", "which", "whoami", "id", "uname", "nproc", "ps", "sleep", "sha256sum", "sha1sum",
        "md5sum", "grep", "egrep", "fgrep", "jq", "cd",
    ), _PLAIN),
    "printf": _Entry(refused_short="v"),  # -v assigns a shell variable, and its name may hold a subscript
    "date": _Entry(refused_long=frozenset({"set"}), refused_short="s"),  # sets the clock
    "file": _Entry(refused_short="C"),  # -C compiles a magic file into the current directory
    "tree": _Entry(refused_short="o"),  # -o writes the listing to a file
    "sort": _Entry(refused_long=frozenset({"output", "compress-program"}), refused_short="o"),
    "uniq": _Entry(max_operands=1),
    "xxd": _Entry(max_operands=1),
    "rg": _Entry(refused_long=frozenset({"pre", "pre-glob", "hostname-bin"})),  # each runs a program it names
    "find": _Entry(refused_words=frozenset({"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0",
                                            "-fprintf", "-fls"})),
    "pytest": _PYTEST, "py.test": _PYTEST, "mypy": _MYPY, "ruff": _RUFF, "flake8": _FLAKE8, "pyflakes": _PLAIN,
}
_PYTHON_MODULES: dict[str, _Entry] = {
    "pytest": _PYTEST, "mypy": _MYPY, "ruff": _RUFF, "flake8": _FLAKE8, "pyflakes": _PLAIN, "unittest": _PLAIN,
}
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")


def widening_key(command: SimpleCommand) -> tuple[str, ...] | None:
    """What "always" for `command` approves: its assignments, program and subcommand (`("ruff", "check")`).

    A later command is covered when its own key is an approved one. None when this command must be
    remembered exactly: a program off the list, a refused option, or one run by a wrapper.
    """
    if command.wrappers or not command.words or not command.words[0].literal:
        return None
    argv = command.argv
    program = command.program
    start = 1
    if _PYTHON.fullmatch(program) and len(argv) > 2 and argv[1] == "-m":
        entry, start = _PYTHON_MODULES.get(argv[2]), 3
    else:
        entry = _PROGRAMS.get(program)
    if entry is None:
        return None
    if entry.subcommands is not None:
        if len(argv) <= start or argv[start] not in entry.subcommands:
            return None
        start += 1
    if not _allowed(entry, argv[start:]):
        return None
    return (*(a.text for a in command.assignments), *argv[:start])


def _allowed(entry: _Entry, args: tuple[str, ...]) -> bool:
    operands = 0
    for index, arg in enumerate(args):
        if arg == "--":
            operands += len(args) - index - 1
            break
        if arg in entry.refused_words:
            return False
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if name and any(refused.startswith(name) for refused in entry.refused_long):
                return False
        elif arg.startswith("-") and len(arg) > 1:
            if set(arg[1:]) & set(entry.refused_short):
                return False
        else:
            operands += 1
    return entry.max_operands is None or operands <= entry.max_operands
