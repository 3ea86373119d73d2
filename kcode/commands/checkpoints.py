"""`kcode checkpoints` and chat's /checkpoints, /undo and /rewind output: the table and the restore reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kcode.checkpoints.store import Checkpoint, CheckpointError, CheckpointStore, Restored, store_directory

_NAMES_SHOWN = 3


def print_checkpoints(store: CheckpointStore, console: Console, *, session: str | None = None,
                      limit: int | None = None) -> None:
    """The newest checkpoints (of one session when given) as a table, with the files each step changed."""
    history = store.history()
    newer: dict[str, Checkpoint] = {c.parent: c for c in history if c.parent}
    shown = [c for c in history if session is None or c.session == session][:limit]
    if not shown:
        console.print("No checkpoints yet: kcode takes one before each edit or command of the agent.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "step", "time", "tool", "description", "files changed"):
        table.add_column(column, no_wrap=column in ("id", "time"), overflow="fold")
    if session is None:
        table.add_column("session", no_wrap=True)
    for checkpoint in shown:
        changed = store.changed_files(checkpoint, newer.get(checkpoint.id))
        row = [checkpoint.short_id, str(checkpoint.step), f"{checkpoint.created_at.astimezone():%Y-%m-%d %H:%M:%S}",
               checkpoint.tool, escape(checkpoint.description), escape(_names(changed) or "-")]
        table.add_row(*row, *([checkpoint.session] if session is None else []))
    console.print(table)
    console.print("[dim]Files changed: by that step and anything else until the next checkpoint (or now).[/]")


def restore_report(restored: Restored) -> str:
    """What a restore did, as rich markup for the chat or the terminal."""
    target = restored.checkpoint
    lines = [f"Files as before step {target.step} ({escape(target.tool)}: {escape(target.description)}):"]
    if not restored.written and not restored.deleted:
        lines = [f"Nothing to restore: the files already match the checkpoint before step {target.step}."]
    lines += [f"  restored {escape(path)}" for path in restored.written]
    lines += [f"  removed  {escape(path)}" for path in restored.deleted]
    lines += [f"  [yellow]left alone (too large to checkpoint)[/] {escape(path)}" for path in restored.kept]
    return "\n".join(lines)


def run_checkpoints(data_dir: Path, workspace: Path, console: Console | None = None, *, restore: str | None = None,
                    limit: int | None = 20) -> None:
    """List the workspace's checkpoints, or restore the one whose id starts with `restore` (undoably)."""
    console = console or Console(highlight=False)
    store = CheckpointStore(workspace, store_directory(data_dir, workspace))
    if restore is None:
        print_checkpoints(store, console, limit=limit)
        return
    matches = [c for c in store.history() if c.id.startswith(restore.lower())]
    if len(matches) != 1:
        raise CheckpointError(f"{len(matches) or 'no'} checkpoints have an id starting {restore!r}; "
                         "`kcode checkpoints` lists them")
    current = store.snapshot(session="cli", step=0, tool="restore",
                             description=f"before `kcode checkpoints --restore {matches[0].short_id}`")
    restored = store.restore(matches[0], current)
    console.print(restore_report(restored))
    console.print(f"[dim]The files before this restore are checkpoint {current.short_id}.[/]")


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_NAMES_SHOWN])
    return f"{len(paths)}: {shown}" + (" …" if len(paths) > _NAMES_SHOWN else "") if paths else ""
