"""Which tool calls run at once and which wait for the user, and what the model is told when one is refused.

Modes: `ask` (every command and every edit needs a yes), `auto-edit` (edits run, commands ask) and
`yolo` (everything runs). Reading never asks. The question goes to an `Approver` the UI implements; a
headless run gets one that never prompts (`RefuseCommands`), so `kcode fix` without `--yes` refuses
commands instead of hanging on a prompt nobody will answer, while its edits, the point of a fix, run.

"Always" lasts for the session: for edits it covers every edit; for commands it covers the command's
prefix (leading `NAME=value` assignments, the program, plus its subcommand when it has one:
`git status`, `PYTHONPATH=. pytest`, `uv run pytest`), checked for every part of a compound command, so
approving `pytest` never lets `pytest && rm -rf build` through. A later command is covered only when
its own prefix is one already approved. Programs that can do anything with other arguments (shells,
interpreters, wrappers, installers, commands that delete or write files) are remembered only word for
word, and so is a command whose parts cannot be told apart safely (substitutions, redirection into a
file, subshells, quoted operators, control characters, unbalanced quotes) and any tool call but bash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from kcode.messages import ToolCall
from tools.base import ToolResult

ApprovalMode = Literal["ask", "auto-edit", "yolo"]
ActionKind = Literal["read", "edit", "command", "control"]
Verdict = Literal["yes", "no", "always"]

READ_TOOLS = frozenset({"search_text", "find_files"})
CONTROL_TOOLS = frozenset({"submit"})
COMMANDS_REFUSED = (
    "Not run: shell commands are disabled in this session (kcode fix was started without --yes, and nobody "
    "is there to approve them). Do not try to run commands another way; use the file viewer, the editor and "
    "search instead."
)
_SHELL_TOOL = "bash"

# -- how a command line is split (bash's rules, as far as "always" relies on them) ---------------------
_OPERATOR_CHARS = frozenset(";&|<>()")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "|&"})
# Redirections are harmless when they only read, duplicate or close a descriptor (`2>&1`, `>&-`), or
# write to /dev/null; any other target is a file being written, and `<<` starts a here-document whose
# lines are not commands.
_READ_REDIRECTS = frozenset({"<", "<<<"})
_DUPLICATIONS = frozenset({">&", "<&"})
_WRITE_REDIRECTS = frozenset({">", ">>", ">|", "&>", "&>>", "<>"}) | _DUPLICATIONS
_DESCRIPTOR = re.compile(r"\d+-?|-")
# Substitutions run code or re-read a value as code (`${v@P}`, `$[v]`); `$'...'` quotes by other rules.
# Checked after joining continued lines, since bash joins them before it expands anything.
_UNSAFE_SUBSTRINGS = ("$(", "`", "<(", ">(", "${", "$[", "$'")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
_PROGRAM_WORD = re.compile(r"(?!\d+$)[A-Za-z0-9_.+/][A-Za-z0-9_.+/-]*")  # not a number (`2>`), option or glob
_SUBCOMMAND_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.+/:-]*")

# -- what "always" may generalise ----------------------------------------------------------------------
_SUBCOMMAND_PROGRAMS = frozenset({
    "git", "hg", "npm", "pnpm", "yarn", "cargo", "go", "pip", "pip3", "uv", "poetry", "hatch", "pdm", "conda",
    "docker", "kubectl", "make", "cmake", "tox", "nox", "mvn", "gradle", "dotnet", "bundle", "rake", "gh",
})
# Wrappers that run the program named next in the project's environment: the rules apply to that
# program, with the wrapper kept in the prefix (`uv run pytest`); an option in between makes it exact.
_WRAPPERS = frozenset({
    ("uv", "run"), ("poetry", "run"), ("pdm", "run"), ("hatch", "run"), ("pipenv", "run"), ("conda", "run"),
    ("bundle", "exec"), ("npm", "run"), ("npm", "run-script"), ("pnpm", "run"), ("yarn", "run"),
})
_SHELL_KEYWORDS = frozenset({
    "if", "then", "elif", "else", "fi", "for", "while", "until", "do", "done", "case", "esac", "select", "in",
    "function", "coproc",
})
# Programs whose every run can do anything or destroy work: "always" for one of these approves that
# exact command, never the program as a prefix.
_EXACT_ONLY_PROGRAMS = frozenset({
    # delete, move or write files
    "rm", "rmdir", "shred", "dd", "truncate", "mv", "cp", "ln", "install", "chmod", "chown", "chgrp", "find",
    "rsync", "tee", "tar", "zip", "unzip", "patch",
    # run another command or a package fetched for the occasion
    "sudo", "su", "doas", "env", "xargs", "nohup", "timeout", "nice", "ionice", "time", "watch", "parallel",
    "flock", "setsid", "stdbuf", "unbuffer", "chroot", "unshare", "nsenter", "strace", "ltrace", "gdb",
    "script", "npx", "bunx", "uvx", "pipx",
    # shells and interpreters (awk's system(), sed's `e` and `w` commands, an editor's `-c`)
    "sh", "bash", "zsh", "fish", "dash", "ksh", "csh", "tcsh", "busybox", "node", "deno", "bun", "perl",
    "ruby", "php", "lua", "R", "Rscript", "java", "awk", "gawk", "mawk", "nawk", "sed", "gsed", "expect",
    "tclsh", "pwsh", "vi", "vim", "nvim", "emacs", "ed", "ex",
    # builtins that run code or change what later commands in this persistent shell do
    "eval", "exec", "command", "builtin", "source", ".", "alias", "export", "declare", "typeset", "readonly",
    "local", "set", "unset", "shopt", "trap", "enable", "hash", "let", "mapfile", "readarray", "compgen",
    "complete", "fc",
    # other machines and processes
    "curl", "wget", "ssh", "scp", "sftp", "nc", "socat", "kill", "pkill", "killall",
})
_EXACT_ONLY_SUBCOMMANDS = frozenset({
    ("git", "reset"), ("git", "clean"), ("git", "checkout"), ("git", "restore"), ("git", "switch"),
    ("git", "rebase"), ("git", "push"), ("git", "branch"), ("git", "stash"), ("git", "rm"), ("git", "gc"),
    ("git", "prune"), ("git", "reflog"), ("git", "update-ref"), ("git", "filter-branch"), ("git", "worktree"),
    # git subcommands that set or take a command to run (config's aliases and pager, -O, --upload-pack, -x)
    ("git", "config"), ("git", "submodule"), ("git", "bisect"), ("git", "difftool"), ("git", "mergetool"),
    ("git", "grep"), ("git", "fetch"), ("git", "pull"), ("git", "clone"), ("git", "ls-remote"),
    ("git", "archive"),
    ("docker", "rm"), ("docker", "rmi"), ("docker", "system"), ("docker", "run"), ("docker", "exec"),
    ("kubectl", "delete"), ("kubectl", "exec"), ("make", "clean"),
    # run or install a package of the model's choosing
    ("npm", "exec"), ("npm", "x"), ("npm", "install"), ("npm", "i"), ("npm", "add"), ("pnpm", "dlx"),
    ("pnpm", "exec"), ("pnpm", "add"), ("pnpm", "install"), ("yarn", "dlx"), ("yarn", "exec"), ("yarn", "add"),
    ("yarn", "node"), ("pip", "install"), ("pip", "uninstall"), ("pip3", "install"), ("pip3", "uninstall"),
    ("uv", "pip"), ("uv", "tool"), ("uv", "add"), ("poetry", "add"), ("pdm", "add"), ("conda", "install"),
    ("cargo", "run"), ("cargo", "install"), ("go", "run"), ("go", "install"), ("go", "get"),
})
# `python -m X` is approved per module, except for modules that install packages or run any code.
_EXACT_ONLY_PYTHON_MODULES = frozenset({
    "pip", "pipx", "uv", "poetry", "pdm", "hatch", "timeit", "cProfile", "profile", "trace", "pdb", "runpy",
    "code",
})


class ApprovalModeError(ValueError):
    """An approval mode that does not exist, or one that needs an approver and has none."""


def classify(name: str, arguments: Mapping[str, Any]) -> ActionKind:
    """What a call would do to the workspace. Tools kcode does not know count as commands, the safe guess."""
    if name in READ_TOOLS:
        return "read"
    if name in CONTROL_TOOLS:
        return "control"
    if name == "editor":
        return "read" if arguments.get("command") == "view" else "edit"
    return "command"


@dataclass(frozen=True)
class ApprovalRequest:
    """A call waiting for the user; `always_scope` says in words what answering "always" would allow."""

    call: ToolCall
    kind: ActionKind
    arguments: Mapping[str, Any]
    always_scope: str


@dataclass(frozen=True)
class Decision:
    """The user's answer. With `no`, `message` is what the model reads in place of the call's result."""

    verdict: Verdict
    message: str = ""

    @classmethod
    def yes(cls) -> Decision:
        return cls("yes")

    @classmethod
    def always(cls) -> Decision:
        return cls("always")

    @classmethod
    def no(cls, feedback: str = "") -> Decision:
        """A refusal; the user's feedback, when given, reaches the model word for word."""
        text = "Not run: the user declined this call."
        if feedback.strip():
            text += f" The user said:\n{feedback.strip()}"
        else:
            text += " Do not try to get around the refusal; take another approach or ask the user."
        return cls("no", text)


