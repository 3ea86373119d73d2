"""The `kcode` command line: parses arguments, loads settings and hands off to the command's module.

Start-up stays light: the command modules (and with them rich's widgets, the openai SDK or torch) are
imported inside the command that needs them, so `kcode --help` costs only typer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kcode import __version__
from kcode.commands.mcp import mcp_app  # options only: the MCP SDK is imported when it runs

if TYPE_CHECKING:
    from kcode.commands.eval import Selection
    from kcode.config import Settings

app = typer.Typer(
    name="kcode",
    help="A terminal coding agent for Kimi K2 and any OpenAI-compatible model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_MODEL = typer.Option(None, "--model", "-m", help="Model id; `local` or `local:PATH` runs kcode's own engine.")
_BASE_URL = typer.Option(None, "--base-url", help="OpenAI-compatible API base URL, e.g. http://localhost:8000/v1.")
_PROFILE = typer.Option(None, "--profile", "-p", help="A profile from config.toml, or `moonshot` / `openai`.")
_CONFIG = typer.Option(None, "--config", dir_okay=False, help="Read this config.toml instead of the default.")
_SET = typer.Option([], "--set", "-c", metavar="NAME=VALUE",
                    help="One setting for this run, e.g. -c max_steps=50 -c approval_mode=auto-edit.")
_SANDBOX = typer.Option(None, "--sandbox", metavar="MODE",
                        help="Confine the agent's shell: workspace-write (default), read-only or off.")
_ALLOW_NETWORK = typer.Option(False, "--allow-network", help="Let the sandboxed shell reach the network.")
_ALLOW_DESTRUCTIVE = typer.Option(False, "--allow-destructive",
                                  help="Run commands that destroy work (rm -rf ~, git reset --hard, ...) without "
                                       "asking in --yes and headless runs; otherwise they are refused.")
_NO_MCP = typer.Option(False, "--no-mcp", help="Leave out the tools of the MCP servers in config.toml.")
_WORKSPACE = typer.Argument(Path("."), exists=True, file_okay=False, resolve_path=True,
                            help="The repository to work in (default: the current directory).")


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


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"kcode: {message}", err=True)
    return typer.Exit(code)


def _load(profile: str | None, model: str | None, base_url: str | None, config: Path | None = None,
          assignments: list[str] | None = None) -> Settings:
    from kcode.config import Overrides, load_settings

    return load_settings(os.environ, Overrides(profile=profile, model=model, base_url=base_url, config_file=config,
                                               settings=Overrides.parse_set(assignments or [])))


@app.command()
def chat(
    path: Path = _WORKSPACE,
    model: str | None = _MODEL,
    base_url: str | None = _BASE_URL,
    profile: str | None = _PROFILE,
    resume: str | None = typer.Option(None, "--resume", "-r", metavar="[ID]",
                                      help="Continue session ID; with no ID, this workspace's newest session."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run commands and edits without asking (yolo)."),
    auto_edit: bool = typer.Option(False, "--auto-edit", help="Make edits without asking; still ask for commands."),
    sandbox_mode: str | None = _SANDBOX,
    allow_network: bool = _ALLOW_NETWORK,
    allow_destructive: bool = _ALLOW_DESTRUCTIVE,
    no_mcp: bool = _NO_MCP,
    config: Path | None = _CONFIG,
    assignments: list[str] = _SET,
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
            raise _fail("stdin is not a terminal and brought no message: pipe one in, or run kcode chat in a "
                        "terminal", 2)
        settings = _load(profile, model, base_url, config, assignments)
        mode = "yolo" if yes else "auto-edit" if auto_edit else settings.approval_mode
        run_chat(settings, ChatOptions(root=path, approval_mode=mode, resume=resume, piped_message=piped),
                 reload=lambda name: _load(profile, name, base_url, config, assignments))
    except KcodeError as exc:
        raise _fail(str(exc), 2) from None


@app.command()
def fix(
    path: Path = _WORKSPACE,
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
    sandbox_mode: str | None = _SANDBOX,
    allow_network: bool = _ALLOW_NETWORK,
    allow_destructive: bool = _ALLOW_DESTRUCTIVE,
    no_mcp: bool = _NO_MCP,
    model: str | None = _MODEL,
    base_url: str | None = _BASE_URL,
    profile: str | None = _PROFILE,
    config: Path | None = _CONFIG,
    assignments: list[str] = _SET,
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
        raise _fail(where, ExitCode.USAGE)
    try:
        text = task if task is not None else task_file.read_text(encoding="utf-8") if task_file is not None \
            else piped_text(sys.stdin)
    except UnicodeDecodeError:
        raise _fail(f"the task file {task_file} is not UTF-8 text", ExitCode.USAGE) from None
    except KcodeError as exc:
        raise _fail(str(exc), ExitCode.USAGE) from None
    if text is None:  # stdin is the terminal: nothing was piped
        raise _fail(where, ExitCode.USAGE)
    for target, flag in ((output_patch, "--output-patch"), (trajectory, "--trajectory")):
        if target is not None and not target.resolve().parent.is_dir():
            raise _fail(f"{flag}: the directory of {target} does not exist", ExitCode.USAGE)
    if not text.strip():
        raise _fail("the task is empty", ExitCode.USAGE)
    try:
        settings = _load(profile, model, base_url, config,
                         [*assignments, *_safety_settings(sandbox_mode, allow_network, allow_destructive, no_mcp)])
        code = run_fix(settings, FixOptions(root=path, task=text, allow_commands=yes, max_steps=max_steps,
                                            output_patch=output_patch, trajectory=trajectory,
                                            json_events=json_events))
    except BackendError as exc:
        raise _fail(str(exc), ExitCode.MODEL_FAILURE) from None
    except KcodeError as exc:  # configuration, git, the workspace: nothing the model did
        raise _fail(str(exc), ExitCode.USAGE) from None
    raise typer.Exit(int(code))


@app.command()
def sessions(
    path: Path = _WORKSPACE,
    all_workspaces: bool = typer.Option(False, "--all", "-a", help="List the sessions of every workspace."),
) -> None:
    """List chat sessions, newest first; `kcode chat --resume ID` continues one."""
    from kcode.commands.sessions import print_sessions
    from kcode.config import data_dir

    print_sessions(data_dir(os.environ) / "sessions", None if all_workspaces else path)


@app.command()
def checkpoints(
    path: Path = _WORKSPACE,
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
        raise _fail(str(exc), 2) from None


eval_app = typer.Typer(help="SWE-bench: run the agent on instances and grade patches with the official grader.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")

_DATASET = typer.Option(..., "--dataset", "-d", exists=True, help="SWE-bench instances: .parquet, .json, .jsonl, "
                        "or a directory saved by `datasets`.")
_IDS = typer.Argument(None, metavar="[IDS]...", help="Instance ids to take (default: all).")
_PATTERN = typer.Option(None, "--pattern", help="Take the instances whose id matches this glob, e.g. 'psf__*'.")
_SLICE = typer.Option(None, "--slice", metavar="A:B", help="Take this slice of the selected instances, e.g. 0:50.")
_REPOS = typer.Option(..., "--repos", file_okay=False, help="Mirrors named owner__name (bare or not, or symlinks); "
                      "missing ones are cloned here.")
_OUTPUT = typer.Option(..., "--output", "-o", file_okay=False, help="Where results go; rerunning resumes.")
_WORKERS = typer.Option(1, "--workers", "-w", min=1, help="Instances worked on at once.")
_CACHE = typer.Option(None, "--cache-dir", file_okay=False,
                      help="Where environments are built and reused (default: $XDG_CACHE_HOME/kcode/swe).")
_JSON = typer.Option(False, "--json", help="Print one JSON event per line on stdout instead of a progress bar.")
_ENV_SPECS = typer.Option(None, "--env-specs", exists=True, dir_okay=False,
                          help="A TOML file of environment specs for repositories the built-in ones lack.")
_EXECUTOR = typer.Option("local", "--executor", metavar="local|ray",
                         help="Where instances run: threads here, or tasks on a Ray cluster (kcode[cluster]); with "
                              "ray, --workers is the number of instances in flight on the cluster.")
_RAY_ADDRESS = typer.Option(None, "--ray-address", metavar="ADDR",
                            help="The Ray cluster to join: auto, ray://HOST:10001 or HOST:6379 (default: start one "
                                 "on this machine).")
_GRADE_TIMEOUT = typer.Option(1800.0, "--timeout", min=1.0, help="Seconds the tests of one instance may run.")


def _limit_settings(cost_limit: float | None, time_limit: float | None) -> list[str]:
    """`--cost-limit` and `--time-limit` of one instance or task as the settings they set."""
    return ([f"cost_limit_usd={cost_limit}"] * (cost_limit is not None)
            + [f"time_limit_s={time_limit}"] * (time_limit is not None))


def _selection(dataset: Path, ids: list[str] | None, pattern: str | None, slice_spec: str | None, repos: Path,
               output: Path, cache: Path | None, workers: int, json_events: bool, env_specs: Path | None,
               executor: str = "local", ray_address: str | None = None) -> Selection:
    from kcode.commands.eval import Selection
    from kcode.config import cache_dir

    return Selection(dataset=dataset, ids=ids or [], pattern=pattern, slice_spec=slice_spec, repos=repos.resolve(),
                     output=output.resolve(), cache=(cache or cache_dir(os.environ) / "swe").resolve(),
                     workers=workers, json_events=json_events,
                     env_specs=env_specs.resolve() if env_specs is not None else None, executor=executor,
                     ray_address=ray_address)


@eval_app.command("run")
def eval_run(
    dataset: Path = _DATASET,
    ids: list[str] | None = _IDS,
    pattern: str | None = _PATTERN,
    slice_spec: str | None = _SLICE,
    repos: Path = _REPOS,
    output: Path = _OUTPUT,
    workers: int = _WORKERS,
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Most model calls per instance."),
    cost_limit: float | None = typer.Option(None, "--cost-limit", min=0.0, help="US dollars per instance."),
    time_limit: float | None = typer.Option(None, "--time-limit", min=1.0, help="Seconds per instance."),
    runs: int | None = typer.Option(None, "--runs", min=1, metavar="N",
                                    help="Run the selection N times into OUTPUT/run-1..N, grade each, and print "
                                         "the mean ± sample std of the resolved rate."),
    timeout: float = typer.Option(1800.0, "--timeout", min=1.0,
                                  help="With --runs: seconds the tests of one instance may run when grading."),
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
    cache: Path | None = _CACHE,
    env_specs: Path | None = _ENV_SPECS,
    json_events: bool = _JSON,
    no_mcp: bool = _NO_MCP,
    model: str | None = _MODEL,
    base_url: str | None = _BASE_URL,
    profile: str | None = _PROFILE,
    config: Path | None = _CONFIG,
    assignments: list[str] = _SET,
) -> None:
    """Run the agent on SWE-bench instances: predictions.jsonl and one trajectory per instance.

    With --runs N, each run goes to OUTPUT/run-K and is graded there (--timeout applies to its tests).
    Exit codes: 0 every instance reached an outcome, 1 some ended in an error, 2 usage or configuration
    error, 130 interrupted (rerun the same command to resume).
    """
    from kcode.commands.eval import eval_run as run
    from kcode.commands.eval_runs import eval_runs

    limits = _limit_settings(cost_limit, time_limit)
    selection = _selection(dataset, ids, pattern, slice_spec, repos, output, cache, workers, json_events, env_specs,
                           executor, ray_address)
    overrides = [*assignments, *limits, *["mcp=false"] * no_mcp]
    if runs is None:
        raise _eval_exit(lambda: run(selection, _load(profile, model, base_url, config, overrides),
                                     max_steps=max_steps, environ=os.environ))
    raise _eval_exit(lambda: eval_runs(selection, _load(profile, model, base_url, config, overrides), runs=runs,
                                       max_steps=max_steps, timeout_s=timeout, environ=os.environ))


@eval_app.command("grade")
def eval_grade(
    dataset: Path = _DATASET,
    ids: list[str] | None = _IDS,
    pattern: str | None = _PATTERN,
    slice_spec: str | None = _SLICE,
    predictions: Path | None = typer.Option(None, "--predictions", exists=True, dir_okay=False,
                                            help="predictions.jsonl (instance_id, model_name_or_path, model_patch)."),
    gold: bool = typer.Option(False, "--gold", help="Grade each instance's own gold patch, to check environments."),
    repos: Path = _REPOS,
    output: Path = _OUTPUT,
    workers: int = _WORKERS,
    timeout: float = _GRADE_TIMEOUT,
    executor: str = _EXECUTOR,
    ray_address: str | None = _RAY_ADDRESS,
    cache: Path | None = _CACHE,
    env_specs: Path | None = _ENV_SPECS,
    json_events: bool = _JSON,
) -> None:
    """Grade patches with SWE-bench's own grader: a report.json per instance and summary.json.

    Exit codes: 0 every instance reached a verdict, 1 some ended in an error, 2 usage or configuration
    error, 130 interrupted (rerun the same command to resume).
    """
    from kcode.commands.eval import EvalExit
    from kcode.commands.eval import eval_grade as grade

    if (predictions is None) == (not gold):
        raise _fail("give exactly one of --predictions FILE or --gold", EvalExit.USAGE)
    raise _eval_exit(lambda: grade(
        _selection(dataset, ids, pattern, slice_spec, repos, output, cache, workers, json_events, env_specs,
                   executor, ray_address),
        predictions, timeout_s=timeout, environ=os.environ))


@eval_app.command("report")
def eval_report(
    run_dirs: list[Path] | None = typer.Argument(None, metavar="RUN_DIR",
                                                 help="Graded output directories (or one holding run-1, run-2, ...)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as one JSON document instead."),
    html: Path | None = typer.Option(None, "--html", dir_okay=False, metavar="FILE",
                                     help="Also write a self-contained HTML report with every trajectory."),
) -> None:
    """Compare graded runs: each run's resolved rate, mean ± sample std, per repository, and what flips.

    Exit codes: 0 report printed, 2 a directory is not a graded run or the runs cover different instances.
    """
    from kcode.commands.eval import EvalExit
    from kcode.commands.eval_report import eval_report as report

    if not run_dirs:
        raise _fail("give at least one graded run directory (RUN_DIR...)", EvalExit.USAGE)
    raise _eval_exit(lambda: report(run_dirs, json_output=json_output, html=html))


@eval_app.command("envs")
def eval_envs(
    dataset: Path = _DATASET,
    ids: list[str] | None = _IDS,
    pattern: str | None = _PATTERN,
    slice_spec: str | None = _SLICE,
    repos: Path = _REPOS,
    workers: int = _WORKERS,
    cache: Path | None = _CACHE,
    env_specs: Path | None = _ENV_SPECS,
    gold: Path | None = typer.Option(None, "--gold", exists=True, file_okay=False,
                                     help="A directory `kcode eval grade --gold` wrote: report which instances "
                                          "their environment validates."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
) -> None:
    """Build the environments of the selected instances ahead of a run, and report what they validate.

    Exit codes: 0 every environment is built, 1 some could not be built (the reasons are listed), 2 usage or
    configuration error, 130 interrupted (rerun to go on; built environments are kept).
    """
    from kcode.commands.eval_envs import eval_envs as envs
    from kcode.config import cache_dir

    raise _eval_exit(lambda: envs(dataset, ids or [], pattern=pattern, slice_spec=slice_spec, repos=repos.resolve(),
                                  cache=(cache or cache_dir(os.environ) / "swe").resolve(), workers=workers,
                                  env_specs=env_specs.resolve() if env_specs is not None else None,
                                  gold=gold.resolve() if gold is not None else None, json_output=json_output,
                                  environ=os.environ))


@eval_app.command("swe-dev")
def eval_swe_dev(
    tasks: Path = typer.Option(..., "--tasks", "-t", exists=True, help="A SWE-Dev task (*-metadata.json), a JSON "
                               "list or JSON lines of them, or a directory of task files."),
    ids: list[str] | None = typer.Argument(None, metavar="[IDS]...", help="Task names (sample_name) to take."),
    repos: Path = typer.Option(..., "--repos", file_okay=False, help="Mirrors named owner__name; a task's repository "
                               "is its `repo` field, or swe-dev/<package_name>."),
    output: Path = _OUTPUT,
    workers: int = _WORKERS,
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Most model calls per task."),
    cost_limit: float | None = typer.Option(None, "--cost-limit", min=0.0, help="US dollars per task."),
    time_limit: float | None = typer.Option(None, "--time-limit", min=1.0, help="Seconds per task."),
    timeout: float = _GRADE_TIMEOUT,
    cache: Path | None = _CACHE,
    env_specs: Path | None = _ENV_SPECS,
    json_events: bool = _JSON,
    model: str | None = _MODEL,
    base_url: str | None = _BASE_URL,
    profile: str | None = _PROFILE,
    config: Path | None = _CONFIG,
    assignments: list[str] = _SET,
) -> None:
    """Run the agent on SWE-Dev tasks with their tests hidden, then score each by its hidden tests' pass rate.

    Exit codes: 0 every task was scored, 1 some ended in an error, 2 usage or configuration error, 130
    interrupted (rerun the same command to resume).
    """
    from kcode.commands.eval_swe_dev import eval_swe_dev as swe_dev

    limits = _limit_settings(cost_limit, time_limit)
    selection = _selection(tasks, ids, None, None, repos, output, cache, workers, json_events, env_specs)
    raise _eval_exit(lambda: swe_dev(selection, _load(profile, model, base_url, config, [*assignments, *limits]),
                                     max_steps=max_steps, timeout_s=timeout, environ=os.environ))


def _eval_exit(command: Callable[[], int]) -> typer.Exit:
    """Run an eval command to its exit: a KcodeError is a usage error, and Ctrl-C says how to resume."""
    from kcode.commands.eval import EvalExit
    from kcode.errors import KcodeError

    try:
        return typer.Exit(int(command()))
    except KcodeError as exc:
        return _fail(str(exc), EvalExit.USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted; finished instances are kept, rerun the same command to resume",
                     EvalExit.INTERRUPTED)


engine_app = typer.Typer(help="The local K2 / DeepSeek-V3 engine's own tools.", no_args_is_help=True)
app.add_typer(engine_app, name="engine")
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
        raise _fail(str(exc), 2) from None
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
