"""`kcode sessions`: the saved chat sessions, newest first, with what `--resume` needs.

Each session takes two lines, its id and facts on the first and its first request under them, so the id
is never cut and the request gets the whole width, however narrow the terminal. With `--all` the sessions
come under a heading for each workspace. A session that never had a turn (an empty chat, one left by
/clear) has nothing to resume and is not listed.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from kcode.sessions import SessionInfo, SessionStore


def print_sessions(directory: Path, workspace: Path | None, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    sessions = [info for info in SessionStore(directory).list(workspace) if info.first_user_message]
    if not sessions:
        where = f" for {workspace}" if workspace is not None else ""
        console.print(f"No sessions{where}. `kcode chat` starts one.")
        return
    if workspace is not None:
        _print_rows(sessions, console)
    else:
        for place in dict.fromkeys(info.workspace for info in sessions):  # the newest session's workspace first
            console.print(Text(place, style="bold"))
            _print_rows([info for info in sessions if info.workspace == place], console)
            console.print()
    console.print("[dim]kcode chat --resume ID continues one.[/]")


def _print_rows(sessions: list[SessionInfo], console: Console) -> None:
    for info in sessions:
        count = f"{info.message_count} message{'s' if info.message_count != 1 else ''}"
        facts = Text.assemble((info.id, "bold cyan"), f"  {info.started_at.astimezone():%Y-%m-%d %H:%M}  {count}  ",
                              (info.model, "dim"))
        console.print(facts, no_wrap=True, overflow="ellipsis")
        console.print(Text("  " + info.first_user_message), no_wrap=True, overflow="ellipsis")