class Approver(Protocol):
    """Asks the user about one call (the UI's prompt), or answers by a fixed policy."""

    def decide(self, request: ApprovalRequest) -> Decision: ...


class RefuseCommands:
    """The policy of a run nobody watches: edits may go ahead, commands are refused with a reason."""

    def decide(self, request: ApprovalRequest) -> Decision:
        return Decision("no", COMMANDS_REFUSED) if request.kind == "command" else Decision.yes()


@dataclass
class Approvals:
    """The session's approval mode, its approver, and the "always" answers given so far."""

    mode: ApprovalMode
    approver: Approver | None = None
    edits_always: bool = False
    command_prefixes: set[tuple[str, ...]] = field(default_factory=set)
    exact_calls: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.mode not in get_args(ApprovalMode):
            raise ApprovalModeError(f"approval mode must be one of {', '.join(get_args(ApprovalMode))}, "
                                    f"got {self.mode!r}")
        if self.mode != "yolo" and self.approver is None:
            raise ApprovalModeError(f"approval mode {self.mode!r} needs an approver to ask")

    def check(self, call: ToolCall) -> ToolResult | None:
        """None when the call may run; otherwise the refusal the model reads as the call's result.

        Arguments that are not a JSON object pass straight through: the toolset refuses them before
        anything runs, with a message the model can act on.
        """
        arguments = call.parsed_arguments()
        if arguments is None:
            return None
        kind = classify(call.name, arguments)
        if not self._must_ask(call.name, kind, arguments):
            return None
        assert self.approver is not None  # guaranteed by __post_init__ for every mode that asks
        decision = self.approver.decide(ApprovalRequest(call, kind, arguments, self._scope(call.name, kind, arguments)))
        if decision.verdict == "always":
            self._remember(call.name, kind, arguments)
        if decision.verdict in ("yes", "always"):
            return None
        return ToolResult.error(decision.message or Decision.no().message, declined=True)

    def _must_ask(self, name: str, kind: ActionKind, arguments: Mapping[str, Any]) -> bool:
        if self.mode == "yolo" or kind in ("read", "control"):
            return False
        if kind == "edit":
            return self.mode == "ask" and not self.edits_always
        if _exact_key(name, arguments) in self.exact_calls:
            return False
        segments = _shell_segments(name, arguments)
        return not segments or not all(_prefix(words) in self.command_prefixes for words in segments)

    def _scope(self, name: str, kind: ActionKind, arguments: Mapping[str, Any]) -> str:
        if kind == "edit":
            return "every file edit for the rest of this session"
        if name != _SHELL_TOOL:
            return "this exact call for the rest of this session"
        segments = _shell_segments(name, arguments)
        if not segments or all(_whole_command_only(words) for words in segments):
            return "this exact command for the rest of this session"
        prefixes = {_prefix(words) for words in segments}
        listed = ", ".join(f"`{' '.join(p)}`" + (" (exactly)" if _whole_command_only(p) else "")
                           for p in sorted(prefixes))
        return f"commands starting with {listed} for the rest of this session"

    def _remember(self, name: str, kind: ActionKind, arguments: Mapping[str, Any]) -> None:
        if kind == "edit":
            self.edits_always = True
            return
        segments = _shell_segments(name, arguments)
        if segments:
            self.command_prefixes |= {_prefix(words) for words in segments}
        else:
            self.exact_calls.add(_exact_key(name, arguments))


