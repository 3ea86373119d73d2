"""`kcode eval swe-dev`: SWE-Dev tasks run by the agent and scored by their hidden tests' pass rate.

The work is `swe_harness.swe_dev_run`'s; this module checks the inputs before anything runs, shares `kcode eval
run`'s progress display and testbed options (a private scratch root, the output and kcode's own directories
hidden), and prints the mean pass rate.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from kcode.commands.eval import EvalExit, Selection, finish_line, testbed_options, with_progress
from kcode.config import Settings
from swe_harness.environment_specs import load_specs
from swe_harness.events import HarnessSink
from swe_harness.network import no_network_prefix
from swe_harness.swe_dev import load_tasks, select_tasks
from swe_harness.swe_dev_run import SUMMARY_FILE, ScoringOptions, run_swe_dev
from swe_harness.testbed import require_sandbox


def eval_swe_dev(selection: Selection, settings: Settings, *, max_steps: int | None, timeout_s: float,
                 environ: Mapping[str, str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> EvalExit:
    """Run and score the selected tasks of `selection.dataset` (a SWE-Dev task file or a directory of them)."""
    from kcode.backends.factory import make_backend

    if selection.env_specs is not None:
        load_specs(selection.env_specs)
    tasks = select_tasks(load_tasks(selection.dataset), selection.ids)
    require_sandbox()  # the agent's shell never runs unconfined: that fails here, once, not per task
    make_backend(settings)  # a model that cannot be configured fails here, once, not per task
    scoring = ScoringOptions(network_prefix=tuple(no_network_prefix()), timeout_s=timeout_s)

    def work(emit: HarnessSink) -> dict[str, Any]:
        with testbed_options(selection, environ, settings.secret_variables()) as options:
            return run_swe_dev(tasks, settings, options, selection.output, scoring=scoring,
                               workers=selection.workers, emit=emit, max_steps=max_steps)

    summary = with_progress(selection, len(tasks), ("scored", "error"), "swe-dev", work, stdout, stderr)
    errors = len(summary["error_ids"])
    message = (f"mean pass rate {summary['mean_pass_rate']:.3f} over {summary['total_tasks']} task(s), "
               f"{errors} in error; summary: {selection.output / SUMMARY_FILE}")
    finish_line(selection, {"type": "swe_dev_summary", **summary}, message, stdout, stderr)
    return EvalExit.INSTANCE_ERRORS if errors else EvalExit.OK
