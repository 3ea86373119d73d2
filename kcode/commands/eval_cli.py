"""`kcode eval`: SWE-bench and SWE-Dev runs, grading, reports and environments, as typer commands.

The work lives in the `kcode.commands.eval*` modules, imported inside each command; here are only the options.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kcode.commands.cli_options import BASE_URL, CONFIG, MODEL, NO_MCP, PROFILE, SET, fail, load

if TYPE_CHECKING:
    from kcode.commands.eval import Selection

eval_app = typer.Typer(help="SWE-bench: run the agent on instances and grade patches with the official grader.",
                       no_args_is_help=True)

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
    no_mcp: bool = NO_MCP,
    model: str | None = MODEL,
    base_url: str | None = BASE_URL,
    profile: str | None = PROFILE,
    config: Path | None = CONFIG,
    assignments: list[str] = SET,
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
        raise _eval_exit(lambda: run(selection, load(profile, model, base_url, config, overrides),
                                     max_steps=max_steps, environ=os.environ))
    raise _eval_exit(lambda: eval_runs(selection, load(profile, model, base_url, config, overrides), runs=runs,
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
        raise fail("give exactly one of --predictions FILE or --gold", EvalExit.USAGE)
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
        raise fail("give at least one graded run directory (RUN_DIR...)", EvalExit.USAGE)
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
    model: str | None = MODEL,
    base_url: str | None = BASE_URL,
    profile: str | None = PROFILE,
    config: Path | None = CONFIG,
    assignments: list[str] = SET,
) -> None:
    """Run the agent on SWE-Dev tasks with their tests hidden, then score each by its hidden tests' pass rate.

    Exit codes: 0 every task was scored, 1 some ended in an error, 2 usage or configuration error, 130
    interrupted (rerun the same command to resume).
    """
    from kcode.commands.eval_swe_dev import eval_swe_dev as swe_dev

    limits = _limit_settings(cost_limit, time_limit)
    selection = _selection(tasks, ids, None, None, repos, output, cache, workers, json_events, env_specs)
    raise _eval_exit(lambda: swe_dev(selection, load(profile, model, base_url, config, [*assignments, *limits]),
                                     max_steps=max_steps, timeout_s=timeout, environ=os.environ))


def _eval_exit(command: Callable[[], int]) -> typer.Exit:
    """Run an eval command to its exit: a KcodeError is a usage error, and Ctrl-C says how to resume."""
    from kcode.commands.eval import EvalExit
    from kcode.errors import KcodeError

    try:
        return typer.Exit(int(command()))
    except KcodeError as exc:
        return fail(str(exc), EvalExit.USAGE)
    except KeyboardInterrupt:
        return fail("interrupted; finished instances are kept, rerun the same command to resume",
                     EvalExit.INTERRUPTED)