def headless_approvals(allow_commands: bool) -> Approvals:
    """`kcode fix --yes` and the harness run everything; without `--yes`, edits run and commands are refused."""
    return Approvals("yolo") if allow_commands else Approvals("auto-edit", RefuseCommands())


def command_prefixes(command: str) -> set[tuple[str, ...]] | None:
    """The prefix of every part of a shell command, or None when the parts cannot be told apart safely."""
    segments = _segments(command)
    return {_prefix(words) for words in segments} if segments else None


def _prefix(words: tuple[str, ...]) -> tuple[str, ...]:
    """`git status`, `python -m pytest`, `PYTHONPATH=. pytest`: what "always" approves for one simple command.

    A later command is covered exactly when its own prefix is an approved one, so a prefix must hold
    every word that decides what runs: the assignments, any wrapper, the program and its subcommand.
    """
    if _whole_command_only(words):
        return words
    start = _program_index(words)
    program = _basename(words[start])
    if program in _SUBCOMMAND_PROGRAMS:
        return words[: start + 2]
    return words[: start + 3] if program.startswith("python") else words[: start + 1]


def _whole_command_only(words: tuple[str, ...]) -> bool:
    """Whether "always" may cover only this exact simple command, not others that start like it.

    So it is for shells, interpreters, wrappers and commands that destroy work (approving `rm build/x.o`
    must not approve `rm -rf ~`), for assignments alone (they change the shell for later commands),
    for a program word that is not a plain name (`2>/dev/null rm`, a keyword, a variable), for options
    before a subcommand (`git -C dir status` would otherwise approve every subcommand), for a
    subcommand program run bare, and for Python running code rather than a module (`-c`, a script).
    """
    start = _program_index(words)
    if start == len(words):
        return True
    program = _basename(words[start])
    if (not _PROGRAM_WORD.fullmatch(words[start]) or program in _EXACT_ONLY_PROGRAMS
            or program in _SHELL_KEYWORDS):
        return True
    rest = words[start + 1:]
    if program in _SUBCOMMAND_PROGRAMS:
        return (not rest or not _SUBCOMMAND_WORD.fullmatch(rest[0])
                or (program, rest[0]) in _EXACT_ONLY_SUBCOMMANDS)
    if program.startswith("python"):
        return not (rest[:1] == ("-m",) and len(rest) > 1 and _SUBCOMMAND_WORD.fullmatch(rest[1]) is not None
                    and rest[1] not in _EXACT_ONLY_PYTHON_MODULES)
    return False


