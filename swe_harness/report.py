"""The run summary in the official SWE-bench shape, from the verdicts of the instances graded.

The keys and their meaning follow SWE-bench's `make_run_report` (schema 2): `completed` means graded to a
verdict, `incomplete` means no prediction was given, empty patches are counted apart and not graded, and
errors (a patch that does not apply, an environment that does not build) are neither resolved nor unresolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SCHEMA_VERSION = 2

INSTANCES_DIR = "instances"
"""Under the output directory, one folder per instance holds everything about it."""
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.json"
TEST_LOG_FILE = "test_output.txt"
PATCH_FILE = "patch.diff"
ERROR_FILE = "error.log"


def run_summary(instance_ids: Iterable[str], submitted: Iterable[str], verdicts: Mapping[str, str]) -> dict[str, Any]:
    """The summary of grading `instance_ids`, of which `submitted` had predictions, with these verdicts
    (`resolved`, `unresolved`, `empty` or `error`; a submitted instance without one counts as an error)."""
    ids = list(instance_ids)
    submitted_ids = sorted(set(submitted) & set(ids))
    by_verdict: dict[str, list[str]] = {"resolved": [], "unresolved": [], "empty": [], "error": []}
    for instance_id in submitted_ids:
        by_verdict[verdicts.get(instance_id, "error")].append(instance_id)
    completed = sorted(by_verdict["resolved"] + by_verdict["unresolved"])
    incomplete = sorted(set(ids) - set(submitted_ids))
    return {
        "total_instances": len(ids),
        "submitted_instances": len(submitted_ids),
        "completed_instances": len(completed),
        "resolved_instances": len(by_verdict["resolved"]),
        "unresolved_instances": len(by_verdict["unresolved"]),
        "empty_patch_instances": len(by_verdict["empty"]),
        "error_instances": len(by_verdict["error"]),
        "completed_ids": completed,
        "incomplete_ids": incomplete,
        "empty_patch_ids": sorted(by_verdict["empty"]),
        "submitted_ids": submitted_ids,
        "resolved_ids": sorted(by_verdict["resolved"]),
        "unresolved_ids": sorted(by_verdict["unresolved"]),
        "error_ids": sorted(by_verdict["error"]),
        "schema_version": SCHEMA_VERSION,
    }


def resolved_rate(summary: Mapping[str, Any]) -> float:
    """Resolved over all instances of the set, as SWE-bench reports it (not over the ones submitted)."""
    total = int(summary["total_instances"])
    return int(summary["resolved_instances"]) / total if total else 0.0
