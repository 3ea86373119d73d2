"""`kcode mcp list`: start each configured MCP server, show whether it starts and its tools, then stop them.

The command group is defined here so that `kcode/cli.py` only registers it. Its settings and the `mcp` SDK
are imported inside the command, so defining it costs `kcode --help` nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import typer

mcp_app = typer.Typer(help="MCP servers: the tools of Model Context Protocol servers in config.toml.",
                      no_args_is_help=True)


@mcp_app.command("list")
def list_command(
    path: Path = typer.Argument(Path("."), exists=True, file_okay=False, resolve_path=True,
                                help="The workspace stdio servers start in (default: the current directory)."),
    config: Path | None = typer.Option(None, "--config", dir_okay=False, help="Read this config.toml instead."),
) -> None:
    """Start each configured server, show whether it starts and what tools it offers, then stop them all.

    Exit codes: 0 every enabled server started, 1 some did not, 2 configuration error.
    """
    from kcode.errors import KcodeError

    try:
        code = list_servers(os.environ, config, path, typer.echo)
    except KcodeError as exc:
        typer.echo(f"kcode: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def list_servers(environ: Mapping[str, str], config_file: Path | None, root: Path,
                 echo: Callable[[str], object]) -> int:
    """Print each server's status lines; 1 when an enabled server did not start."""
    from kcode.config import load_mcp_servers
    from kcode.mcp.connection import McpServers
    from kcode.mcp.status import status_lines

    configs = load_mcp_servers(environ, config_file)
    with McpServers.start(configs, cwd=root) as servers:
        statuses = servers.statuses()
    for line in status_lines(statuses):
        echo(line)
    return 1 if any(status.state == "failed" for status in statuses) else 0
