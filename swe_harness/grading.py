"""Grading one prediction as SWE-bench does, without Docker, so that the verdict is the official grader's.

In a fresh testbed: apply the model patch with SWE-bench's fallback chain, run the instance's eval script
(reinstall, reset the test files, apply `test_patch`, then the tests between the official markers with no
network) under a timeout, then hand the log to `swebench`'s own `make_test_spec` and `get_eval_report`. What this module
decides itself is only how the commands run; what counts as passing is the official package's call. A repository
SWE-bench does not know brings a parser of ours (log_parsers.py), added to the official registry by name, so its
logs go through the same report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from swe_harness.dataset import Instance
from swe_harness.errors import InstanceError
from swe_harness.eval_script import local_eval_script, split_at_tests
from swe_harness.events import HarnessSink, InstanceFinished, InstanceStarted
from swe_harness.executors import Executor, LocalExecutor
from swe_harness.log_parsers import register_generic_parsers, registry_name
from swe_harness.network import with_network
from swe_harness.predictions import Prediction
from swe_harness.report import (
    ERROR_FILE,
    INSTANCES_DIR,
    PATCH_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    TEST_LOG_FILE,
    run_summary,
)
from swe_harness.testbed import Testbed, TestbedOptions, open_testbed
from swe_harness.workers import Cancellation, record_crash

Verdict = Literal["resolved", "unresolved", "empty", "error"]

APPLY_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("git", "apply", "--verbose"),
    ("git", "apply", "--verbose", "--3way"),
    ("git", "apply", "--verbose", "--reject"),
    ("patch", "--batch", "--forward", "--fuzz=5", "-p1", "-i"),
)
"""SWE-bench's order of attempts; the tree is reset between them, since a failed one can leave half a patch."""
APPLY_PATCH_FAIL = ">>>>> Patch Apply Failed"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"


@dataclass(frozen=True)
class GradeOutcome:
    """The verdict on one prediction and where its evidence lies."""

    instance_id: str
    verdict: Verdict
    detail: str = ""
    """Why an error is one, or which tests failed; empty when resolved."""
    seconds: float = 0.0


