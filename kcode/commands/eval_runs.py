"""`kcode eval run --runs N`: the selection N times into OUTPUT/run-1..N, each graded, then the spread.

An agent's score moves from run to run (sampling, the path it takes), so the K2 card reports the mean and the
sample standard deviation of several full runs. Each run here is a plain `eval run` into its own directory
followed by `eval grade` of the predictions there, so each resumes as those do: a rerun makes no model call
for a finished instance and keeps every verdict already written for the same patch. The figures come from
`swe_harness.runs_report`, as `kcode eval report OUTPUT` prints them in full.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import TextIO

from kcode.commands.eval import EvalExit, Selection, eval_grade, eval_run, finish_line
from kcode.config import Settings
from swe_harness.run import PREDICTIONS_FILE
from swe_harness.runs_report import RunsReport, compare_runs, load_runs, mean_and_spread, percent, report_document


def eval_runs(selection: Selection, settings: Settings, *, runs: int, max_steps: int | None, timeout_s: float,
              environ: Mapping[str, str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> EvalExit:
    """Run and grade the selection `runs` times, then print each run's resolved rate and mean ± sample std.

    Exits 1 when any run or grading had an instance error, as one `eval run` or `eval grade` would.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    selection.instances()  # a bad selection fails once, before run-1 exists
    exits: list[EvalExit] = []
    for number in range(1, runs + 1):
        run = replace(selection, output=selection.output / f"run-{number}")
        finish_line(selection, {"type": "run_started", "run": number, "runs": runs, "output": str(run.output)},
                    f"run {number} of {runs} into {run.output}", stdout, stderr)
        exits.append(eval_run(run, settings, max_steps=max_steps, environ=environ, stdout=stdout, stderr=stderr))
        predictions = run.output / PREDICTIONS_FILE
        predictions.touch()  # every instance may have ended in an error: then there is nothing to grade
        exits.append(eval_grade(run, predictions, timeout_s=timeout_s, environ=environ, stdout=stdout,
                                stderr=stderr))
    report = compare_runs(load_runs([selection.output / f"run-{number}" for number in range(1, runs + 1)]))
    if selection.json_events:
        stdout.write(json.dumps({"type": "runs", **report_document(report)}) + "\n")
    else:
        stdout.write(spread_text(report))
    stdout.flush()
    return EvalExit.INSTANCE_ERRORS if any(code != EvalExit.OK for code in exits) else EvalExit.OK


def spread_text(report: RunsReport) -> str:
    """One line per run with its resolved rate, and one with their mean ± sample standard deviation, written as
    `kcode eval report` writes them."""
    lines = [f"{run.path.name}: resolved {run.summary['resolved_instances']} of {run.summary['total_instances']} "
             f"({percent(run.resolved_rate)})" for run in report.runs]
    lines.append(f"resolved rate: {mean_and_spread(report)}")
    return "".join(f"{line}\n" for line in lines)

