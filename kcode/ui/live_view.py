"""What the chat's live region shows: the end of the message being streamed, or a spinner with the wait.

The region is redrawn several times a second from another thread, so it renders only the end of a long
message (a screenful) and reads its state without locks: the renderer only appends and replaces.
"""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markdown import Markdown
from rich.segment import Segment
from rich.spinner import Spinner
from rich.text import Text


class LiveView:
    """The live region's content: the tail of the message being streamed, else the activity spinner."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self.reasoning = False
        """Whether the message being streamed is reasoning rather than the answer."""
        self._activity: Text | None = None
        self._spinner = Spinner("dots", style="cyan")
        self._since = 0.0

    @property
    def streaming(self) -> bool:
        return bool(self._chunks)

    def append(self, text: str, reasoning: bool) -> None:
        self._chunks.append(text)
        self.reasoning = reasoning

    def take_message(self) -> tuple[str, bool]:
        """The streamed message and whether it is reasoning; the view is empty afterwards."""
        text, reasoning = "".join(self._chunks).strip(), self.reasoning
        self.discard_message()
        return text, reasoning

    def discard_message(self) -> None:
        self._chunks = []
        self.reasoning = False

    def wait(self, label: str, since: float) -> None:
        """Show a spinner with `label` and the seconds since `since` (on the console's clock)."""
        self._activity = Text(label + "…")
        self._spinner = Spinner("dots", style="cyan")
        self._since = since

    def leave_out(self, seconds: float) -> None:
        """Leave `seconds` out of the wait shown: the time a question to the user took is not time the work took."""
        self._since += seconds

    def idle(self) -> None:
        self._activity = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = "".join(self._chunks).strip()
        if text:
            height = max(1, console.size.height - 4)
            recent = _recent_lines(text, height + 10, 2 * height * options.max_width)
            yield from _tail(message_renderable(recent, self.reasoning), console, options, height)
        elif self._activity is not None:
            waited_s = max(0.0, console.get_time() - self._since)
            self._spinner.update(text=Text.assemble(self._activity, (f" {int(waited_s)}s · ctrl-c to interrupt",
                                                                      "dim")))
            yield self._spinner


def message_renderable(text: str, reasoning: bool) -> RenderableType:
    """Reasoning is quiet plain text; the answer is markdown, left ragged rather than padded to the width."""
    return Text(text, style="dim italic") if reasoning else Markdown(text, justify="default")


def _recent_lines(text: str, max_lines: int, max_chars: int) -> str:
    """The end of a markdown text: at most `max_lines` lines and about `max_chars` characters, cut at a
    line start; a cut inside a code block reopens its fence so the rest still renders as code.

    Rendering markdown takes time in proportion to its length, and the live preview shows one screenful,
    so each refresh renders only the end; the whole message is rendered once, when it is complete.
    """
    start = max(0, len(text) - max_chars)
    newline = len(text)
    for _ in range(max_lines):
        newline = text.rfind("\n", 0, newline)
        if newline < 0:
            break
    start = max(start, newline + 1)
    if start == 0:
        return text
    fence = ""
    offset = 0
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        is_fence = marker.startswith(("```", "~~~"))
        if offset >= start and not (fence and is_fence):
            return (fence + "\n" if fence else "") + text[offset:]
        if is_fence:
            fence = "" if fence else marker
        offset += len(line)
    return text[start:]


def _tail(renderable: RenderableType, console: Console, options: ConsoleOptions, height: int) -> Iterator[Segment]:
    """The last `height` lines of a rendering, so a growing message keeps its newest lines in view."""
    lines = console.render_lines(renderable, options.update(height=None), pad=False)
    for line in lines[-height:]:
        yield from line
        yield Segment.line()
