"""The `kcode` command line: parses arguments and hands off to the command's module."""

from __future__ import annotations

import typer

from kcode import __version__

app = typer.Typer(
    name="kcode",
    help="A terminal coding agent for Kimi K2 and any OpenAI-compatible model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kcode {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """kcode reads, edits and runs code in your repository with a model of your choice."""


def main() -> None:
    app()
