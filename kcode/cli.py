"""The `kcode` command line: parses arguments, loads settings and hands off to the command's module.

Start-up stays light: the command modules (and with them rich's widgets, the openai SDK or torch) are
imported inside the command that needs them, so `kcode --help` costs only typer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from kcode import __version__
from kcode.commands.cli_options import (
    ALLOW_DESTRUCTIVE,
    ALLOW_NETWORK,
    BASE_URL,
    CONFIG,
    MODEL,
    NO_MCP,
    PROFILE,
    SANDBOX,
    SET,
    WORKSPACE,
    fail,
    load,
)
from kcode.commands.eval_cli import eval_app
from kcode.commands.mcp import mcp_app  # options only: the MCP SDK is imported when it runs
from kcode.commands.serve import serve_command  # options only: the engine is imported when it runs

app = typer.Typer(
    name="kcode",
    help="A terminal coding agent for Kimi K2 and any OpenAI-compatible model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _safety_settings(mode: str | None, allow_network: bool, allow_destructive: bool, no_mcp: bool) -> list[str]:
    """`--sandbox`, `--allow-network`, `--allow-destructive` and `--no-mcp` as the settings they set."""
    return ([f"sandbox={mode}"] * (mode is not None) + ["allow_network=true"] * allow_network
            + ["allow_destructive=true"] * allow_destructive + ["mcp=false"] * no_mcp)


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


@app.command()
def chat(
    path: Path = WORKSPACE,
    model: str | None = MODEL,
    base_url: str | None = BASE_URL,
    profile: str | None = PROFILE,
    resume: str | None = typer.Option(None, "--resume", "-r", metavar="[ID]",
                                      help="Continue session ID; with no ID, this workspace's newest session."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run commands and edits without asking (yolo)."),
    auto_edit: bool = typer.Option(False, "--auto-edit", help="Make edits without asking; still ask for commands."),
    sandbox_mode: str | None = SANDBOX,
    allow_network: bool = ALLOW_NETWORK,
    allow_destructive: bool = ALLOW_DESTRUCTIVE,
    no_mcp: bool = NO_MCP,
    config: Path | None = CONFIG,
    assignments: list[str] = SET,
) -> None:
    """Chat with the agent in your terminal; it asks before it edits or runs anything.

    With a message piped to stdin (`echo "explain main.py" | kcode chat .`) it answers that message and
    leaves; what it would ask about is refused unless --yes or --auto-edit allows it.
    """
    from kcode.commands.chat import ChatOptions, run_chat
    from kcode.commands.piped_input import piped_text
    from kcode.errors import KcodeError

    assignments = [*assignments, *_safety_settings(sandbox_mode, allow_network, allow_destructive, no_mcp)]
    try:
        piped = piped_text(sys.stdin)
        if piped is not None and not piped.strip():
            raise fail("stdin is not a terminal and brought no message: pipe one in, or run kcode chat in a "
                        "terminal", 2)
        settings = load(profile, model, base_url, config, assignments)
        mode = "yolo" if yes else "auto-edit" if auto_edit else settings.approval_mode
        run_chat(settings, ChatOptions(root=path, approval_mode=mode, resume=resume, piped_message=piped),
                 reload=lambda name: load(profile, name, base_url, config, assignments))
    except KcodeError as exc:
        raise fail(str(exc), 2) from None


@app.command()
def fix(
    path: Path = WORKSPACE,
    task: str | None = typer.Option(None, "--task", "-t", help="What to fix, in words."),
    task_file: Path | None = typer.Option(None, "--task-file", exists=True, dir_okay=False,
                                          help="Read the task from a file (an issue text, say)."),
    yes: bool = typer.Option(False, "--yes", "-y",
                             help="Let the agent run shell commands; without it, commands are refused."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Most model calls before stopping."),
    output_patch: Path | None = typer.Option(None, "--output-patch", dir_okay=False,
                                             help="Also write the diff to this file."),
    trajectory: Path | None = typer.Option(None, "--trajectory", dir_okay=False,
                                           help="Write every event of the run to this JSONL file."),
    json_events: bool = typer.Option(False, "--json", help="Print one JSON event per line instead of the diff."),
    sandbox_mode: str | None = SANDBOX,
    allow_network: bool = ALLOW_NETWORK,
    allow_destructive: bool = ALLOW_DESTRUCTIVE,
    no_mcp: bool = NO_MCP,
    model: str | None = MODEL,
    base_url: str | None = BASE_URL,
    profile: str | None = PROFILE,
    config: Path | None = CONFIG,
    assignments: list[str] = SET,
) -> None:
    """Fix a task headless: progress on stderr, the diff of every change on stdout.

    The task comes from --task, --task-file or, without either, what is piped to stdin.

    Exit codes: 0 finished with changes, 1 finished without changes, 2 usage or configuration error,
    3 the model API failed after retries, 4 a limit stopped the agent, 130 interrupted.
    """
    from kcode.commands.fix import ExitCode, FixOptions, run_fix
    from kcode.commands.piped_input import piped_text
    from kcode.errors import BackendError, KcodeError

    where = "give the task with one of --task TEXT, --task-file FILE or text piped to stdin"
    if task is not None and task_file is not None:
        raise fail(where, ExitCode.USAGE)
    try:
        text = task if task is not None else task_file.read_text(encoding="utf-8") if task_file is not None \
            else piped_text(sys.stdin)
    except UnicodeDecodeError:
        raise fail(f"the task file {task_file} is not UTF-8 text", ExitCode.USAGE) from None
    except KcodeError as exc:
        raise fail(str(exc), ExitCode.USAGE) from None
    if text is None:  # stdin is the terminal: nothing was piped
        raise fail(where, ExitCode.USAGE)
    for target, flag in ((output_patch, "--output-patch"), (trajectory, "--trajectory")):
        if target is not None and not target.resolve().parent.is_dir():
            raise fail(f"{flag}: the directory of {target} does not exist", ExitCode.USAGE)
    if not text.strip():
        raise fail("the task is empty", ExitCode.USAGE)
    try:
        settings = load(profile, model, base_url, config,
                         [*assignments, *_safety_settings(sandbox_mode, allow_network, allow_destructive, no_mcp)])
        code = run_fix(settings, FixOptions(root=path, task=text, allow_commands=yes, max_steps=max_steps,
                                            output_patch=output_patch, trajectory=trajectory,
                                            json_events=json_events))
    except BackendError as exc:
        raise fail(str(exc), ExitCode.MODEL_FAILURE) from None
    except KcodeError as exc:  # configuration, git, the workspace: nothing the model did
        raise fail(str(exc), ExitCode.USAGE) from None
    raise typer.Exit(int(code))


@app.command()
def sessions(
    path: Path = WORKSPACE,
    all_workspaces: bool = typer.Option(False, "--all", "-a", help="List the sessions of every workspace."),
) -> None:
    """List chat sessions, newest first; `kcode chat --resume ID` continues one."""
    from kcode.commands.sessions import print_sessions
    from kcode.config import data_dir

    print_sessions(data_dir(os.environ) / "sessions", None if all_workspaces else path)


@app.command()
def checkpoints(
    path: Path = WORKSPACE,
    restore: str | None = typer.Option(None, "--restore", metavar="ID",
                                       help="Put the files back as checkpoint ID (a prefix will do) saved them."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Show this many, newest first."),
) -> None:
    """List the checkpoints kcode took before each step of the agent, or restore one (itself undoable)."""
    from kcode.commands.checkpoints import run_checkpoints
    from kcode.config import data_dir
    from kcode.errors import KcodeError

    try:
        run_checkpoints(data_dir(os.environ), path, restore=restore, limit=limit)
    except KcodeError as exc:
        raise fail(str(exc), 2) from None


app.add_typer(eval_app, name="eval")

engine_app = typer.Typer(help="The local K2 / DeepSeek-V3 engine's own tools.", no_args_is_help=True)
app.add_typer(engine_app, name="engine")
app.command("serve")(serve_command)
app.add_typer(mcp_app, name="mcp")


@engine_app.command("make-tiny")
def make_tiny_checkpoint(
    directory: Path = typer.Argument(..., file_okay=False, help="Where to write the checkpoint (created)."),
    preset: str = typer.Option("k2", help="Architecture to shrink: k2, moonlight or deepseek_v3."),
    dtype: str = typer.Option("bf16", help="Weight format: bf16, fp32, or fp8 (block-quantised as K2 ships)."),
    shards: int = typer.Option(1, min=1, help="Safetensors files to split the weights over."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
) -> None:
    """Write a tiny random checkpoint in the real on-disk format, for tests, benchmarks and the offline demo."""
    from kcode.commands.engine_tools import write_tiny_checkpoint
    from kcode.errors import ConfigError

    try:
        root = write_tiny_checkpoint(directory, preset=preset, dtype=dtype, shards=shards, seed=seed)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"Wrote a tiny {preset} checkpoint ({dtype}) to {root}; try: kcode chat --model local:{root}")


def _bare_resume_means_last(argv: list[str]) -> list[str]:
    """`--resume` with no id continues the newest session: typer options cannot have optional values."""
    fixed = list(argv)
    for i, arg in enumerate(fixed):
        if arg in ("--resume", "-r") and (i + 1 == len(fixed) or fixed[i + 1].startswith("-")):
            fixed.insert(i + 1, "last")
            break
    return fixed


def main() -> None:
    app(args=_bare_resume_means_last(sys.argv[1:]), prog_name="kcode")
