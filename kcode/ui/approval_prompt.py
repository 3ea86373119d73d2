"""The chat's approval question: show the command or the edit, then ask yes, always, no, or no with feedback.

A command the destructive-command guard flagged opens with its warning in red ("⚠ This command deletes
…") and is not offered "always": such a command is asked about every time. So is the question whether to
run a command the sandbox stopped once more outside it.

`TerminalApprover` implements `kcode.agent.approvals.Approver`. It reads answers through an injected
`ask(prompt) -> str` (by default the console's own line input, which works in any terminal), so a test
scripts the answers and nothing is patched. Ctrl-D (EOFError) counts as no; Ctrl-C propagates, so the
chat can cut the whole turn short. While it asks, the chat renderer's live region is suspended
through the injected `suspend` context, or its spinner would draw over the question.

Everything the question shows from the call (command, path, edit text, tool name, the "always" scope)
goes through `visible`, so a carriage return or an escape sequence in it is shown written out and can
never make the panel show something other than what would run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kcode.agent.approvals import ApprovalRequest, Decision
from kcode.ui.describe import call_summary, proposed_diff, visible
from kcode.ui.errors import DisplaySettingError
from kcode.ui.render import render_diff

_ANSWERS = {"y": "yes", "yes": "yes", "a": "always", "always": "always", "n": "no", "no": "no",
            "f": "feedback", "feedback": "feedback"}


class TerminalApprover:
    """Asks the user at the terminal; `preview_lines` bounds the command or diff shown."""

    def __init__(self, console: Console, *, ask: Callable[[str], str] | None = None,
                 suspend: Callable[[], AbstractContextManager[object]] = nullcontext,
                 preview_lines: int = 30) -> None:
        if preview_lines < 1:
            raise DisplaySettingError(f"preview_lines must be at least 1, got {preview_lines}")
        self.console = console
        self.ask = ask if ask is not None else self._console_ask
        self.suspend = suspend
        self.preview_lines = preview_lines

    def decide(self, request: ApprovalRequest) -> Decision:
        with self.suspend():
            self.console.print()
            self.console.print(self._panel(request))
            self.console.print(_choices(visible(request.always_scope),
                                        once=request.warning is not None or request.outside_sandbox is not None))
            try:
                return self._read_answer()
            except EOFError:
                return Decision.no()

    def _read_answer(self) -> Decision:
        while True:
            answer = _ANSWERS.get(self.ask("› ").strip().lower())
            if answer == "yes":
                return Decision.yes()
            if answer == "always":
                return Decision.always()
            if answer == "no":
                return Decision.no()
            if answer == "feedback":
                return Decision.no(self.ask("What should kcode do instead? › "))
            self.console.print(Text("  Type y, a, n or f.", style="yellow"))

    def _panel(self, request: ApprovalRequest) -> Panel:
        arguments = request.arguments
        if request.kind == "command" and request.call.name == "bash":
            # Shown whole, however long: nobody should approve lines they could not see.
            body: RenderableType = Text("$ " + visible(str(arguments.get("command", ""))).strip())
            title = "Run this command?"
        elif request.kind == "command":
            body = Text(call_summary(request.call, 10 * self.console.width))
            title = f"Run {visible(request.call.name)}?"
        else:
            body = self._edit_body(request)
            title = f"Apply this {visible(request.call.name)} edit?"
        if request.warning is not None:
            body = Group(Text("⚠ " + visible(request.warning), style="bold red"), body)
        if request.outside_sandbox is not None:
            title = "Run it again outside the sandbox?"
            body = Group(Text(f"The sandbox stopped {visible(request.outside_sandbox)}. Outside it, this command can "
                              "change any file you can and reach the network.", style="bold yellow"), body)
        return Panel(body, title=Text(title, style="bold"), title_align="left",
                     border_style="red" if request.warning is not None else "yellow", padding=(0, 1))

    def _edit_body(self, request: ApprovalRequest) -> RenderableType:
        arguments = request.arguments
        command = str(arguments.get("command", "?"))
        what = Text.assemble((visible(command), "bold"), " ", visible(str(arguments.get("path", ""))))
        if command == "insert":
            what.append(f" after line {visible(str(arguments.get('insert_line', '?')))}")
        if command == "create" and arguments.get("overwrite"):
            what.append(" (replacing the existing file)", style="yellow")
        diff = proposed_diff(arguments) if request.call.name == "editor" else []
        return Group(what, render_diff(diff, self.preview_lines)) if diff else what

    def _console_ask(self, prompt: str) -> str:
        return self.console.input(Text(prompt, style="bold"))


def _choices(always_scope: str, *, once: bool) -> Table:
    """The answers as a grid, so a meaning too long for the line wraps under itself, not under its key."""
    rows = [("y", "yes, this once" if once else "yes"), ("a", f"yes, and allow {always_scope}"), ("n", "no"),
            ("f", "no, and tell kcode what to do instead")]
    if once:  # a destructive command, or leaving the sandbox: asked about every time
        del rows[1]
    grid = Table.grid(padding=(0, 2), pad_edge=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, meaning in rows:
        grid.add_row(key, meaning)
    return grid