def grade_prediction(instance: Instance, patch: str | None, model_name: str, options: TestbedOptions,
                     out_dir: Path, *, network_prefix: Sequence[str], timeout_s: float,
                     cancellation: Cancellation | None = None) -> GradeOutcome:
    """Grade `patch` for `instance`, writing `report.json`, `test_output.txt`, `eval.sh` and `patch.diff` into
    `out_dir`. As in the official harness, an empty patch is not run (it is counted apart), and a patch that
    does not apply, tests that do not finish in `timeout_s` or a testbed that cannot be made are errors (the
    reason goes to `error.log`)."""
    started = time.monotonic()
    if not patch:
        return GradeOutcome(instance.instance_id, "empty", "the prediction's patch is empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (REPORT_FILE, TEST_LOG_FILE, ERROR_FILE):  # an earlier grading's verdict must not survive
        (out_dir / stale).unlink(missing_ok=True)
    (out_dir / PATCH_FILE).write_text(patch, encoding="utf-8", errors="surrogateescape")
    try:
        with open_testbed(instance, options, out_dir) as testbed:
            report = _grade_in(testbed, patch, model_name, out_dir, network_prefix, timeout_s,
                               cancellation or Cancellation())
    except InstanceError as exc:
        (out_dir / ERROR_FILE).write_text(exc.reason + "\n", encoding="utf-8")
        return GradeOutcome(instance.instance_id, "error", exc.reason, time.monotonic() - started)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return outcome_from_report(instance.instance_id, report, time.monotonic() - started)


def outcome_from_report(instance_id: str, report: Mapping[str, Any], seconds: float = 0.0) -> GradeOutcome:
    """The verdict a written `report.json` holds: resolved, or unresolved with the failing tests named."""
    entry = report[instance_id]
    if entry.get("resolved"):
        return GradeOutcome(instance_id, "resolved", "", seconds)
    if not entry.get("patch_successfully_applied"):
        return GradeOutcome(instance_id, "unresolved", "no test results could be read from the log", seconds)
    status = entry.get("tests_status", {})
    failed = [*status.get("FAIL_TO_PASS", {}).get("failure", []), *status.get("PASS_TO_PASS", {}).get("failure", [])]
    detail = f"{len(failed)} test(s) failed, e.g. {failed[0]}" if failed else "not every required test passed"
    return GradeOutcome(instance_id, "unresolved", detail, seconds)


def _grade_in(testbed: Testbed, patch: str, model_name: str, out_dir: Path, network_prefix: Sequence[str],
              timeout_s: float, cancellation: Cancellation) -> dict[str, Any]:
    from swebench.harness.grading import get_eval_report  # heavy: only grading pays for it
    from swebench.harness.utils import make_test_spec

    instance = testbed.instance
    test_log = out_dir / TEST_LOG_FILE
    applied_with = apply_patch(testbed.workspace, out_dir / PATCH_FILE, testbed.variables)
    if applied_with is None:
        test_log.write_text(f"{APPLY_PATCH_FAIL}\n", encoding="utf-8")
        raise InstanceError(instance.instance_id, "the patch does not apply (git apply, --3way, --reject and "
                                                  "patch --fuzz=5 all failed)")
    defaults = {"image": "", "eval_type": _eval_type(instance), "log_parser": testbed.spec.log_parser}
    given = {key: value for key, value in instance.grading_record().items() if value is not None}
    record = {**defaults, **given, "eval_script": local_eval_script(instance, testbed.spec, testbed.workspace)}
    record["log_parser"] = _registered_parser(instance, str(record["log_parser"]))
    test_spec = make_test_spec(record)
    (out_dir / "eval.sh").write_text(test_spec.eval_script, encoding="utf-8")
    script, env, prefix = _staged_script(test_spec.eval_script, testbed.scratch, testbed.variables,
                                         testbed.launcher(network_prefix),
                                         testbed.launcher(with_network(network_prefix)))
    eval_started = time.monotonic()
    timed_out = run_script(script, testbed.workspace, env, test_log, prefix, timeout_s, cancellation)
    if cancellation.cancelled:
        raise InstanceError(instance.instance_id, "interrupted before the tests finished")
    if timed_out:
        raise InstanceError(instance.instance_id, f"the tests did not finish within {timeout_s:g} s")
    test_s = time.monotonic() - eval_started
    prediction = {"instance_id": instance.instance_id, "model_name_or_path": model_name, "model_patch": patch}
    report: dict[str, Any] = get_eval_report(test_spec, prediction, str(test_log), include_tests_status=True)
    report[instance.instance_id].update({
        "patch_applied_with": " ".join(applied_with),
        "environment": {"python": testbed.environment.python_version,
                        "requested_python": testbed.environment.requested_python},
        "seconds": {"setup": round(testbed.setup_s, 2), "environment_build": round(testbed.environment.build_s, 2),
                    "eval_script": round(test_s, 2)},
    })
    return report


def _staged_script(eval_script: str, where: Path, variables: Mapping[str, str], launcher: Sequence[str],
                   online_launcher: Sequence[str]) -> tuple[Path, dict[str, str], tuple[str, ...]]:
    """The script to start in `where` (inside the testbed, which the tests can see), its environment and its
    launcher: the part before the tests runs through `online_launcher`, so it may reach the package index (a
    patch may add a dependency, and SWE-bench's container is online) but sees no private directory; then it
    `exec`s the tests through `launcher`, offline, so exported variables and the directory carry over."""
    install_part, test_part = split_at_tests(eval_script)
    tests = where / "eval_tests.sh"
    tests.write_text(test_part, encoding="utf-8")
    if not install_part:
        return tests, dict(variables), tuple(launcher)
    enter = shlex.join(["env", "PIP_NO_INDEX=1", *launcher, "bash", str(tests)])
    script = where / "eval_install.sh"
    script.write_text(f"{install_part}exec {enter}\n", encoding="utf-8")
    return script, {name: value for name, value in variables.items() if name != "PIP_NO_INDEX"}, tuple(online_launcher)


def apply_patch(workspace: Path, patch_file: Path, env: Mapping[str, str]) -> tuple[str, ...] | None:
    """Apply `patch_file` with the first command of the chain that succeeds; None when none does. As in
    SWE-bench, a chain whose every command failed still counts if the patch turns out applied already."""
    for attempt, command in enumerate(APPLY_COMMANDS):
        if attempt:
            _reset(workspace, env)
        if _succeeds([*command, str(patch_file)], workspace, env):
            return command
    applied = ("git", "apply", "--check", "--reverse")
    return applied if _succeeds([*applied, str(patch_file)], workspace, env) else None


def _succeeds(command: Sequence[str], workspace: Path, env: Mapping[str, str]) -> bool:
    done = subprocess.run(command, cwd=workspace, env=dict(env), capture_output=True, stdin=subprocess.DEVNULL)
    return done.returncode == 0


def run_script(script: Path, workspace: Path, env: Mapping[str, str], log: Path, network_prefix: Sequence[str],
               timeout_s: float, cancellation: Cancellation | None = None) -> bool:
    """Run `script` with bash in `workspace` behind `network_prefix`, its output into `log`; True if it was
    killed at `timeout_s` (the whole process group goes, and the log says so as SWE-bench's does). A
    cancellation kills it too, at once."""
    with log.open("wb") as out:
        process = subprocess.Popen([*network_prefix, "bash", str(script)], cwd=workspace, env=dict(env),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        with (cancellation or Cancellation()).on_cancel(lambda: _signal_group(process, signal.SIGKILL)):
            try:
                process.wait(timeout=timeout_s)
                _signal_group(process, signal.SIGKILL)  # what the tests started and left running goes too
                return False
            except subprocess.TimeoutExpired:
                _kill_group(process)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n{TESTS_TIMEOUT} after {timeout_s:g} seconds\n")
    return True


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the script's whole process group, SIGKILL to what is left after two seconds."""
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=2)
    _signal_group(process, signal.SIGKILL)  # children that outlived their parent too
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _reset(workspace: Path, env: Mapping[str, str]) -> None:
    for command in (["git", "checkout", "--", "."], ["git", "clean", "-fdq"]):
        subprocess.run(command, cwd=workspace, env=dict(env), capture_output=True, stdin=subprocess.DEVNULL)


def _registered_parser(instance: Instance, log_parser: str) -> str:
    """The registry name of the row's (or else the spec's) parser, ours registered first; InstanceError when
    SWE-bench has no parser of that name."""
    from swebench.harness.log_parsers import PARSER_REGISTRY

    register_generic_parsers(PARSER_REGISTRY)
    name = registry_name(log_parser)
    if name not in PARSER_REGISTRY:
        raise InstanceError(instance.instance_id, f"no log parser {log_parser!r}: give pytest, junit or one of "
                                                  f"SWE-bench's ({', '.join(sorted(PARSER_REGISTRY)[:3])}, ...)")
    return name


def _eval_type(instance: Instance) -> str:
    from swebench.harness.constants import FAIL_ONLY_REPOS

    return "fail_only" if instance.repo in FAIL_ONLY_REPOS else "pass_and_fail"


def grade_all(instances: Sequence[Instance], predictions: Mapping[str, Prediction], options: TestbedOptions,
              output: Path, *, workers: int, network_prefix: Sequence[str], timeout_s: float,
              emit: HarnessSink, executor: Executor | None = None) -> dict[str, Any]:
    """Grade every instance that has a prediction, skipping those whose report for the same patch exists;
    write `output/summary.json` and return it. The `executor` (local threads by default) decides where
    instances are graded."""
    outcomes: dict[str, GradeOutcome] = {}
    pending: list[Instance] = []
    for instance in instances:
        prediction = predictions.get(instance.instance_id)
        if prediction is None:
            continue
        if not prediction.model_patch:
            outcomes[instance.instance_id] = GradeOutcome(instance.instance_id, "empty", "the patch is empty")
            emit(InstanceFinished(instance.instance_id, "empty", "the patch is empty"))
            continue
        earlier = _earlier_outcome(instance.instance_id, prediction, output / INSTANCES_DIR / instance.instance_id)
        if earlier is None:
            pending.append(instance)
        else:
            outcomes[instance.instance_id] = earlier
            emit(InstanceFinished(instance.instance_id, earlier.verdict, earlier.detail, resumed=True))

    work = partial(_grade_one, options=options, output=output, network_prefix=network_prefix, timeout_s=timeout_s)
    items = [(instance, predictions[instance.instance_id]) for instance in pending]
    for outcome in (executor or LocalExecutor()).map_unordered(work, items, workers, emit, Cancellation()):
        outcomes[outcome.instance_id] = outcome
        emit(InstanceFinished(outcome.instance_id, outcome.verdict, outcome.detail, outcome.seconds))
    summary = run_summary([i.instance_id for i in instances], predictions,
                          {instance_id: outcome.verdict for instance_id, outcome in outcomes.items()})
    output.mkdir(parents=True, exist_ok=True)
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _grade_one(item: tuple[Instance, Prediction], emit: HarnessSink, cancellation: Cancellation, *,
               options: TestbedOptions, output: Path, network_prefix: Sequence[str], timeout_s: float) -> GradeOutcome:
    """One prediction, on whichever machine the executor chose: a crash costs this instance, not the run."""
    instance, prediction = item
    emit(InstanceStarted(instance.instance_id))
    out_dir = output / INSTANCES_DIR / instance.instance_id
    try:
        return grade_prediction(instance, prediction.model_patch, prediction.model_name_or_path, options, out_dir,
                                network_prefix=network_prefix, timeout_s=timeout_s, cancellation=cancellation)
    except Exception as exc:  # a bug
        return GradeOutcome(instance.instance_id, "error", record_crash(exc, out_dir / ERROR_FILE))


def _earlier_outcome(instance_id: str, prediction: Prediction, out_dir: Path) -> GradeOutcome | None:
    """The verdict an earlier `grade` wrote for this very patch, if any; errors are always tried again."""
    try:
        if (out_dir / PATCH_FILE).read_text(encoding="utf-8", errors="surrogateescape") != prediction.model_patch:
            return None
        return outcome_from_report(instance_id, json.loads((out_dir / REPORT_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError):
        return None
