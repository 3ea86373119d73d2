"""Several graded runs of one instance set compared: each run's resolved rate, their mean ± sample std, the
rate per repository and the instances that flip between runs, as the K2 card reports repeated runs.

A run is any directory `kcode eval grade` wrote (`summary.json`, and `instances/ID/report.json` for each
graded instance), whatever produced its predictions; a directory holding `run-1`, `run-2`, ... stands for
those runs. Each run's resolved rate is its summary's (`report.resolved_rate`: resolved over every instance
of the set), so the figures here match what `grade` printed for each run.

Runs over different instance sets are refused, with the instances that differ named, rather than compared
over their intersection: a rate over a smaller set is a different number from the one each run's summary
holds, and a spread computed over mismatched sets would look like the model's variance when it is the
selection's. A run stopped early still lists its unfinished instances (without a prediction, they count as
not resolved), so it compares fine.

The JSON document (`report_document`, printed by `kcode eval report --json`), schema version 1:

    {"schema_version": 1,
     "instances": 3,                      # size of the instance set every run covers
     "runs": [{"label": "out/run-1", "path": "/abs/out/run-1", "resolved": 2, "total": 3,
               "resolved_rate": 0.6667}, ...],                       # in the order given
     "mean_resolved_rate": 0.5,           # mean of the runs' rates
     "std_resolved_rate": 0.2357,         # sample standard deviation (n - 1); null with one run
     "std_kind": "sample",
     "repositories": [{"repo": "acme/calc", "instances": 2, "resolved_rates": [1.0, 0.5],   # one per run
                       "mean_resolved_rate": 0.75}, ...],            # sorted by repo
     "flipping_instances": [{"instance_id": "acme__calc-2",
                             "verdicts": ["resolved", "unresolved"]}, ...]}   # sorted by id

A verdict is `resolved`, `unresolved`, `empty` (empty patch), `error` or `missing` (no prediction).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from swe_harness.errors import HarnessError
from swe_harness.report import SUMMARY_FILE, resolved_rate

Verdict = Literal["resolved", "unresolved", "empty", "error", "missing"]
DOCUMENT_SCHEMA_VERSION = 1
_VERDICT_LISTS: tuple[tuple[str, Verdict], ...] = (
    ("resolved_ids", "resolved"), ("unresolved_ids", "unresolved"), ("empty_patch_ids", "empty"),
    ("error_ids", "error"), ("incomplete_ids", "missing"))
"""Which list of `summary.json` gives which verdict; together they cover every instance of the set."""
_RUN_DIR = re.compile(r"run-(\d+)")


@dataclass(frozen=True)
class GradedRun:
    """One graded directory: its summary and the verdict on every instance of its set."""

    label: str
    """The directory as the user named it, to show."""
    path: Path
    summary: Mapping[str, Any]
    verdicts: Mapping[str, Verdict]

    @property
    def resolved_rate(self) -> float:
        return resolved_rate(self.summary)


@dataclass(frozen=True)
class RepositoryRates:
    repo: str
    instances: int
    resolved_rates: tuple[float, ...]
    """One per run, in the runs' order."""

    @property
    def mean_resolved_rate(self) -> float:
        return statistics.fmean(self.resolved_rates)


@dataclass(frozen=True)
class RunsReport:
    runs: tuple[GradedRun, ...]
    instance_ids: tuple[str, ...]
    repositories: tuple[RepositoryRates, ...]
    flipping: tuple[str, ...]
    """Instances resolved in some runs and not in others, sorted."""

    @property
    def rates(self) -> list[float]:
        return [run.resolved_rate for run in self.runs]

    @property
    def mean_resolved_rate(self) -> float:
        return statistics.fmean(self.rates)

    @property
    def std_resolved_rate(self) -> float | None:
        """The sample standard deviation over runs; None with one run, where it is undefined."""
        return statistics.stdev(self.rates) if len(self.runs) > 1 else None


def repository_of(instance_id: str) -> str:
    """`django__django-11099` → `django/django`; an id not in that shape is its own repository."""
    name = instance_id.rsplit("-", 1)[0] if re.search(r"-\d+$", instance_id) else instance_id
    return name.replace("__", "/", 1)


