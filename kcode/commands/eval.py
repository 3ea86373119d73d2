"""`kcode eval run` and `kcode eval grade`: SWE-bench runs and their official grading, with progress on stderr.

The work is the harness's (`swe_harness/`); this module turns options into its inputs, shows progress (a
bar on stderr, or JSON lines on stdout with `--json`) and picks the exit code (see `EvalExit`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO, TypeVar

from rich.console import Console

from kcode.config import Settings, config_dir, data_dir, secret_names
from kcode.ui.eval_progress import EvalProgress, JsonEvalEvents
from swe_harness.dataset import Instance, load_dataset, select_instances
from swe_harness.environment_specs import load_specs
from swe_harness.errors import HarnessError
from swe_harness.events import HarnessSink
from swe_harness.executors import make_executor
from swe_harness.grading import grade_all
from swe_harness.network import no_network_prefix
from swe_harness.predictions import Prediction, load_predictions
from swe_harness.report import resolved_rate
from swe_harness.run import PREDICTIONS_FILE, RunOutcome, run_all
from swe_harness.testbed import TestbedOptions, require_sandbox

Result = TypeVar("Result")


class EvalExit(IntEnum):
    """What `kcode eval run` and `kcode eval grade` exit with."""

    OK = 0
    """Every selected instance ran (or was graded) to an outcome."""
    INSTANCE_ERRORS = 1
    """The command finished, but some instances ended in an error (see their `error.log` / `result.json`)."""
    USAGE = 2
    """Bad arguments, dataset, predictions or configuration; nothing ran."""
    INTERRUPTED = 130
    """Ctrl-C: finished instances are kept, and rerunning the same command resumes."""


@dataclass(frozen=True)
class Selection:
    """Which instances of which dataset, and where their repositories and outputs live."""

    dataset: Path
    ids: Sequence[str]
    pattern: str | None
    slice_spec: str | None
    repos: Path
    output: Path
    cache: Path
    workers: int
    json_events: bool
    env_specs: Path | None = None
    executor: str = "local"
    """Where instances run: `local` threads or `ray` tasks (see `swe_harness.executors`)."""
    ray_address: str | None = None

    def instances(self) -> list[Instance]:
        """The selected instances; a bad dataset, selection or spec file fails here, before any work."""
        if self.env_specs is not None:
            load_specs(self.env_specs)
        return select_instances(load_dataset(self.dataset), self.ids, pattern=self.pattern,
                                slice_spec=self.slice_spec)


def eval_run(selection: Selection, settings: Settings, *, max_steps: int | None, environ: Mapping[str, str],
             stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> EvalExit:
    """Let the agent work on every selected instance; predictions and trajectories go to the output."""
    from kcode.backends.factory import make_backend

    instances = selection.instances()
    require_sandbox()  # the agent's shell never runs unconfined: that fails here, once, not per instance
    make_backend(settings)  # a model that cannot be configured fails here, once, not per instance
    hidden = settings.secret_variables()
    executor = make_executor(selection.executor, selection.ray_address)

    def work(emit: HarnessSink) -> list[RunOutcome]:
        with testbed_options(selection, environ, hidden) as options:
            return run_all(instances, settings, options, selection.output, workers=selection.workers, emit=emit,
                           max_steps=max_steps, executor=executor)

    outcomes = with_progress(selection, len(instances), ("submitted", "limit", "error"), "run", work,
                              stdout, stderr)
    errors = sum(1 for outcome in outcomes if outcome.status == "error")
    message = (f"predictions: {selection.output / PREDICTIONS_FILE}; "
               f"grade them with: kcode eval grade --predictions {selection.output / PREDICTIONS_FILE} ...")
    finish_line(selection, {"type": "run_finished", "errors": errors, "predictions":
                        str(selection.output / PREDICTIONS_FILE)}, message, stdout, stderr)
    return EvalExit.INSTANCE_ERRORS if errors else EvalExit.OK


def eval_grade(selection: Selection, predictions_file: Path | None, *, timeout_s: float,
               environ: Mapping[str, str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> EvalExit:
    """Grade predictions (or, with no file, every instance's gold patch) and write the summary."""
    instances = selection.instances()
    predictions = load_predictions(predictions_file) if predictions_file is not None else \
        {i.instance_id: Prediction(i.instance_id, "gold", i.gold_patch) for i in instances}
    known = {instance.instance_id for instance in load_dataset(selection.dataset)}
    unknown = sorted(set(predictions) - known)
    if unknown:  # as SWE-bench: predictions for another dataset are a mistake worth stopping for
        raise HarnessError(f"{len(unknown)} prediction(s) name instances that are not in {selection.dataset}, "
                           f"e.g. {', '.join(unknown[:3])}")
    prefix = no_network_prefix()
    graded = [i for i in instances if i.instance_id in predictions]
    executor = make_executor(selection.executor, selection.ray_address)

    def work(emit: HarnessSink) -> dict[str, Any]:
        with testbed_options(selection, environ, secret_names(environ)) as options:
            return grade_all(instances, predictions, options, selection.output, workers=selection.workers,
                             network_prefix=prefix, timeout_s=timeout_s, emit=emit, executor=executor)

    summary = with_progress(selection, len(graded), ("resolved", "unresolved", "empty", "error"), "grade", work,
                             stdout, stderr)
    message = (f"resolved {summary['resolved_instances']} of {summary['total_instances']} "
               f"({resolved_rate(summary):.1%}); unresolved {summary['unresolved_instances']}, empty "
               f"{summary['empty_patch_instances']}, error {summary['error_instances']}, without a prediction "
               f"{len(summary['incomplete_ids'])}; summary: {selection.output / 'summary.json'}")
    finish_line(selection, {"type": "summary", **summary}, message, stdout, stderr)
    return EvalExit.INSTANCE_ERRORS if summary["error_instances"] else EvalExit.OK


@contextmanager
def testbed_options(selection: Selection, environ: Mapping[str, str],
                     hidden_variables: frozenset[str]) -> Iterator[TestbedOptions]:
    """The options of this run, with a scratch root of its own that is removed afterwards."""
    try:
        selection.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot use {selection.output} as the output directory: {exc.strerror}") from None
    base_env = {name: value for name, value in environ.items() if name not in hidden_variables}
    private = (selection.output, config_dir(environ), data_dir(environ))
    with tempfile.TemporaryDirectory(prefix="kcode-eval-") as scratch:
        yield TestbedOptions(repos_dir=selection.repos, cache_dir=selection.cache, base_env=base_env,
                             extra_specs=selection.env_specs, scratch_root=Path(scratch), private_dirs=private)


def with_progress(selection: Selection, total: int, verdicts: Sequence[str], title: str,
                   work: Callable[[HarnessSink], Result], stdout: TextIO, stderr: TextIO) -> Result:
    """`work(sink)` with the sink drawing a progress bar on stderr, or writing JSON events to stdout."""
    sink: HarnessSink
    display: AbstractContextManager[Any]
    if selection.json_events:
        sink = JsonEvalEvents(stdout)
        display = nullcontext()
    else:
        progress = EvalProgress(Console(file=stderr, highlight=False), total, verdicts, title)
        sink, display = progress, progress
    with display:
        return work(sink)


def finish_line(selection: Selection, record: dict[str, Any], message: str, stdout: TextIO, stderr: TextIO) -> None:
    """A line for whoever runs the command: `record` as JSON on stdout with --json, else `message` on stderr."""
    if selection.json_events:
        stdout.write(json.dumps(record) + "\n")
        stdout.flush()
    else:
        stderr.write(f"kcode eval: {message}\n")
