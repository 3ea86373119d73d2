"""Which tool calls run at once and which wait for the user, and what the model is told when one is refused.

Modes: `ask` (every command and every edit needs a yes), `auto-edit` (edits run, commands ask) and
`yolo` (everything runs). Reading never asks. The question goes to an `Approver` the UI implements; a
headless run gets one that never prompts (`RefuseCommands`), so `kcode fix` without `--yes` refuses
commands instead of hanging on a prompt nobody will answer, while its edits, the point of a fix, run.

"Always" lasts for the session: for edits it covers every edit; for commands it covers the command's
prefix (the program, plus its subcommand when it has one: `git status`, `pytest`), checked for every
part of a compound command, so approving `pytest` never lets `pytest && rm -rf build` through. A command
whose parts cannot be told apart safely (command substitution, redirection into a file, unbalanced
quotes) is remembered only word for word.
"""

from __future__ import annotations

import json
import shlex
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
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "|&", ";;"})
_FILE_REDIRECTS = frozenset({">", ">>", "&>", "&>>", ">|"})
_UNSAFE_SUBSTRINGS = ("$(", "`", "<(", ">(")
_SUBCOMMAND_PROGRAMS = frozenset({
    "git", "hg", "npm", "pnpm", "yarn", "cargo", "go", "pip", "pip3", "uv", "poetry", "hatch", "pdm", "conda",
    "docker", "kubectl", "make", "cmake", "tox", "nox", "mvn", "gradle", "dotnet", "bundle", "rake", "gh",
})


