"""`kcode eval run` and `kcode eval grade`: SWE-bench runs and their official grading, with progress on stderr.

The work is the harness's (`swe_harness/`); this module turns options into its inputs, shows progress (a
bar on stderr, or JSON lines on stdout with `--json`) and picks the exit code (see `EvalExit`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO, TypeVar

from rich.console import Console

from kcode.config import API_KEY_VARIABLES, Settings
from kcode.ui.eval_progress import EvalProgress, JsonEvalEvents
from swe_harness.dataset import Instance, load_dataset, select_instances
from swe_harness.events import HarnessSink
from swe_harness.grading import grade_all
from swe_harness.network import no_network_prefix
from swe_harness.predictions import Prediction, load_predictions
from swe_harness.report import resolved_rate
from swe_harness.run import PREDICTIONS_FILE, RunOutcome, run_all
from swe_harness.testbed import TestbedOptions

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

    def instances(self) -> list[Instance]:
        return select_instances(load_dataset(self.dataset), self.ids, pattern=self.pattern,
                                slice_spec=self.slice_spec)


def eval_run(selection: Selection, settings: Settings, *, max_steps: int | None, stdout: TextIO = sys.stdout,
             stderr: TextIO = sys.stderr) -> EvalExit:
    """Let the agent work on every selected instance; predictions and trajectories go to the output."""
    from kcode.backends.factory import make_backend

    instances = selection.instances()
    prefix = no_network_prefix()
    make_backend(settings)  # a model that cannot be configured fails here, once, not per instance
    options = _testbed_options(selection, settings.secret_variables())

    def work(emit: HarnessSink) -> list[RunOutcome]:
        return run_all(instances, settings, options, selection.output, workers=selection.workers,
                       network_prefix=prefix, emit=emit, max_steps=max_steps)

    outcomes = _with_progress(selection, len(instances), ("submitted", "limit", "error"), "run", work,
                              stdout, stderr)
    errors = sum(1 for outcome in outcomes if outcome.status == "error")
    message = (f"predictions: {selection.output / PREDICTIONS_FILE}; "
               f"grade them with: kcode eval grade --predictions {selection.output / PREDICTIONS_FILE} ...")
    _finish(selection, {"type": "run_finished", "errors": errors, "predictions":
                        str(selection.output / PREDICTIONS_FILE)}, message, stdout, stderr)
    return EvalExit.INSTANCE_ERRORS if errors else EvalExit.OK


def eval_grade(selection: Selection, predictions_file: Path | None, *, timeout_s: float,
               environ: Mapping[str, str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> EvalExit:
    """Grade predictions (or, with no file, every instance's gold patch) and write the summary."""
    instances = selection.instances()
    predictions = load_predictions(predictions_file) if predictions_file is not None else \
        {i.instance_id: Prediction(i.instance_id, "gold", i.gold_patch) for i in instances}
    prefix = no_network_prefix()
    hidden = API_KEY_VARIABLES | {name for name in environ if name.endswith("_API_KEY")}
    options = _testbed_options(selection, hidden)
    graded = [i for i in instances if i.instance_id in predictions]

    def work(emit: HarnessSink) -> dict[str, Any]:
        return grade_all(instances, predictions, options, selection.output, workers=selection.workers,
                         network_prefix=prefix, timeout_s=timeout_s, emit=emit)

    summary = _with_progress(selection, len(graded), ("resolved", "unresolved", "empty", "error"), "grade", work,
                             stdout, stderr)
    message = (f"resolved {summary['resolved_instances']} of {summary['total_instances']} "
               f"({resolved_rate(summary):.1%}); unresolved {summary['unresolved_instances']}, empty "
               f"{summary['empty_patch_instances']}, error {summary['error_instances']}, without a prediction "
               f"{len(summary['incomplete_ids'])}; summary: {selection.output / 'summary.json'}")
    _finish(selection, {"type": "summary", **summary}, message, stdout, stderr)
    return EvalExit.INSTANCE_ERRORS if summary["error_instances"] else EvalExit.OK


def _testbed_options(selection: Selection, hidden: frozenset[str] | set[str]) -> TestbedOptions:
    base_env = {name: value for name, value in os.environ.items() if name not in hidden}
    return TestbedOptions(repos_dir=selection.repos, cache_dir=selection.cache, base_env=base_env,
                          extra_specs=selection.env_specs)


def _with_progress(selection: Selection, total: int, verdicts: Sequence[str], title: str,
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


def _finish(selection: Selection, record: dict[str, Any], message: str, stdout: TextIO, stderr: TextIO) -> None:
    if selection.json_events:
        stdout.write(json.dumps(record) + "\n")
        stdout.flush()
    else:
        stderr.write(f"kcode eval: {message}\n")
