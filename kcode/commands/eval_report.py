"""`kcode eval report`: compare graded runs in tables on stdout, as a JSON document, or in an HTML page.

The figures are `swe_harness.runs_report`'s (its docstring holds the JSON schema); this module only draws
them. Bad input (a directory that is not a graded run, runs over different instances) raises `HarnessError`,
which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kcode.commands.eval import EvalExit
from swe_harness.errors import HarnessError
from swe_harness.html_report import write_html_report
from swe_harness.runs_report import RunsReport, compare_runs, load_runs, mean_and_spread, percent, report_document


def eval_report(run_dirs: Sequence[Path], *, json_output: bool, html: Path | None,
                stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> EvalExit:
    """Report on the graded runs in `run_dirs`; with `html`, also write the page there."""
    if html is not None and not html.resolve().parent.is_dir():
        raise HarnessError(f"--html: the directory of {html} does not exist")
    report = compare_runs(load_runs(run_dirs))
    if json_output:
        stdout.write(json.dumps(report_document(report), indent=2) + "\n")
    else:
        print_report(report, Console(file=stdout, highlight=False, soft_wrap=False))
    if html is not None:
        write_html_report(report, html)
        stderr.write(f"kcode eval: report written to {html}\n")
    return EvalExit.OK


def print_report(report: RunsReport, console: Console) -> None:
    """The runs, the mean ± sample std, the rates per repository and the instances that flip."""
    runs = Table("#", "run", "resolved", "instances", "rate", title="Runs", title_justify="left")
    for number, run in enumerate(report.runs, 1):
        _add_row(runs, str(number), run.label, str(run.summary["resolved_instances"]),
                 str(run.summary["total_instances"]), percent(run.resolved_rate))
    console.print(runs)
    console.print(f"resolved rate: {mean_and_spread(report)}", markup=False)
    repos = Table("repository", "instances", *(f"run {i}" for i in range(1, len(report.runs) + 1)), "mean",
                  title="Per repository", title_justify="left")
    for repo in report.repositories:
        _add_row(repos, repo.repo, str(repo.instances), *map(percent, repo.resolved_rates),
                 percent(repo.mean_resolved_rate))
    console.print(repos)
    if not report.flipping:
        console.print("No instance flips between runs.")
        return
    flips = Table("instance", *(f"run {i}" for i in range(1, len(report.runs) + 1)),
                  title=f"Instances that flip between runs ({len(report.flipping)})", title_justify="left")
    for instance_id in report.flipping:
        _add_row(flips, instance_id, *(run.verdicts[instance_id] for run in report.runs))
    console.print(flips)


def _add_row(table: Table, *cells: str) -> None:
    """A row of plain text: names from repositories and paths are never read as rich markup."""
    table.add_row(*map(Text, cells))
