"""Where each configured MCP server stands, and the lines `kcode mcp list` and `/mcp` print about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ServerState = Literal["connected", "failed", "stopped", "disabled"]
_DESCRIPTION_CHARS = 100


@dataclass(frozen=True)
class ServerStatus:
    """One configured server; `detail` says why it failed or stopped."""

    name: str
    state: ServerState
    target: str
    """What it runs, or its URL."""
    trusted: bool = False
    detail: str = ""
    tools: tuple[tuple[str, str], ...] = ()
    """Its tools' own names and descriptions, while it is connected."""


def status_lines(statuses: list[ServerStatus]) -> list[str]:
    """A heading line per server (name, what it runs, how it stands) and an indented line per tool."""
    if not statuses:
        return ["No MCP servers are configured; add [mcp_servers.NAME] tables to config.toml (see the README)."]
    lines: list[str] = []
    for status in statuses:
        trust = ", trusted" if status.trusted else ""
        if status.state == "connected":
            count = len(status.tools)
            state = f"connected, {count} tool{'s' if count != 1 else ''}"
        else:
            state = f"{status.state}: {status.detail}" if status.detail else status.state
        lines.append(f"{status.name} ({status.target}{trust}): {state}")
        width = max((len(name) for name, _ in status.tools), default=0)
        for name, description in status.tools:
            first = description.splitlines()[0] if description else ""
            if len(first) > _DESCRIPTION_CHARS:
                first = first[:_DESCRIPTION_CHARS - 3] + "..."
            lines.append(f"  {name.ljust(width)}  {first}".rstrip())
    return lines
