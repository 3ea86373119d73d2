"""Running and scoring SWE-Dev tasks: the agent works as `kcode eval run` has it work, then the hidden tests decide.

Per task, in its own task repository (swe_dev.py): the agent's turn (`run_instance`: same loop, sandbox and
prompt; the requirements document stands where an issue would), its patch appended to `predictions.jsonl`,
then a fresh testbed where the hidden test file runs twice with no network, over the reference code and over the
patch. The tests are read with the generic pytest parser (log_parsers.py), so the spec's `test_cmd` must print
`pytest -rA`'s summary. Rerunning resumes: a scored task is kept, and a task with a prediction is only scored.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from kcode.config import Settings
from swe_harness.dataset import Instance
from swe_harness.errors import HarnessError, InstanceError
from swe_harness.eval_script import END_MARKER, START_MARKER
from swe_harness.events import HarnessSink, InstanceFinished, InstanceStarted, InstanceStep
from swe_harness.grading import apply_patch, run_script
from swe_harness.log_parsers import parse_pytest_log
from swe_harness.predictions import Prediction, PredictionWriter, load_predictions
from swe_harness.report import ERROR_FILE, INSTANCES_DIR, PATCH_FILE, TEST_LOG_FILE
from swe_harness.repos import run_git
from swe_harness.run import PREDICTIONS_FILE, run_instance
from swe_harness.swe_dev import SweDevTask, pass_rate, task_testbed
from swe_harness.testbed import Testbed, TestbedOptions, open_testbed
from swe_harness.workers import Cancellation, map_unordered, record_crash

SCORE_FILE = "swe_dev.json"
SUMMARY_FILE = "swe_dev_summary.json"
REFERENCE_LOG_FILE = "reference_output.txt"

ScoreStatus = Literal["scored", "error"]


@dataclass(frozen=True)
class TaskScore:
    """How one task went: its pass rate and which of the reference's passing tests pass over the patch."""

    task_id: str
    status: ScoreStatus
    pass_rate: float
    passed: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    detail: str = ""
    """Why an error is one, or which test failed first."""
    seconds: float = 0.0


@dataclass(frozen=True)
class ScoringOptions:
    """How the hidden tests run: behind `network_prefix` (no network) and stopped at `timeout_s`."""

    network_prefix: tuple[str, ...]
    timeout_s: float


def run_swe_dev(tasks: Sequence[SweDevTask], settings: Settings, options: TestbedOptions, output: Path, *,
                scoring: ScoringOptions, workers: int, emit: HarnessSink,
                max_steps: int | None = None) -> dict[str, Any]:
    """Run and score every task not scored already; write `output/swe_dev_summary.json` and return it."""
    output.mkdir(parents=True, exist_ok=True)
    predictions = load_predictions(output / PREDICTIONS_FILE) if (output / PREDICTIONS_FILE).exists() else {}
    others = sorted({p.model_name_or_path for p in predictions.values()} - {settings.profile.model})
    if others:  # one model's answers per output, as `kcode eval run`
        raise HarnessError(f"{output / PREDICTIONS_FILE} holds predictions of {', '.join(others)}, not of "
                           f"{settings.profile.model}; give this run another --output")
    writer = PredictionWriter(output / PREDICTIONS_FILE)
    scores: dict[str, TaskScore] = {}
    pending: list[SweDevTask] = []
    for task in tasks:
        earlier = _earlier_score(output / INSTANCES_DIR / task.task_id / SCORE_FILE)
        if earlier is None:
            pending.append(task)
        else:
            scores[task.task_id] = earlier
            emit(InstanceFinished(task.task_id, earlier.status, _verdict_detail(earlier), resumed=True))

    cancellation = Cancellation()

    def attempt(task: SweDevTask) -> TaskScore:
        emit(InstanceStarted(task.task_id))
        out_dir = output / INSTANCES_DIR / task.task_id
        started = time.monotonic()
        try:
            score = _run_task(task, settings, options, out_dir, predictions.get(task.task_id), writer, scoring,
                              max_steps, emit, cancellation)
        except InstanceError as exc:
            score = TaskScore(task.task_id, "error", 0.0, detail=exc.reason)
        except Exception as exc:  # a bug must cost one task, not the run
            score = TaskScore(task.task_id, "error", 0.0, detail=record_crash(exc, out_dir / ERROR_FILE))
        score = TaskScore(**{**asdict(score), "seconds": round(time.monotonic() - started, 2)})
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SCORE_FILE).write_text(json.dumps(asdict(score), indent=2) + "\n", encoding="utf-8")
        emit(InstanceFinished(task.task_id, score.status, _verdict_detail(score), score.seconds))
        return score

    for score in map_unordered(attempt, pending, workers, cancellation):
        scores[score.task_id] = score
    summary = swe_dev_summary([task.task_id for task in tasks], scores)
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def swe_dev_summary(task_ids: Sequence[str], scores: Mapping[str, TaskScore]) -> dict[str, Any]:
    """The run's score: the mean pass rate over every task (an error or a missing task counts 0), as SWE-Dev's
    Pass@1, and each task's rate."""
    rates = {task_id: scores[task_id].pass_rate if task_id in scores else 0.0 for task_id in task_ids}
    mean = sum(rates.values()) / len(rates) if rates else 0.0
    return {"total_tasks": len(task_ids), "mean_pass_rate": round(mean, 4),
            "pass_rates": {task_id: round(rate, 4) for task_id, rate in rates.items()},
            "error_ids": sorted(task_id for task_id, score in scores.items() if score.status == "error")}


