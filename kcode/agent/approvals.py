"""Which tool calls run at once and which wait for the user, and what the model is told when one is refused.

Modes: `ask` (every command and every edit needs a yes), `auto-edit` (edits run, commands ask) and
`yolo` (everything runs). Reading never asks, nor do the tools of an MCP server the user trusts
(`trusted_tools`). The question goes to an `Approver` the UI implements; a headless run gets one that never
prompts (`RefuseCommands`), so `kcode fix` without `--yes` refuses commands (an untrusted MCP server's tools
count as commands) instead of hanging on a prompt nobody will answer, while its edits, the point of a fix, run.

"Always" lasts for the session. For edits it covers every edit. For a shell command it widens only when
every simple command in it is on the read-only allowlist (`read_only_commands`: `pytest`, `ruff check`,
`ls`…) with none of its writing or executing options, and nothing in the line is a hazard
(`shell_syntax`: substitutions, variables, here-strings, file writes, `/dev/tcp`, subscripts…); then
it covers later commands made only of those programs. Any other approval is remembered exactly: the
command's raw text (never after quote removal, so `rm -rf '~'` never approves `rm -rf ~`) and the
directory the shell stood in, so a `cd` cannot turn an approved `rm -rf build` into another directory's.

The destructive-command guard (`destructive`) runs on every bash call in every mode: in `ask` and
`auto-edit` the user is asked every time, "always" or not, with a warning naming what would be lost
(and "always" then counts as one yes); in `yolo` such a command is refused unless destructive commands
were allowed. Every decision about an edit or a command is reported through `on_decision`.

When the sandbox stops a command the user may want (a download, an install outside the workspace), the
loop asks `leave_sandbox` whether to run it once more outside; only a person can agree, so headless runs
stay in unless started with `--sandbox off`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from kcode.agent.destructive import find_dangers
from kcode.agent.events import ApprovalDecided
from kcode.agent.read_only_commands import widening_key
from kcode.agent.shell_syntax import parse_command
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
MCP_TOOL_REFUSED = (
    "Not run: the tools of this MCP server need the user's approval, and nobody is there to give it (kcode fix was "
    "started without --yes, and the server is not trusted in config.toml). Do without this tool."
)
DESTRUCTIVE_REFUSED = (
    "Not run: {warning} Destructive commands are refused in this session (kcode was not started with "
    "--allow-destructive). Do not try to get around this with another command that does the same; if it "
    "is really needed, ask the user to run it themselves."
)
_SHELL_TOOL = "bash"
_EXACT_SCOPE = "this exact command{where} for the rest of this session"


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
    """A call waiting for the user; `always_scope` says in words what answering "always" would allow.

    `warning`, when set, names what a destructive command would lose; "always" is then only one yes.
    """

    call: ToolCall
    kind: ActionKind
    arguments: Mapping[str, Any]
    always_scope: str
    warning: str | None = None
    outside_sandbox: str | None = None
    """Set when the question is whether to run the call again outside the sandbox: what the sandbox blocked."""


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
        if request.kind != "command":
            return Decision.yes()
        return Decision("no", MCP_TOOL_REFUSED if request.call.name.startswith("mcp__") else COMMANDS_REFUSED)


@dataclass
class Approvals:
    """The session's approval mode, its approver, and the "always" answers given so far.

    `workspace` and `home` (default: the current directory and the user's home) tell the destructive
    guard what is precious; `shell_cwd` reports where the bash session stands. Without it the shell's
    directory is unknown, so the guard treats relative paths as pointing anywhere and exact approvals
    cannot tell directories apart.
    """

    mode: ApprovalMode
    approver: Approver | None = None
    allow_destructive: bool = False
    workspace: Path | None = None
    home: Path | None = None
    shell_cwd: Callable[[], str] | None = None
    on_decision: Callable[[ApprovalDecided], None] | None = None
    edits_always: bool = False
    widened: set[tuple[str, ...]] = field(default_factory=set)
    """Keys (`read_only_commands.widening_key`) of read-only commands approved with "always"."""
    exact_calls: set[str] = field(default_factory=set)
    trusted_tools: frozenset[str] = frozenset()
    """Tools that run without asking in every mode: those of MCP servers configured with `trust = true`."""

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
        if kind in ("read", "control"):
            return None
        if call.name in self.trusted_tools:
            self._record(call, "yes", asked=False, warning=None)
            return None
        cwd = self.shell_cwd() if self.shell_cwd is not None and call.name == _SHELL_TOOL else None
        warning = self._warning(call.name, arguments, cwd)
        unasked = (self.mode == "yolo" or (kind == "edit" and (self.mode == "auto-edit" or self.edits_always))
                   or (kind == "command" and warning is None and self._covered(call.name, arguments, cwd)))
        if unasked:  # a warning here means yolo: nobody to ask, so allowed only when destructive commands are
            if warning is not None and not self.allow_destructive:
                self._record(call, "no", asked=False, warning=warning)
                return ToolResult.error(DESTRUCTIVE_REFUSED.format(warning=warning), declined=True)
            self._record(call, "yes", asked=False, warning=warning)
            return None
        assert self.approver is not None  # guaranteed by __post_init__ for every mode that asks
        scope = self._scope(call.name, kind, arguments, cwd)
        decision = self.approver.decide(ApprovalRequest(call, kind, arguments, scope, warning))
        verdict = "yes" if decision.verdict == "always" and warning is not None else decision.verdict
        if verdict == "always":
            self._remember(call.name, kind, arguments, cwd)
        self._record(call, verdict, asked=True, warning=warning, scope=scope if verdict == "always" else None)
        if verdict == "no":
            return ToolResult.error(decision.message or Decision.no().message, declined=True)
        return None

    def leave_sandbox(self, call: ToolCall, blocked: str) -> bool:
        """Whether the user lets `call`, which the sandbox stopped (`blocked` says at what), run once more
        outside it. Only a person can say yes: with no approver, or one that refuses commands (a run nobody
        watches), the call stays sandboxed. Never remembered: the next blocked command asks again."""
        arguments = call.parsed_arguments()
        if self.approver is None or arguments is None:
            return False
        decision = self.approver.decide(ApprovalRequest(call, "command", arguments, "", outside_sandbox=blocked))
        allowed = decision.verdict != "no"
        self._record(call, "yes" if allowed else "no", asked=True, warning=None,
                     scope="this call, once, outside the sandbox" if allowed else None)
        return allowed

    def _warning(self, name: str, arguments: Mapping[str, Any], cwd: str | None) -> str | None:
        command = arguments.get("command")
        if name != _SHELL_TOOL or not isinstance(command, str):
            return None
        workspace = self.workspace if self.workspace is not None else Path.cwd()
        dangers = find_dangers(command, workspace=workspace, home=self.home if self.home is not None else Path.home(),
                               cwd=Path(cwd) if cwd is not None else "unknown")
        return ("This command " + "; it also ".join(d.what for d in dangers) + ".") if dangers else None

    def _covered(self, name: str, arguments: Mapping[str, Any], cwd: str | None) -> bool:
        if _exact_key(name, arguments, cwd) in self.exact_calls:
            return True
        keys = _widening_keys(name, arguments)
        return keys is not None and keys <= self.widened

    def _scope(self, name: str, kind: ActionKind, arguments: Mapping[str, Any], cwd: str | None) -> str:
        if kind == "edit":
            return "every file edit for the rest of this session"
        if name != _SHELL_TOOL:
            return "this exact call for the rest of this session"
        keys = _widening_keys(name, arguments)
        if keys is None:
            return _EXACT_SCOPE.format(where=f" run from {cwd}" if cwd is not None else "")
        listed = ", ".join(f"`{' '.join(key)}`" for key in sorted(keys))
        return f"commands starting with {listed} (without options that write files or run programs) " \
               "for the rest of this session"

    def _remember(self, name: str, kind: ActionKind, arguments: Mapping[str, Any], cwd: str | None) -> None:
        if kind == "edit":
            self.edits_always = True
            return
        keys = _widening_keys(name, arguments)
        if keys is not None:
            self.widened |= keys
        else:
            self.exact_calls.add(_exact_key(name, arguments, cwd))

    def _record(self, call: ToolCall, verdict: Verdict, *, asked: bool, warning: str | None,
                scope: str | None = None) -> None:
        if self.on_decision is not None:
            self.on_decision(ApprovalDecided(call.id, call.name, verdict, asked, scope, warning))


def headless_approvals(allow_commands: bool, *, allow_destructive: bool = False) -> Approvals:
    """`kcode fix --yes` and the harness run everything but destructive commands (unless allowed); without
    `--yes`, edits run and commands are refused."""
    if allow_commands:
        return Approvals("yolo", allow_destructive=allow_destructive)
    return Approvals("auto-edit", RefuseCommands(), allow_destructive=allow_destructive)


def _widening_keys(name: str, arguments: Mapping[str, Any]) -> set[tuple[str, ...]] | None:
    """The allowlist key of every simple command in a bash call, or None when it must be approved exactly."""
    command = arguments.get("command")
    if name != _SHELL_TOOL or not isinstance(command, str):
        return None
    parsed = parse_command(command)
    if parsed.hazards or not parsed.commands:
        return None
    keys = {widening_key(simple) for simple in parsed.commands}
    return None if None in keys else {key for key in keys if key is not None}


def _exact_key(name: str, arguments: Mapping[str, Any], cwd: str | None) -> str:
    """What an exact "always" remembers: the tool, all its raw arguments and the shell's directory."""
    return json.dumps([name, dict(arguments), cwd], sort_keys=True)