# Programs whose every run can do anything (shells, interpreters, wrappers that run another command) or
# destroy work: "always" for one of these approves that exact command, never the program as a prefix.
_EXACT_ONLY_PROGRAMS = frozenset({
    "rm", "rmdir", "shred", "dd", "truncate", "mv", "cp", "ln", "chmod", "chown", "chgrp", "find", "rsync",
    "kill", "pkill", "killall", "sudo", "su", "doas", "env", "xargs", "eval", "exec", "command", "builtin",
    "nohup", "timeout", "nice", "time", "watch", "sh", "bash", "zsh", "fish", "dash", "ksh", "node", "deno",
    "bun", "perl", "ruby", "php", "lua", "R", "Rscript", "curl", "wget", "ssh", "scp",
})
_EXACT_ONLY_SUBCOMMANDS = frozenset({
    ("git", "reset"), ("git", "clean"), ("git", "checkout"), ("git", "restore"), ("git", "switch"),
    ("git", "rebase"), ("git", "push"), ("git", "branch"), ("git", "stash"), ("git", "rm"), ("git", "gc"),
    ("git", "prune"), ("git", "reflog"), ("git", "update-ref"), ("git", "filter-branch"), ("git", "worktree"),
    ("docker", "rm"), ("docker", "rmi"), ("docker", "system"), ("docker", "run"), ("kubectl", "delete"),
    ("npm", "exec"), ("npx", "--yes"), ("pip", "uninstall"), ("make", "clean"),
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
    exact_commands: set[str] = field(default_factory=set)

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
        arguments = _parse_object(call.arguments)
        if arguments is None:
            return None
        kind = classify(call.name, arguments)
        if not self._must_ask(kind, arguments):
            return None
        assert self.approver is not None  # guaranteed by __post_init__ for every mode that asks
        decision = self.approver.decide(ApprovalRequest(call, kind, arguments, self._scope(kind, arguments)))
        if decision.verdict == "always":
            self._remember(kind, arguments)
        if decision.verdict in ("yes", "always"):
            return None
        return ToolResult.error(decision.message or Decision.no().message, declined=True)

    def _must_ask(self, kind: ActionKind, arguments: Mapping[str, Any]) -> bool:
        if self.mode == "yolo" or kind in ("read", "control"):
            return False
        if kind == "edit":
            return self.mode == "ask" and not self.edits_always
        command = _command_text(arguments)
        if command in self.exact_commands:
            return False
        segments = _segments(command)
        if not segments:
            return True
        return not all(any(_covers(p, words) for p in self.command_prefixes) for words in segments)

    def _scope(self, kind: ActionKind, arguments: Mapping[str, Any]) -> str:
        if kind == "edit":
            return "every file edit for the rest of this session"
        command = _command_text(arguments)
        prefixes = command_prefixes(command)
        if not prefixes:
            return "this exact command for the rest of this session"
        if all(_whole_command_only(p) for p in prefixes):
            return "this exact command for the rest of this session"
        listed = ", ".join(f"`{' '.join(p)}`" + ("" if not _whole_command_only(p) else " (exactly)")
                           for p in sorted(prefixes))
        return f"commands starting with {listed} for the rest of this session"

    def _remember(self, kind: ActionKind, arguments: Mapping[str, Any]) -> None:
        if kind == "edit":
            self.edits_always = True
            return
        command = _command_text(arguments)
        prefixes = command_prefixes(command)
        if prefixes:
            self.command_prefixes |= prefixes
        else:
            self.exact_commands.add(command)


def headless_approvals(allow_commands: bool) -> Approvals:
    """`kcode fix --yes` and the harness run everything; without `--yes`, edits run and commands are refused."""
    return Approvals("yolo") if allow_commands else Approvals("auto-edit", RefuseCommands())


def command_prefixes(command: str) -> set[tuple[str, ...]] | None:
    """The prefix of every part of a shell command, or None when the parts cannot be told apart safely."""
    segments = _segments(command)
    return {_prefix(words) for words in segments} if segments else None


def _prefix(words: tuple[str, ...]) -> tuple[str, ...]:
    """`git status`, `python -m pytest`, `pytest`: what "always" approves for one simple command."""
    if _whole_command_only(words):
        return words
    program = words[0].rsplit("/", 1)[-1]
    if program in _SUBCOMMAND_PROGRAMS and len(words) > 1:
        return words[:2]
    return words[:3] if program.startswith("python") else words[:1]


def _whole_command_only(words: tuple[str, ...]) -> bool:
    """Whether "always" may cover only this exact simple command, not others that start like it.

    So it is for shells, interpreters, wrappers and commands that destroy work (approving `rm build/x.o`
    must not approve `rm -rf ~`), for options before a subcommand (`git -C dir status` would otherwise
    approve every subcommand) and for Python running code rather than a module (`-c`, a script).
    """
    program = words[0].rsplit("/", 1)[-1]
    if program in _EXACT_ONLY_PROGRAMS:
        return True
    if program in _SUBCOMMAND_PROGRAMS and len(words) > 1:
        return words[1].startswith("-") or (program, words[1]) in _EXACT_ONLY_SUBCOMMANDS
    if program.startswith("python"):
        return not (words[1:2] == ("-m",) and len(words) > 2)
    return False


def _covers(approved: tuple[str, ...], words: tuple[str, ...]) -> bool:
    return words == approved if _whole_command_only(approved) else words[: len(approved)] == approved


def _segments(command: str) -> list[tuple[str, ...]] | None:
    """The words of each simple command in `command`, split at `&&`, `||`, `;`, `|`, `&` and newlines."""
    if any(s in command for s in _UNSAFE_SUBSTRINGS):
        return None
    lexer = shlex.shlex(command.replace("\n", ";"), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes
        return None
    segments: list[tuple[str, ...]] = []
    current: list[str] = []
    for index, token in enumerate(tokens):
        if token in _FILE_REDIRECTS and tokens[index + 1: index + 2] != ["/dev/null"]:
            return None
        if token in _SEPARATORS:
            if current:
                segments.append(tuple(current))
            current = []
        else:
            current.append(token)
    if current:
        segments.append(tuple(current))
    return segments


def _command_text(arguments: Mapping[str, Any]) -> str:
    command = arguments.get("command")
    return command if isinstance(command, str) else json.dumps(dict(arguments), sort_keys=True)


def _parse_object(arguments: str) -> dict[str, Any] | None:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