def _run_task(task: SweDevTask, settings: Settings, options: TestbedOptions, out_dir: Path,
              prediction: Prediction | None, writer: PredictionWriter, scoring: ScoringOptions,
              max_steps: int | None, emit: HarnessSink, cancellation: Cancellation) -> TaskScore:
    with task_testbed(task, options) as (instance, task_options):
        if prediction is None:
            outcome = run_instance(instance, settings, task_options, out_dir, max_steps=max_steps,
                                   cancellation=cancellation,
                                   on_step=lambda steps: emit(InstanceStep(task.task_id, steps)))
            if outcome.status == "error":
                return TaskScore(task.task_id, "error", 0.0, detail=outcome.reason)
            writer.append(Prediction(task.task_id, settings.profile.model, outcome.patch))
            patch = outcome.patch
        else:
            patch = prediction.model_patch or ""
        return _score(instance, task, patch, task_options, out_dir, scoring, cancellation)


def _score(instance: Instance, task: SweDevTask, patch: str, options: TestbedOptions, out_dir: Path,
           scoring: ScoringOptions, cancellation: Cancellation) -> TaskScore:
    """Run the hidden tests over the reference code, then over `patch`, in one fresh testbed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PATCH_FILE).write_text(patch, encoding="utf-8", errors="surrogateescape")
    with open_testbed(instance, options, out_dir) as testbed:
        reference = _hidden_tests(testbed, task, task.reference_files, out_dir / REFERENCE_LOG_FILE, scoring,
                                  cancellation)
        if not pass_rate(reference, reference)[1]:
            raise InstanceError(task.task_id, "no hidden test passes over the reference code (see "
                                              f"{REFERENCE_LOG_FILE}): the environment or the test command is wrong")
        for command in (["checkout", "--", "."], ["clean", "-fdq"]):
            run_git(command, cwd=testbed.workspace)
        if patch and apply_patch(testbed.workspace, out_dir / PATCH_FILE, testbed.variables) is None:
            return TaskScore(task.task_id, "scored", 0.0, failed=tuple(pass_rate(reference, {})[2]),
                             detail="the patch does not apply")
        candidate = _hidden_tests(testbed, task, {}, out_dir / TEST_LOG_FILE, scoring, cancellation)
    rate, passed, failed = pass_rate(reference, candidate)
    return TaskScore(task.task_id, "scored", rate, tuple(passed), tuple(failed))


def _hidden_tests(testbed: Testbed, task: SweDevTask, files: Mapping[str, str], log: Path, scoring: ScoringOptions,
                  cancellation: Cancellation) -> dict[str, str]:
    """Write `files` and the hidden tests into the workspace, reinstall, run the tests offline; their statuses."""
    for name, code in {**files, **task.hidden_tests}.items():
        target = testbed.workspace / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")
    targets = " ".join(shlex.quote(name) for name in task.hidden_tests)
    script = testbed.scratch / "swe_dev_tests.sh"
    script.write_text("\n".join([
        "set -uxo pipefail", f"cd {shlex.quote(str(testbed.workspace))}", *([testbed.spec.install] * bool(
            testbed.spec.install)), f": '{START_MARKER}'", f"{testbed.spec.test_cmd} {targets}", f": '{END_MARKER}'",
    ]) + "\n", encoding="utf-8")
    timed_out = run_script(script, testbed.workspace, testbed.variables, log, testbed.launcher(scoring.network_prefix),
                           scoring.timeout_s, cancellation)
    if cancellation.cancelled:
        raise InstanceError(task.task_id, "interrupted before the tests finished")
    if timed_out:
        raise InstanceError(task.task_id, f"the hidden tests did not finish within {scoring.timeout_s:g} s")
    output = log.read_text(encoding="utf-8", errors="replace")
    between = output.split(START_MARKER, 1)[-1].split(END_MARKER, 1)[0]
    return parse_pytest_log(between)


def _earlier_score(path: Path) -> TaskScore | None:
    """A score an earlier invocation wrote; errors are tried again."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        score = TaskScore(**{**record, "passed": tuple(record["passed"]), "failed": tuple(record["failed"])})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return score if score.status == "scored" else None


def _verdict_detail(score: TaskScore) -> str:
    if score.status == "error":
        return score.detail
    total = len(score.passed) + len(score.failed)
    detail = f"pass rate {score.pass_rate:.3f} ({len(score.passed)} of {total} hidden tests)"
    return detail + (f"; {score.detail}" if score.detail else "")
