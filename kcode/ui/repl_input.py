"""The chat's input line: a prompt_toolkit prompt with saved history, multi-line entry and completion.

Keys: Enter sends. Esc then Enter (Alt-Enter in most terminals), Ctrl-J, or a backslash typed at the end
of a line before Enter start a new line instead; pasted text keeps its newlines. Ctrl-C, as in a shell,
never loses a typed request by accident: the first closes the completion menu and keeps the text, a second
in a row clears it, and on an empty line it raises KeyboardInterrupt (the chat decides what that means);
Ctrl-D on an empty line raises EOFError (the chat exits). A completion chosen with Tab is already in the
text, so Enter sends it; only a directory (`@src/`) stays open for the rest of its path. Completion pops
up as you type: slash commands at the start of the line, and paths after `@`, relative to the workspace
root (the text stays as typed; `@src/app.py` simply names the file to the model).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

SLASH_COMMANDS = ("/help", "/model", "/clear", "/compact", "/cost", "/undo", "/rewind", "/checkpoints", "/exit")
"""The chat's own commands; `ReplInput` completes these and any it is given."""
MAX_PATH_COMPLETIONS = 200
"""More entries than a menu can usefully show; a huge directory stops here rather than stalling the prompt."""

_STYLE = Style.from_dict({
    "prompt": "bold ansicyan",
    "continuation": "ansibrightblack",
    "bottom-toolbar": "noreverse ansibrightblack",
})


class ChatCompleter(Completer):
    """Slash commands at the start of the line; files and directories after `@`."""

    def __init__(self, root: Path, commands: Iterable[str]) -> None:
        self.root = root
        self.commands = sorted(set(commands))

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor
        if _is_slash_command(before):
            for command in self.commands:
                if command.startswith(before):
                    yield Completion(command, start_position=-len(before))
            return
        word = before.split()[-1] if before and not before[-1].isspace() else ""
        if word.startswith("@"):
            yield from self._paths(word[1:])

    def _paths(self, partial: str) -> Iterator[Completion]:
        head, slash, stem = partial.rpartition("/")
        head += slash
        try:
            entries = sorted(os.scandir(self.root / head if head else self.root), key=lambda entry: entry.name)
        except OSError:
            return
        shown = 0
        for entry in entries:
            if not entry.name.startswith(stem) or (entry.name.startswith(".") and not stem.startswith(".")):
                continue
            name = entry.name + ("/" if entry.is_dir() else "")
            yield Completion(head + name, start_position=-len(partial), display=name)
            shown += 1
            if shown >= MAX_PATH_COMPLETIONS:
                return


class ReplInput:
    """Reads one message at a time; the history lives in `history_path` and survives restarts.

    `toolbar` returns the bottom line's text (say, the model and the tokens used), asked on every
    redraw; `input` and `output` default to the terminal and are injected by tests.
    """

    def __init__(self, history_path: Path, *, root: Path, commands: Iterable[str] = (),
                 toolbar: Callable[[], str] | None = None, input: Input | None = None,
                 output: Output | None = None) -> None:
        history_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not history_path.exists():  # what the user typed may include secrets: owner-only, like the sessions
            os.close(os.open(history_path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.completer = ChatCompleter(root, [*SLASH_COMMANDS, *commands])
        self.session: PromptSession[str] = PromptSession(
            history=FileHistory(str(history_path)),
            completer=self.completer,
            complete_while_typing=True,
            multiline=True,
            key_bindings=_key_bindings(),
            prompt_continuation=lambda width, line_number, wrap_count: [("class:continuation", " " * width)],
            bottom_toolbar=toolbar,
            style=_STYLE,
            input=input,
            output=output,
        )

    def read(self, prompt: str = "› ") -> str:
        """The next message as typed, newlines kept; EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C when empty."""
        return self.session.prompt([("class:prompt", prompt)])


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("enter")
    def _send(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.complete_state = None
            if state.current_completion.text.endswith("/"):  # a directory: the path goes on
                return
        if buffer.document.text_before_cursor.endswith("\\"):
            buffer.delete_before_cursor()
            buffer.newline(copy_margin=False)
        else:
            buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    @bindings.add("c-j")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.newline(copy_margin=False)

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if not buffer.text:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")
        elif event.is_repeat:  # the second Ctrl-C in a row
            buffer.reset()
        else:
            buffer.complete_state = None  # closes the menu and keeps the text, a chosen completion included

    return bindings


def _is_slash_command(text: str) -> bool:
    return text.startswith("/") and not any(c.isspace() for c in text.strip())
