"""The chat screen: streamed markdown answers, one compact block per tool call, a spinner while waiting.

`ChatRenderer` is the event sink of `kcode chat`; it draws on the rich `Console` it is given, so a
test renders to a string. On a terminal a transient live region at the bottom shows a spinner (with
the seconds waited) while the model thinks or a tool runs, and the tail of the message as it streams,
re-rendered as markdown on every refresh and cropped to the screen so it never overflows; when the
message ends the region is cleared and the message is printed once, for good, so scrollback holds
clean markdown. A console that is not a terminal gets no animation, only the final prints.

A tool call shows as a header when it starts (`● bash  pytest -q`) and, when it finishes, a preview
of its result under a `⎿` gutter: the first and last lines of its output, an edit's coloured diff,
errors in red.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.text import Text

from kcode.agent.events import (
    AgentError,
    AssistantDelta,
    Compacted,
    CompletionRetrying,
    Notice,
    ToolCallFinished,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
)
from kcode.messages import ToolCall
from kcode.ui.describe import (
    call_summary,
    diff_hunks,
    format_cost,
    format_tokens,
    one_line,
    printable,
    result_summary,
    visible,
)
from kcode.ui.errors import DisplaySettingError
from kcode.ui.live_view import LiveView, message_renderable
from tools.base import ToolResult

_GUTTER_FIRST = "  ⎿  "
_GUTTER_REST = "     "
# How a turn's end is marked; the other endings (a limit, an error) arrive as an AgentError that says why.
_END_NOTES = {"submitted": ("✓ submitted", "green"), "interrupted": ("■ interrupted", "yellow")}


def render_diff(lines: list[str], max_lines: int) -> Text:
    """Diff lines coloured one by one (additions green, removals red, hunk headers cyan), clamped.

    Pass `diff_hunks(diff)` for a whole unified diff: its file headers are dropped, since the path is
    already on screen above the diff.
    """
    if len(lines) == max_lines + 1:
        max_lines += 1  # the `… more lines` mark would take the hidden line's place: show the line instead
    text = Text()
    for line in (printable(line) for line in lines[:max_lines]):
        style = ("green" if line.startswith("+") else "red" if line.startswith("-")
                 else "cyan" if line.startswith("@@") else "dim")
        text.append(line + "\n", style=style)
    if len(lines) > max_lines:
        text.append(f"… {len(lines) - max_lines} more lines\n", style="dim")
    text.rstrip()
    return text


@dataclass
class _TurnTally:
    """Usage added up over one turn; the session figures are the last report's running totals."""

    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_at_start_usd: float | None = None
    last: UsageReport | None = None


