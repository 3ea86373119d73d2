"""`kcode sessions`: the saved chat sessions, newest first, with what `--resume` needs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from kcode.sessions import SessionStore


def print_sessions(directory: Path, workspace: Path | None, console: Console | None = None) -> None:
    console = console or Console()
    sessions = SessionStore(directory).list(workspace)
    if not sessions:
        where = f" for {workspace}" if workspace is not None else ""
        console.print(f"No sessions{where}. `kcode chat` starts one.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "started", "messages", "model", "first message"):
        table.add_column(column, no_wrap=column != "first message", overflow="ellipsis")
    if workspace is None:
        table.add_column("workspace", no_wrap=True)
    for info in sessions:
        row = [info.id, f"{info.started_at.astimezone():%Y-%m-%d %H:%M}", str(info.message_count), info.model,
               info.first_user_message]
        table.add_row(*row, *([info.workspace] if workspace is None else []))
    console.print(table)
    console.print("[dim]kcode chat --resume ID continues one.[/]")
