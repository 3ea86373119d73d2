"""What `run` and `grade` report while they work; the progress bar and `--json` consume these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceStarted:
    instance_id: str


@dataclass(frozen=True)
class InstanceStep:
    """The agent working on `instance_id` made its `steps`-th model call."""

    instance_id: str
    steps: int


@dataclass(frozen=True)
class InstanceFinished:
    """An instance's outcome: for `run` submitted, limit or error; for `grade` resolved, unresolved, empty or
    error. `resumed` marks one finished by an earlier invocation and skipped now."""

    instance_id: str
    verdict: str
    detail: str = ""
    seconds: float = 0.0
    resumed: bool = False


HarnessEvent = InstanceStarted | InstanceStep | InstanceFinished
HarnessSink = Callable[[HarnessEvent], None]
