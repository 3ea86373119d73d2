"""What `kcode eval` shows while instances run: a rich progress bar with counts by verdict, or JSON lines.

`EvalProgress` draws on a console it is given (stderr in the CLI), with a bar, the counts of each verdict
so far, the elapsed time, and one line per finished instance; `JsonEvalEvents` writes one JSON object per
event, flushed, for scripts:

    {"type": "instance_started", "instance_id": str}
    {"type": "instance_step", "instance_id": str, "steps": int}
    {"type": "instance_finished", "instance_id": str, "verdict": str, "detail": str, "seconds": float,
     "resumed": bool}
    {"type": "summary", ...}   written by the command at the end
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from swe_harness.events import HarnessEvent, InstanceFinished, InstanceStarted, InstanceStep

_STYLES = {"resolved": "green", "submitted": "green", "unresolved": "yellow", "limit": "yellow",
           "empty": "dim", "error": "red"}


class EvalProgress:
    """A live bar over `total` instances whose counts read e.g. `resolved 3  unresolved 1  error 0`."""

    def __init__(self, console: Console, total: int, verdicts: Sequence[str], title: str) -> None:
        self.console = console
        self.counts: Counter[str] = Counter({verdict: 0 for verdict in verdicts})
        self.running: set[str] = set()
        self._progress = Progress(TextColumn(f"[bold]{escape(title)}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=console,
                                  transient=False)
        self._task = self._progress.add_task(title, total=total, counts=self._counts_text())

    def __enter__(self) -> EvalProgress:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._progress.stop()

    def __call__(self, event: HarnessEvent) -> None:
        if isinstance(event, InstanceStarted):
            self.running.add(event.instance_id)
        elif isinstance(event, InstanceStep):
            return
        elif isinstance(event, InstanceFinished):
            self.running.discard(event.instance_id)
            self.counts[event.verdict] += 1
            self._progress.console.print(_finished_line(event), soft_wrap=True)  # errors are never cut
            self._progress.update(self._task, advance=1, counts=self._counts_text())

    def _counts_text(self) -> str:
        parts = [f"[{_STYLES.get(verdict, 'default')}]{verdict} {count}[/]" for verdict, count in self.counts.items()]
        return "  ".join(parts) + (f"  [dim]running {len(self.running)}[/]" if self.running else "")


class JsonEvalEvents:
    """One JSON object per harness event on `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: HarnessEvent) -> None:
        names = {InstanceStarted: "instance_started", InstanceStep: "instance_step",
                 InstanceFinished: "instance_finished"}
        self.write({"type": names[type(event)], **asdict(event)})

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def _finished_line(event: InstanceFinished) -> str:
    style = _STYLES.get(event.verdict, "default")
    timing = "earlier run" if event.resumed else f"{event.seconds:.0f} s"
    shown = event.detail and event.detail != event.verdict and not event.resumed
    detail = f"  [dim]{escape(event.detail)}[/]" if shown else ""
    return f"[{style}]{escape(event.verdict):>10}[/]  {escape(event.instance_id)}  [dim]({timing})[/]{detail}"