def run_directories(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """(label, directory) of each run: a graded directory, or each `run-N` under one that holds them."""
    if not paths:
        raise HarnessError("give at least one graded run directory")
    found: list[tuple[str, Path]] = []
    for path in paths:
        if (path / SUMMARY_FILE).is_file():
            found.append((str(path), path))
            continue
        children = sorted((int(m.group(1)), child) for child in (path.iterdir() if path.is_dir() else ())
                          if (m := _RUN_DIR.fullmatch(child.name)) and (child / SUMMARY_FILE).is_file())
        if not children:
            raise HarnessError(f"{path} is not a graded run: it has no {SUMMARY_FILE} (nor run-N directories "
                               f"with one); grade it with kcode eval grade first")
        found.extend((str(child), child) for _, child in children)
    return found


def load_run(label: str, path: Path) -> GradedRun:
    """The run graded into `path`; a summary that is missing or not SWE-bench's shape is an error naming it."""
    try:
        summary = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path} is not a graded run: cannot read {SUMMARY_FILE} ({exc})") from None
    if not isinstance(summary, dict):
        summary = {}
    missing = [key for key, _ in _VERDICT_LISTS if not isinstance(summary.get(key), list)]
    if missing or not isinstance(summary.get("total_instances"), int):
        raise HarnessError(f"{path / SUMMARY_FILE} is not a SWE-bench run summary (it lacks total_instances or "
                           f"{', '.join(missing) or 'the id lists'})")
    verdicts: dict[str, Verdict] = {str(i): verdict for key, verdict in _VERDICT_LISTS for i in summary[key]}
    if len(verdicts) != summary["total_instances"]:
        raise HarnessError(f"{path / SUMMARY_FILE}: its id lists name {len(verdicts)} instances, but "
                           f"total_instances is {summary['total_instances']}")
    return GradedRun(label, path.resolve(), summary, verdicts)


def load_runs(paths: Sequence[Path]) -> list[GradedRun]:
    return [load_run(label, path) for label, path in run_directories(paths)]


def compare_runs(runs: Sequence[GradedRun]) -> RunsReport:
    """The report over `runs`, which must cover the same instances (see the module's docstring for why)."""
    if not runs:
        raise HarnessError("give at least one graded run directory")
    first = runs[0]
    for run in runs[1:]:
        _require_same_instances(first, run)
    ids = tuple(sorted(first.verdicts))
    by_repo: dict[str, list[str]] = {}
    for instance_id in ids:
        by_repo.setdefault(repository_of(instance_id), []).append(instance_id)
    repositories = tuple(
        RepositoryRates(repo, len(members), tuple(
            sum(run.verdicts[i] == "resolved" for i in members) / len(members) for run in runs))
        for repo, members in sorted(by_repo.items()))
    flipping = tuple(i for i in ids if len({run.verdicts[i] == "resolved" for run in runs}) == 2)
    return RunsReport(tuple(runs), ids, repositories, flipping)


def report_document(report: RunsReport) -> dict[str, Any]:
    """The report as the JSON document the module's docstring describes."""
    return {
        "schema_version": DOCUMENT_SCHEMA_VERSION,
        "instances": len(report.instance_ids),
        "runs": [{"label": run.label, "path": str(run.path), "resolved": int(run.summary["resolved_instances"]),
                  "total": int(run.summary["total_instances"]), "resolved_rate": run.resolved_rate}
                 for run in report.runs],
        "mean_resolved_rate": report.mean_resolved_rate,
        "std_resolved_rate": report.std_resolved_rate,
        "std_kind": "sample",
        "repositories": [{"repo": r.repo, "instances": r.instances, "resolved_rates": list(r.resolved_rates),
                          "mean_resolved_rate": r.mean_resolved_rate} for r in report.repositories],
        "flipping_instances": [{"instance_id": i, "verdicts": [run.verdicts[i] for run in report.runs]}
                               for i in report.flipping],
    }


def _require_same_instances(first: GradedRun, other: GradedRun) -> None:
    only_first = sorted(set(first.verdicts) - set(other.verdicts))
    only_other = sorted(set(other.verdicts) - set(first.verdicts))
    if not only_first and not only_other:
        return
    parts = [f"{len(ids)} only in {run.label} (e.g. {', '.join(ids[:3])})"
             for run, ids in ((first, only_first), (other, only_other)) if ids]
    raise HarnessError(f"runs {first.label} and {other.label} cover different instances: {'; '.join(parts)}; "
                       f"compare runs of the same instance set")


def percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def mean_and_spread(report: RunsReport) -> str:
    """`50.0% ± 25.00 pp (mean ± sample std over 3 runs)`; with one run, says the std is undefined."""
    std = report.std_resolved_rate
    if std is None:
        return f"{percent(report.mean_resolved_rate)} (one run: the sample std is undefined)"
    return f"{percent(report.mean_resolved_rate)} ± {100 * std:.2f} pp (mean ± sample std over {len(report.runs)} runs)"
