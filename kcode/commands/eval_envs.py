"""`kcode eval envs`: build the environments a dataset needs before running it, and report what they validate.

A line on stderr as each environment is ready; then, on stdout, a table of the environments (built, found
cached, or failed with the reason) and, given `--gold DIR` (a directory `kcode eval grade --gold` wrote), how many
instances are validated, failed and not tried, with every failure's reason. `--json` prints one JSON document
instead of the tables:

    {"environments": [{"repo", "version", "python", "status": "built" | "cached" | "failed", "seconds",
                       "instance_ids": [...], "reason"}],
     "instances": [{"instance_id", "validation": "validated" | "failed" | "environment failed" | "not tried",
                    "reason"}],
     "counts": {"validated": int, "failed": int, "environment failed": int, "not tried": int}}
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kcode.commands.eval import EvalExit
from kcode.config import secret_names
from swe_harness.dataset import load_dataset, select_instances
from swe_harness.environment_specs import load_specs
from swe_harness.errors import HarnessError
from swe_harness.prebuild import EnvironmentStatus, InstanceValidation, build_environments, validate
from swe_harness.report import SUMMARY_FILE
from swe_harness.testbed import TestbedOptions

_ORDER = ("validated", "failed", "environment failed", "not tried")


def eval_envs(dataset: Path, ids: Sequence[str], *, pattern: str | None, slice_spec: str | None, repos: Path,
              cache: Path, workers: int, env_specs: Path | None, gold: Path | None, json_output: bool,
              environ: Mapping[str, str], stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> EvalExit:
    """Build every selected instance's environment; exit 1 when any could not be built."""
    if env_specs is not None:
        load_specs(env_specs)
    if gold is not None and not (gold / SUMMARY_FILE).exists():
        raise HarnessError(f"{gold} holds no {SUMMARY_FILE}; give --gold a directory `kcode eval grade --gold` "
                           "wrote")
    instances = select_instances(load_dataset(dataset), ids, pattern=pattern, slice_spec=slice_spec)
    hidden = secret_names(environ)
    options = TestbedOptions(repos_dir=repos, cache_dir=cache, extra_specs=env_specs,
                             base_env={name: value for name, value in environ.items() if name not in hidden})

    def report(status: EnvironmentStatus) -> None:
        stderr.write(f"kcode eval envs: {status.status} {status.repo} {status.version} (python {status.python}, "
                     f"{status.seconds:.0f} s, {len(status.instance_ids)} instance(s))\n")
        stderr.flush()

    statuses = build_environments(instances, options, workers=workers, on_done=report)
    rows = validate(instances, statuses, gold)
    counts: Counter[str] = Counter(row.validation for row in rows)
    if json_output:
        stdout.write(json.dumps({"environments": [asdict(status) for status in statuses],
                                 "instances": [asdict(row) for row in rows],
                                 "counts": {name: counts[name] for name in _ORDER}}) + "\n")
    else:
        _print(Console(file=stdout, highlight=False), statuses, rows, counts, gold is not None)
    return EvalExit.INSTANCE_ERRORS if any(status.status == "failed" for status in statuses) else EvalExit.OK


def _print(console: Console, statuses: Sequence[EnvironmentStatus], rows: Sequence[InstanceValidation],
           counts: Counter[str], graded: bool) -> None:
    table = Table(title="Environments", title_justify="left")
    for column in ("repository", "version", "python", "status", "seconds", "instances"):
        table.add_column(column, justify="right" if column in ("seconds", "instances") else "left")
    for status in statuses:
        style = {"failed": "red", "built": "green"}.get(status.status, "")
        table.add_row(escape(status.repo), escape(status.version), escape(status.python),
                      f"[{style}]{status.status}[/]" if style else status.status, f"{status.seconds:.0f}",
                      str(len(status.instance_ids)))
    console.print(table)
    for status in statuses:
        if status.status == "failed":
            console.print(f"[red]{escape(status.repo)} {escape(status.version)} did not build[/] "
                          f"({len(status.instance_ids)} instance(s)): {escape(status.reason)}", soft_wrap=True)
    total = len(rows)
    if graded:
        console.print(f"validated {counts['validated']} of {total} instances "
                      f"({counts['validated'] / total if total else 0:.1%}); "
                      + ", ".join(f"{name} {counts[name]}" for name in _ORDER[1:]), soft_wrap=True)
        for row in rows:  # those whose environment failed are counted under their environment above
            if row.validation == "failed":
                console.print(f"  {escape(row.instance_id)}: {escape(row.reason.splitlines()[0])}", soft_wrap=True)
    else:
        built = sum(len(s.instance_ids) for s in statuses if s.status != "failed")
        console.print(f"{built} of {total} instances have a built environment; validate them with "
                      "`kcode eval grade --gold ...`, then pass that output as --gold")
