"""Environments ahead of time: build every environment a dataset needs, and say which instances they validate.

`kcode eval envs` calls this before long runs, so that workers and runs share environments already built (the
cache is keyed by repository, version, spec and setup commit, and builders take a file lock, so concurrent
builders of one environment build it once). An environment that cannot be built here (a compiler or a system
library missing, an interpreter pyenv lacks) is reported with the end of its build log, for every instance that
needs it; none is skipped silently. Given a directory graded with `--gold`, each instance is then *validated*
(the gold patch resolved it), *failed* (with the grader's reason), or *not tried*.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from swe_harness.dataset import Instance
from swe_harness.environment import ensure_environment
from swe_harness.environment_specs import environment_spec
from swe_harness.errors import HarnessError
from swe_harness.report import ERROR_FILE, INSTANCES_DIR, REPORT_FILE
from swe_harness.repos import find_mirror
from swe_harness.testbed import TestbedOptions, instance_environ
from swe_harness.workers import Cancellation, map_unordered

BuildStatus = Literal["built", "cached", "failed"]
Validation = Literal["validated", "failed", "environment failed", "not tried"]


@dataclass(frozen=True)
class EnvironmentStatus:
    """One environment the selection needs: whether it is there now, and for which instances."""

    repo: str
    version: str
    python: str
    """The interpreter used (or asked for, when the build failed)."""
    status: BuildStatus
    seconds: float
    instance_ids: tuple[str, ...]
    reason: str = ""
    """Why the build failed: the error and the end of the build log."""


@dataclass(frozen=True)
class InstanceValidation:
    instance_id: str
    validation: Validation
    reason: str = ""


def build_environments(instances: Sequence[Instance], options: TestbedOptions, *, workers: int,
                       on_done: Callable[[EnvironmentStatus], None] = lambda status: None,
                       cancellation: Cancellation | None = None) -> list[EnvironmentStatus]:
    """Build (or find built) the environment of every (repository, version, setup commit) among `instances`,
    `workers` at a time; build logs go to the cache's `logs/`."""
    groups: dict[tuple[str, str, str], list[Instance]] = {}
    for instance in instances:
        groups.setdefault((instance.repo, instance.version, instance.environment_setup_commit), []).append(instance)
    environ = instance_environ(options)

    def build(group: list[Instance]) -> EnvironmentStatus:
        status = _build_one(group, options, environ)
        on_done(status)
        return status

    statuses = map_unordered(build, list(groups.values()), workers, cancellation or Cancellation())
    return sorted(statuses, key=lambda status: (status.repo, status.version))


def _build_one(group: Sequence[Instance], options: TestbedOptions, environ: Mapping[str, str]) -> EnvironmentStatus:
    first = group[0]
    ids = tuple(instance.instance_id for instance in group)
    started = time.monotonic()
    python = "?"
    try:
        spec = environment_spec(first.repo, first.version, options.extra_specs)
        python = spec.python
        mirror = find_mirror(options.repos_dir, first.repo, clone_missing=options.clone_missing)
        log = options.cache_dir / "logs" / f"{spec.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        environment = ensure_environment(spec, mirror, first.environment_setup_commit, options.cache_dir, log=log,
                                         environ=environ)
    except HarnessError as exc:
        return EnvironmentStatus(first.repo, first.version, python, "failed", time.monotonic() - started, ids,
                                 str(exc))
    return EnvironmentStatus(first.repo, first.version, environment.python_version,
                             "built" if environment.build_s else "cached", time.monotonic() - started, ids)


def validate(instances: Sequence[Instance], statuses: Sequence[EnvironmentStatus],
             gold_dir: Path | None) -> list[InstanceValidation]:
    """Each instance's standing: validated when `gold_dir` (graded with `--gold`) resolved it, failed with the
    grader's reason, `environment failed` when its environment did not build, `not tried` otherwise."""
    broken = {instance_id: status.reason for status in statuses if status.status == "failed"
              for instance_id in status.instance_ids}
    rows = []
    for instance in instances:
        report = _gold_report(gold_dir, instance.instance_id) if gold_dir is not None else None
        if report is not None and report.get("resolved"):
            rows.append(InstanceValidation(instance.instance_id, "validated"))
        elif instance.instance_id in broken:
            rows.append(InstanceValidation(instance.instance_id, "environment failed", broken[instance.instance_id]))
        elif report is not None:
            rows.append(InstanceValidation(instance.instance_id, "failed", _why_unresolved(report)))
        else:
            error = _gold_error(gold_dir, instance.instance_id) if gold_dir is not None else None
            rows.append(InstanceValidation(instance.instance_id, "failed", error) if error
                        else InstanceValidation(instance.instance_id, "not tried"))
    return rows


def _gold_report(gold_dir: Path, instance_id: str) -> dict[str, Any] | None:
    path = gold_dir / INSTANCES_DIR / instance_id / REPORT_FILE
    if not path.exists():
        return None
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")).get(instance_id, {})
    return report


def _gold_error(gold_dir: Path, instance_id: str) -> str | None:
    """The reason recorded for an instance whose gold grading ended in an error (no report was written)."""
    path = gold_dir / INSTANCES_DIR / instance_id / ERROR_FILE
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else "error"


def _why_unresolved(report: Mapping[str, Any]) -> str:
    if not report.get("patch_successfully_applied"):
        return "the gold patch did not apply, or no test results could be read"
    status = report.get("tests_status", {})
    failed = [*status.get("FAIL_TO_PASS", {}).get("failure", []), *status.get("PASS_TO_PASS", {}).get("failure", [])]
    return f"{len(failed)} test(s) failed with the gold patch, e.g. {failed[0]}" if failed else "not resolved"