def _program_index(words: tuple[str, ...]) -> int:
    """Where the program that decides the rules stands: after `NAME=value` words and wrappers (`uv run`)."""
    index = 0
    while index < len(words) and _ASSIGNMENT.match(words[index]):
        index += 1
    while index + 1 < len(words) and (_basename(words[index]), words[index + 1]) in _WRAPPERS:
        index += 2
    return index


def _basename(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def _shell_segments(name: str, arguments: Mapping[str, Any]) -> list[tuple[str, ...]] | None:
    command = arguments.get("command")
    return _segments(command) if name == _SHELL_TOOL and isinstance(command, str) else None


def _segments(command: str) -> list[tuple[str, ...]] | None:
    """The words of each simple command in `command`, split at `&&`, `||`, `;`, `|`, `&` and newlines.

    Harmless redirections stay among the words (so an exact command keeps them); None when anything
    could make bash see other commands than these words say.
    """
    joined = command.replace("\\\n", "")
    if _CONTROL_CHARS.search(command) or any(s in joined for s in _UNSAFE_SUBSTRINGS):
        return None
    tokens = _tokens(command)
    if tokens is None:
        return None
    segments: list[tuple[str, ...]] = []
    current: list[str] = []
    for index, (text, is_operator) in enumerate(tokens):
        if not is_operator:
            if text and _OPERATOR_CHARS.issuperset(text):
                return None  # a quoted `;` or `>`: among the words it would read as an operator
            current.append(text)
        elif text in _SEPARATORS:
            if current:
                segments.append(tuple(current))
            current = []
        else:
            target = tokens[index + 1] if index + 1 < len(tokens) else None
            if target is None or target[1] or not _harmless_redirect(text, target[0]):
                return None  # a file written, a here-document, a subshell or an operator bash may not know
            current.append(text)
    if current:
        segments.append(tuple(current))
    return segments


def _harmless_redirect(operator: str, target: str) -> bool:
    if operator in _READ_REDIRECTS:
        return True
    if operator in _DUPLICATIONS and _DESCRIPTOR.fullmatch(target):
        return True
    return operator in _WRITE_REDIRECTS and target == "/dev/null"


def _tokens(command: str) -> list[tuple[str, bool]] | None:
    """Bash's words (quotes and escapes removed) and operators, each flagged; None on unbalanced quotes.

    A newline is a `;`. Unlike `shlex`, a quoted or escaped operator stays part of its word, `#` is an
    ordinary character (treating it as a comment could hide what follows it), and a run of operator
    characters is one token, which the caller refuses unless it is an operator it knows.
    """
    tokens: list[tuple[str, bool]] = []
    word: list[str] | None = None
    index = 0
    while index < len(command):
        char = command[index]
        if char in " \t\n" or char in _OPERATOR_CHARS:
            if word is not None:
                tokens.append(("".join(word), False))
                word = None
            end = index + 1
            if char in _OPERATOR_CHARS:
                while end < len(command) and command[end] in _OPERATOR_CHARS:
                    end += 1
                tokens.append((command[index:end], True))
            elif char == "\n":
                tokens.append((";", True))
            index = end
            continue
        word = word if word is not None else []
        if char == "\\":
            if index + 1 == len(command):
                return None
            if command[index + 1] != "\n":  # a backslash-newline joins lines
                word.append(command[index + 1])
            index += 2
        elif char in "'\"":
            quoted = _quoted(command, index)
            if quoted is None:
                return None
            text, index = quoted
            word.append(text)
        else:
            word.append(char)
            index += 1
    if word is not None:
        tokens.append(("".join(word), False))
    return tokens


def _quoted(command: str, start: int) -> tuple[str, int] | None:
    """The text of the quoted string opening at `start`, and the index after it; None if it never closes."""
    quote = command[start]
    if quote == "'":
        end = command.find("'", start + 1)
        return None if end < 0 else (command[start + 1: end], end + 1)
    text: list[str] = []
    index = start + 1
    while index < len(command):
        char = command[index]
        if char == '"':
            return "".join(text), index + 1
        if char == "\\" and index + 1 < len(command) and command[index + 1] in '$`"\\\n':
            if command[index + 1] != "\n":
                text.append(command[index + 1])
            index += 2
            continue
        text.append(char)
        index += 1
    return None


def _exact_key(name: str, arguments: Mapping[str, Any]) -> str:
    """What an exact "always" remembers: the tool and all its arguments, so no other call can match it."""
    return json.dumps([name, dict(arguments)], sort_keys=True)
