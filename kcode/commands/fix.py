"""`kcode fix`: run the agent on one task with nobody watching, then hand back the diff.

Progress goes to stderr; stdout carries only the result (the diff, or JSON events with `--json`), so
`kcode fix ... > fix.patch` works. The exit code says how it went; see `ExitCode`. Each step that may change
files is checkpointed first, so `kcode checkpoints --restore ID` can undo what a run did.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TextIO

from kcode.agent.approvals import headless_approvals
from kcode.agent.events import ApprovalDecided, Event, EventSink, Notice, TurnEndReason
from kcode.agent.loop import Agent
from kcode.agent.prompt import fix_prompt
from kcode.agent.trajectory import TrajectoryWriter
from kcode.backends.factory import backend_notice, make_backend
from kcode.commands.agent_setup import (
    budget,
    checkpoints,
    compactor,
    guarded,
    mcp_servers,
    new_conversation,
    sandbox,
)
from kcode.config import Settings
from kcode.messages import user
from kcode.ui.headless import JsonEventWriter, ProgressPrinter
from kcode.workspace_diff import WorkspaceSnapshot
from tools.standard import standard_toolset


class ExitCode(IntEnum):
    """What `kcode fix` exits with; scripts and the harness branch on these."""

    CHANGED = 0
    """The agent finished and the workspace has changes (the diff is on stdout)."""
    UNCHANGED = 1
    """The agent finished without changing anything."""
    USAGE = 2
    """Bad arguments or configuration; nothing ran."""
    MODEL_FAILURE = 3
    """The model API failed for good, after retries."""
    LIMIT = 4
    """A step, token, cost or time limit stopped the agent, or it repeated itself until stopped."""
    INTERRUPTED = 130
    """Ctrl-C: the agent stopped where it was (the diff so far is still printed)."""


_LIMIT_REASONS: frozenset[TurnEndReason] = frozenset(
    {"step_limit", "token_limit", "cost_limit", "time_limit", "repeated_call"})


@dataclass(frozen=True)
class FixOptions:
    """`kcode fix`'s own flags; model and limits come with the settings."""

    root: Path
    task: str
    allow_commands: bool = False
    max_steps: int | None = None
    output_patch: Path | None = None
    trajectory: Path | None = None
    json_events: bool = False


def run_fix(settings: Settings, options: FixOptions, *, stdout: TextIO = sys.stdout,
            stderr: TextIO = sys.stderr) -> ExitCode:
    """Run the task to its end and report; configuration errors raise before anything runs."""
    backend = make_backend(settings)
    notice = backend_notice(settings)
    if notice is not None:
        stderr.write(f"kcode: {notice}\n")
    shell_box = sandbox(settings, options.root, Path.home())
    if shell_box.notice is not None:
        stderr.write(f"kcode: {shell_box.notice}\n")
    refusals = _RefusalCount()
    sinks: list[EventSink] = [refusals, JsonEventWriter(stdout) if options.json_events else ProgressPrinter(stderr)]
    if options.trajectory is not None:
        sinks.append(TrajectoryWriter(options.trajectory, {"task": options.task, "model": settings.profile.model,
                                                           "workspace": str(options.root)}))
    with WorkspaceSnapshot.take(options.root) as snapshot, \
            mcp_servers(settings, options.root, lambda line: stderr.write(f"kcode: {line}\n")) as servers, \
            standard_toolset(options.root, settings.tool_settings(), submit=True,
                             hidden_env=settings.secret_variables(), sandbox=shell_box,
                             extra_tools=servers.tools() if servers is not None else ()) as toolset:
        emit = _fan_out(sinks)
        agent = Agent(backend, toolset, emit, conversation=new_conversation(options.root, toolset),
                      budget=budget(settings, max_steps=options.max_steps),
                      approvals=guarded(headless_approvals(options.allow_commands), settings, options.root, toolset,
                                        home=Path.home(), on_decision=emit),
                      compactor=compactor(settings, backend, options.root),
                      checkpoints=checkpoints(settings, options.root, f"fix-{datetime.now(UTC):%Y%m%d-%H%M%S}"))
        reason = agent.run_turn(user(fix_prompt(options.task, commands_allowed=options.allow_commands)))
        if refusals.count:
            emit(Notice(refusals.explanation(commands_allowed=options.allow_commands)))
        patch = snapshot.diff()
    code = _exit_code(reason, changed=bool(patch))
    if options.json_events:
        stdout.write(json.dumps({"type": "result", "reason": reason, "exit_code": int(code),
                                 "patch": patch.decode("utf-8", errors="replace")}) + "\n")
    elif hasattr(stdout, "buffer"):  # the patch's bytes exactly, whatever the files' encodings
        stdout.flush()
        stdout.buffer.write(patch)
    else:
        stdout.write(patch.decode("utf-8", errors="replace"))
    stdout.flush()
    if options.output_patch is not None:  # after stdout, so a failure here cannot lose the diff
        try:
            options.output_patch.write_bytes(patch)
        except OSError as exc:
            stderr.write(f"kcode: could not write the patch to {options.output_patch}: {exc.strerror}\n")
            return ExitCode.USAGE
    return code


def _exit_code(reason: TurnEndReason, *, changed: bool) -> ExitCode:
    if reason == "interrupted":
        return ExitCode.INTERRUPTED
    if reason == "error":
        return ExitCode.MODEL_FAILURE
    if reason in _LIMIT_REASONS:
        return ExitCode.LIMIT
    return ExitCode.CHANGED if changed else ExitCode.UNCHANGED


class _RefusalCount:
    """Counts the commands the run refused, so that a fix which needed them says why it did less."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, ApprovalDecided) and event.verdict == "no":
            self.count += 1

    def explanation(self, *, commands_allowed: bool) -> str:
        refused = f"{self.count} command{'s were' if self.count != 1 else ' was'} refused"
        if commands_allowed:  # with --yes only destructive commands are refused
            return f"{refused} as destructive; --allow-destructive allows them"
        return f"{refused}: kcode fix runs shell commands only with --yes; run it again with --yes to allow them"


def _fan_out(sinks: list[EventSink]) -> EventSink:
    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return emit