class ChatRenderer:
    """Draws agent events on a console; call it with each event, `start_turn` when a message is sent.

    `preview_lines` bounds a tool's output preview and `diff_lines` an edit's diff. Events it does
    not know are ignored, so the loop may grow new ones without breaking the screen.
    """

    def __init__(self, console: Console, *, preview_lines: int = 10, diff_lines: int = 40) -> None:
        if preview_lines < 1 or diff_lines < 1:
            raise DisplaySettingError(
                f"preview_lines and diff_lines must be at least 1, got {preview_lines} and {diff_lines}")
        self.console = console
        self.preview_lines = preview_lines
        self.diff_lines = diff_lines
        self._animate = console.is_terminal and not console.is_dumb_terminal
        self._live: Live | None = None
        self._view = LiveView()
        self._header_call_id: str | None = None
        self._tally = _TurnTally()
        self._session_cost_usd: float | None = None

    def start_turn(self) -> None:
        """Show the spinner until the model's first words arrive."""
        self._tally = _TurnTally(cost_at_start_usd=self._session_cost_usd)
        self._wait("Thinking")

    def set_session_cost(self, cost_usd: float | None) -> None:
        """The cost already spent by a resumed session, so the next turn's own cost leaves it out."""
        self._session_cost_usd = cost_usd

    def close(self) -> None:
        """Print whatever was streamed and clear the live region: for a turn cut short by ctrl-c."""
        self._flush_stream()
        self._view.idle()
        self._stop_live()

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Lend the terminal to a prompt: the live region is cleared meanwhile and returns afterwards."""
        was_live = self._live is not None
        self._stop_live()
        self._header_call_id = None  # the prompt comes between a call's header and its result
        asked_at = self.console.get_time()
        try:
            yield
        finally:
            self._view.leave_out(self.console.get_time() - asked_at)  # the spinner times the work, not the user
            if was_live:
                self._start_live()

    def __call__(self, event: object) -> None:
        if isinstance(event, AssistantDelta):
            self._on_delta(event)
        elif isinstance(event, ToolCallStarted):
            self._flush_stream()
            self._print_header(event.call)
            self._wait(f"Running {visible(event.call.name)}")
        elif isinstance(event, ToolCallFinished):
            self._on_tool_finished(event.call, event.result)
        elif isinstance(event, UsageReport):
            self._on_usage(event)
        elif isinstance(event, Compacted):
            self._note(f"⟳ compacted the conversation: {format_tokens(event.tokens_before)} → "
                       f"{format_tokens(event.tokens_after)} tokens", "dim")
        elif isinstance(event, CompletionRetrying):
            self._view.discard_message()
            self._note(f"↻ {one_line(event.reason, 200)}; retrying in {event.delay_s:.0f}s "
                       f"(attempt {event.attempt} of {event.max_attempts})", "yellow")
            self._wait("Waiting for the model")
        elif isinstance(event, Notice):
            self._note(f"· {event.message}", "dim")
        elif isinstance(event, AgentError):
            self._note(f"✗ {event.message}", "red")
        elif isinstance(event, TurnEnded):
            self._on_turn_ended(event)

    # -- events ---------------------------------------------------------------------------------------

    def _on_delta(self, event: AssistantDelta) -> None:
        if event.reasoning != self._view.reasoning and self._view.streaming:
            self._flush_stream()
        self._view.append(event.text, event.reasoning)
        self._start_live()

    def _on_tool_finished(self, call: ToolCall, result: ToolResult) -> None:
        self._flush_stream()
        if self._header_call_id != call.id:
            self._print_header(call)
        self._header_call_id = None
        body = self._result_body(call, result)
        gutter = Text()
        for index, line in enumerate(body.split("\n")):
            gutter.append(_GUTTER_FIRST if index == 0 else "\n" + _GUTTER_REST, style="dim")
            gutter.append_text(line)
        self.console.print(gutter, no_wrap=True, overflow="ellipsis", crop=True)
        self._wait("Thinking")

    def _on_usage(self, event: UsageReport) -> None:
        tally = self._tally
        tally.steps += 1
        tally.prompt_tokens += event.prompt_tokens
        tally.completion_tokens += event.completion_tokens
        tally.last = event
        self._session_cost_usd = event.cost_usd

    def _on_turn_ended(self, event: TurnEnded) -> None:
        self.close()
        note = _END_NOTES.get(event.reason)
        if note is not None:
            self._note(*note)
        usage = self._usage_line()
        if usage is not None:
            self.console.print()
            self.console.print(usage)
        self._tally = _TurnTally(cost_at_start_usd=self._session_cost_usd)

    # -- drawing --------------------------------------------------------------------------------------

    def _print_header(self, call: ToolCall) -> None:
        name = visible(call.name)  # the model chose it: no escape sequence reaches the terminal
        room = max(20, self.console.width - len(name) - 4)
        header = Text.assemble(("● ", "cyan"), (name, "bold"), "  ", call_summary(call, room))
        self.console.print()
        self.console.print(header, no_wrap=True, overflow="ellipsis", crop=True)
        self._header_call_id = call.id

    def _result_body(self, call: ToolCall, result: ToolResult) -> Text:
        output = printable(result.output)
        if result.data.get("declined"):
            return Text("declined", style="yellow")
        if result.is_error:
            return self._preview(output, "red")
        diff = result.data.get("diff")
        if isinstance(diff, str) and diff:
            return render_diff(diff_hunks(diff), self.diff_lines)
        if call.name == "editor":  # a view: its header says which lines of how many; the model reads the rest
            return Text(result_summary(call, result), style="dim")
        return self._preview(output, "") if output.strip() else Text("(no output)", style="dim")

    def _preview(self, output: str, style: str) -> Text:
        """The output's first and last lines: a command's verdict (a test summary, an exit status) comes last."""
        lines = output.rstrip().splitlines()
        if len(lines) <= self.preview_lines + 1:  # a `… 1 more line` mark would only stand in for that line
            return Text("\n".join(lines), style=style)
        head = (self.preview_lines + 1) // 2
        tail = self.preview_lines - head
        text = Text("\n".join(lines[:head]), style=style)
        text.append(f"\n… {len(lines) - self.preview_lines} more lines", style="dim")
        if tail:
            text.append("\n" + "\n".join(lines[-tail:]), style=style)
        return text

    def _usage_line(self) -> Text | None:
        tally = self._tally
        if tally.last is None:
            return None
        parts = [f"{tally.steps} step{'s' if tally.steps != 1 else ''}",
                 f"{format_tokens(tally.prompt_tokens)} in", f"{format_tokens(tally.completion_tokens)} out"]
        if tally.last.cost_usd is not None:
            parts.append(format_cost(tally.last.cost_usd - (tally.cost_at_start_usd or 0.0)))
        session = f"session {format_tokens(tally.last.total_tokens)} tokens"
        if tally.last.cost_usd is not None:
            session += f" · {format_cost(tally.last.cost_usd)}"
        return Text("  " + " · ".join(parts) + "   " + session, style="dim")

    def _note(self, message: str, style: str) -> None:
        self._flush_stream()
        self.console.print()
        self.console.print(Text(message, style=style))

    def _flush_stream(self) -> None:
        """End the streamed message: clear its live preview and print it whole."""
        text, reasoning = self._view.take_message()
        if not text:
            return
        self.console.print()
        self.console.print(message_renderable(text, reasoning))

    def _wait(self, label: str) -> None:
        self._view.wait(label, since=self.console.get_time())
        self._start_live()

    def _start_live(self) -> None:
        if self._animate and self._live is None:
            self._live = Live(self._view, console=self.console, transient=True, refresh_per_second=8,
                              redirect_stdout=False, redirect_stderr=False, vertical_overflow="visible")
            self._live.start()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
