"""Options and helpers that several commands share, so each command module declares them the same way.

Only typer is imported here: `kcode --help` builds every command's options.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from kcode.config import Settings

MODEL = typer.Option(None, "--model", "-m", help="Model id; `local` or `local:PATH` runs kcode's own engine.")
BASE_URL = typer.Option(None, "--base-url", help="OpenAI-compatible API base URL, e.g. http://localhost:8000/v1.")
PROFILE = typer.Option(None, "--profile", "-p", help="A profile from config.toml, or `moonshot` / `openai`.")
CONFIG = typer.Option(None, "--config", dir_okay=False, help="Read this config.toml instead of the default.")
SET = typer.Option([], "--set", "-c", metavar="NAME=VALUE",
                   help="One setting for this run, e.g. -c max_steps=50 -c approval_mode=auto-edit.")
SANDBOX = typer.Option(None, "--sandbox", metavar="MODE",
                       help="Confine the agent's shell: workspace-write (default), read-only or off.")
ALLOW_NETWORK = typer.Option(False, "--allow-network", help="Let the sandboxed shell reach the network.")
ALLOW_DESTRUCTIVE = typer.Option(False, "--allow-destructive",
                                 help="Run commands that destroy work (rm -rf ~, git reset --hard, ...) without "
                                      "asking in --yes and headless runs; otherwise they are refused.")
NO_MCP = typer.Option(False, "--no-mcp", help="Leave out the tools of the MCP servers in config.toml.")
WORKSPACE = typer.Argument(Path("."), exists=True, file_okay=False, resolve_path=True,
                           help="The repository to work in (default: the current directory).")


def fail(message: str, code: int) -> typer.Exit:
    """Say what is wrong on stderr; raise the result to exit with `code`."""
    typer.echo(f"kcode: {message}", err=True)
    return typer.Exit(code)


def load(profile: str | None, model: str | None, base_url: str | None, config: Path | None = None,
         assignments: list[str] | None = None) -> Settings:
    """The settings of a run: environment, config file, profile, then the command's own options."""
    from kcode.config import Overrides, load_settings

    return load_settings(os.environ, Overrides(profile=profile, model=model, base_url=base_url, config_file=config,
                                               settings=Overrides.parse_set(assignments or [])))
