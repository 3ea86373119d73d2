"""Running the agent on one instance: the same loop, toolset and clamp as `kcode fix`, in the instance's testbed.

The agent's shell runs in kcode's sandbox (the testbed writable, everything else read-only, no network, the
mirrors and other testbeds hidden) with the instance's environment on its PATH; the task prompt is the issue
and SWE-bench's rule (do not touch the tests); the patch is the diff from the setup state, new files
included. A step, token or cost limit ends the attempt with what the agent has done so far as its patch,
as SWE-agent's autosubmission does; running out of wall time, a failed model API or a crash is an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal

from kcode.agent.approvals import headless_approvals
from kcode.agent.conversation import Conversation
from kcode.agent.events import Event, Notice, TurnEndReason, UsageReport
from kcode.agent.limits import Budget
from kcode.agent.loop import Agent
from kcode.agent.prompt import project_rules, system_prompt
from kcode.agent.trajectory import TrajectoryWriter
from kcode.backends.factory import make_backend
from kcode.commands.agent_setup import budget, compactor, guarded, mcp_servers
from kcode.config import Settings
from kcode.messages import system, user
from swe_harness.dataset import Instance
from swe_harness.errors import HarnessError, InstanceError
from swe_harness.events import HarnessSink, InstanceFinished, InstanceStarted, InstanceStep
from swe_harness.executors import Executor, LocalExecutor
from swe_harness.predictions import Prediction, PredictionWriter, load_predictions
from swe_harness.report import ERROR_FILE, INSTANCES_DIR
from swe_harness.testbed import Testbed, TestbedOptions, open_testbed
from swe_harness.workers import Cancellation, record_crash
from swe_harness.workspace import workspace_diff
from tools.standard import standard_toolset
from tools.toolset import Toolset

RunStatus = Literal["submitted", "limit", "error"]
PREDICTIONS_FILE = "predictions.jsonl"
TRAJECTORY_FILE = "trajectory.jsonl"
RESULT_FILE = "result.json"

_FINISHED: dict[TurnEndReason, RunStatus] = {
    "submitted": "submitted", "answered": "submitted",
    "step_limit": "limit", "token_limit": "limit", "cost_limit": "limit", "repeated_call": "limit",
}
"""How the agent's turn ended, as the harness counts it; any other ending (time limit, API error, Ctrl-C) is an
error and leaves no prediction."""


@dataclass(frozen=True)
class RunOutcome:
    """What the agent did with one instance; written to `result.json` beside its trajectory."""

    instance_id: str
    status: RunStatus
    reason: str
    """The turn's end reason (`submitted`, `step_limit`, ...) or the error's message."""
    patch: str
    steps: int
    cost_usd: float | None
    seconds: float


def run_instance(instance: Instance, settings: Settings, options: TestbedOptions, out_dir: Path, *,
                 max_steps: int | None = None,
                 on_step: Callable[[int], None] | None = None,
                 cancellation: Cancellation | None = None) -> RunOutcome:
    """Let the agent work on `instance`; its trajectory and result go to `out_dir`. Never raises for the
    instance's own failures: they come back as an `error` outcome, so the run goes on. A `cancellation`
    kills the running command and ends the turn before the next model call."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    counter = _StepCounter(on_step)
    try:
        with open_testbed(instance, options, out_dir) as testbed:
            reason = _work(testbed, settings, out_dir, counter, max_steps, cancellation or Cancellation())
            patch = workspace_diff(testbed.workspace, testbed.setup_commit)
    except InstanceError as exc:
        outcome = RunOutcome(instance.instance_id, "error", exc.reason, "", counter.steps, counter.cost_usd,
                             time.monotonic() - started)
    else:
        status = _FINISHED.get(reason, "error")
        outcome = RunOutcome(instance.instance_id, status, reason, patch if status != "error" else "",
                             counter.steps, counter.cost_usd, time.monotonic() - started)
    (out_dir / RESULT_FILE).write_text(json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8")
    return outcome


def task_prompt(instance: Instance, workspace: Path) -> str:
    """The first user message: the issue, the rule about tests, and how to work and finish."""
    return Template(_template("task.md")).substitute(problem_statement=instance.problem_statement.strip(),
                                                     workspace=str(workspace))


def _conversation(workspace: Path, toolset: Toolset) -> Conversation:
    """A history holding the benchmark's system prompt: kcode's, less the advice to ask the user."""
    prompt = system_prompt(workspace, toolset, project_rules(workspace), template=_template("system.md"))
    return Conversation([system(prompt)])


def _template(name: str) -> str:
    return (resources.files("swe_harness") / "prompts" / name).read_text(encoding="utf-8")


def _work(testbed: Testbed, settings: Settings, out_dir: Path, counter: _StepCounter,
          max_steps: int | None, cancellation: Cancellation) -> TurnEndReason:
    backend = make_backend(settings)
    trajectory = TrajectoryWriter(out_dir / TRAJECTORY_FILE, {
        "instance_id": testbed.instance.instance_id, "model": settings.profile.model,
        "workspace": str(testbed.workspace), "base_commit": testbed.instance.base_commit,
        "setup_commit": testbed.setup_commit, "python": testbed.environment.python_version})

    def emit(event: Event) -> None:
        trajectory(event)
        counter(event)

    with mcp_servers(settings, testbed.workspace, lambda line: emit(Notice(line))) as servers, \
            standard_toolset(testbed.workspace, settings.tool_settings(), submit=True,
                             spill_dir=testbed.scratch / "spill", hidden_env=settings.secret_variables(),
                             shell_env=testbed.variables, sandbox=testbed.sandbox(),
                             extra_tools=servers.tools() if servers is not None else ()) as toolset:
        agent = Agent(backend, toolset, emit, conversation=_conversation(testbed.workspace, toolset),
                      budget=_CancellableBudget(budget(settings, max_steps=max_steps), cancellation),
                      approvals=guarded(headless_approvals(True), settings, testbed.workspace, toolset,
                                        home=Path(testbed.variables.get("HOME", "/")), on_decision=emit),
                      compactor=compactor(settings, backend, testbed.workspace))
        emit(Notice(f"tools offered: {', '.join(toolset.names)}"))  # an MCP server's tools show in the record
        shell = toolset.get("bash")
        with cancellation.on_cancel(getattr(shell, "interrupt", lambda: None)):
            return agent.run_turn(user(task_prompt(testbed.instance, testbed.workspace)))


class _CancellableBudget(Budget):
    """The run's limits, plus one that ends the turn once the evaluation is interrupted."""

    def __init__(self, limits: Budget, cancellation: Cancellation) -> None:
        super().__init__(limits.limits, limits.pricing)
        self._cancellation = cancellation

    def exceeded(self) -> tuple[TurnEndReason, str] | None:
        if self._cancellation.cancelled:
            return "interrupted", "Stopped: the evaluation was interrupted."
        return super().exceeded()


class _StepCounter:
    """Counts the model's completions and keeps the running cost, for the result and a live progress line."""

    def __init__(self, on_step: Callable[[int], None] | None) -> None:
        self.steps = 0
        self.cost_usd: float | None = None
        self._on_step = on_step

    def __call__(self, event: Event) -> None:
        if isinstance(event, UsageReport):
            self.steps += 1
            self.cost_usd = event.cost_usd
            if self._on_step is not None:
                self._on_step(self.steps)



def run_all(instances: Sequence[Instance], settings: Settings, options: TestbedOptions, output: Path, *,
            workers: int, emit: HarnessSink,
            max_steps: int | None = None, executor: Executor | None = None) -> list[RunOutcome]:
    """Run every instance not already in `output/predictions.jsonl`; append each finished one there.

    Errors leave no prediction, so rerunning the same command tries them again and skips the rest. The
    `executor` (local threads by default) decides where instances run; predictions are written here.
    """
    output.mkdir(parents=True, exist_ok=True)
    done = load_predictions(output / PREDICTIONS_FILE) if (output / PREDICTIONS_FILE).exists() else {}
    others = sorted({p.model_name_or_path for p in done.values()} - {settings.profile.model})
    if others:  # resuming someone else's run would mix two models' answers in one set of predictions
        raise HarnessError(f"{output / PREDICTIONS_FILE} holds predictions of {', '.join(others)}, not of "
                           f"{settings.profile.model}; give this run another --output")
    writer = PredictionWriter(output / PREDICTIONS_FILE)
    for instance_id in (i.instance_id for i in instances if i.instance_id in done):
        emit(InstanceFinished(instance_id, "submitted", "finished by an earlier run", resumed=True))

    work = partial(_attempt, settings=settings, options=options, output=output, max_steps=max_steps)
    pending = [instance for instance in instances if instance.instance_id not in done]
    outcomes: list[RunOutcome] = []
    for outcome in (executor or LocalExecutor()).map_unordered(work, pending, workers, emit, Cancellation()):
        if outcome.status != "error":
            writer.append(Prediction(outcome.instance_id, settings.profile.model, outcome.patch))
        emit(InstanceFinished(outcome.instance_id, outcome.status, outcome.reason, outcome.seconds))
        outcomes.append(outcome)
    return outcomes


def _attempt(instance: Instance, emit: HarnessSink, cancellation: Cancellation, *, settings: Settings,
             options: TestbedOptions, output: Path, max_steps: int | None) -> RunOutcome:
    """One instance, on whichever machine the executor chose: a crash is this instance's error, not the run's."""
    emit(InstanceStarted(instance.instance_id))
    out_dir = output / INSTANCES_DIR / instance.instance_id
    try:
        return run_instance(instance, settings, options, out_dir, max_steps=max_steps, cancellation=cancellation,
                            on_step=lambda steps: emit(InstanceStep(instance.instance_id, steps)))
    except Exception as exc:  # a bug or a backend that cannot start
        return RunOutcome(instance.instance_id, "error", record_crash(exc, out_dir / ERROR_FILE), "", 0, None, 0.0)
