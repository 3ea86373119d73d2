"""What one agent may spend: completions per turn, wall time per turn, and tokens and money per session.

Steps and wall time restart with every turn (a chat message, or a whole `kcode fix` task); tokens and
cost add up over the life of the `Budget`, because a user's spending cap is per session, not per message.
The clock is injected so tests never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kcode.agent.events import TurnEndReason, UsageReport
from kcode.backends.base import Usage


class LimitError(ValueError):
    """A limit or price that cannot work (zero steps, a negative price)."""


@dataclass(frozen=True)
class Pricing:
    """A model's prices in US dollars per million tokens; cached prompt tokens may be cheaper."""

    input_per_mtok_usd: float
    output_per_mtok_usd: float
    cached_input_per_mtok_usd: float | None = None
    """Price of prompt tokens the provider served from its cache; None means the full input price."""

    def __post_init__(self) -> None:
        for name in ("input_per_mtok_usd", "output_per_mtok_usd", "cached_input_per_mtok_usd"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise LimitError(f"{name} must not be negative, got {value}")

    def cost_usd(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_price = self.input_per_mtok_usd if self.cached_input_per_mtok_usd is None \
            else self.cached_input_per_mtok_usd
        return ((usage.prompt_tokens - cached) * self.input_per_mtok_usd + cached * cached_price
                + usage.completion_tokens * self.output_per_mtok_usd) / 1e6


@dataclass(frozen=True)
class Limits:
    """Ceilings on one agent's work; None means no ceiling."""

    max_steps: int | None = None
    """Most completions in one turn."""
    max_wall_s: float | None = None
    """Most seconds one turn may run; checked before each completion, so a running tool is not cut short."""
    max_tokens: int | None = None
    """Most tokens billed over the session: every completion's prompt plus completion tokens."""
    max_cost_usd: float | None = None
    """Most dollars spent over the session; needs a `Pricing`, or it is never reached."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_wall_s", "max_tokens", "max_cost_usd"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise LimitError(f"{name} must be positive or None, got {value}")


class Budget:
    """Counts what the agent spends and says which limit, if any, has been reached."""

    def __init__(self, limits: Limits | None = None, pricing: Pricing | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or Limits()
        self.pricing = pricing
        self._clock = clock
        self.total_tokens = 0
        self.cost_usd: float | None = 0.0 if pricing is not None else None
        self.steps = 0
        self._turn_started = clock()

    def set_pricing(self, pricing: Pricing | None) -> None:
        """Price what comes next (after /model). Cost counts from zero when it was unknown; an unpriced model
        makes the session's cost unknown, since part of it can no longer be priced."""
        self.pricing = pricing
        if pricing is None:
            self.cost_usd = None
        elif self.cost_usd is None:
            self.cost_usd = 0.0

    def start_turn(self) -> None:
        self.steps = 0
        self._turn_started = self._clock()

    def record_step(self) -> None:
        self.steps += 1

    def record_usage(self, usage: Usage) -> UsageReport:
        """Add one completion's usage (a summary request's too) and report the running totals."""
        self.total_tokens += usage.prompt_tokens + usage.completion_tokens
        if self.pricing is not None and self.cost_usd is not None:
            self.cost_usd += self.pricing.cost_usd(usage)
        return UsageReport(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                           total_tokens=self.total_tokens, cost_usd=self.cost_usd)

    def exceeded(self) -> tuple[TurnEndReason, str] | None:
        """The limit reached, with a sentence for the user, or None while the agent may go on."""
        limits = self.limits
        if limits.max_steps is not None and self.steps >= limits.max_steps:
            return "step_limit", f"Stopped after {self.steps} steps (the limit is {limits.max_steps})."
        elapsed_s = self._clock() - self._turn_started
        if limits.max_wall_s is not None and elapsed_s >= limits.max_wall_s:
            return "time_limit", f"Stopped after {elapsed_s:.0f} s (the limit is {limits.max_wall_s:g} s)."
        if limits.max_tokens is not None and self.total_tokens >= limits.max_tokens:
            return "token_limit", f"Stopped after {self.total_tokens:,} tokens (the limit is {limits.max_tokens:,})."
        if limits.max_cost_usd is not None and self.cost_usd is not None and self.cost_usd >= limits.max_cost_usd:
            return "cost_limit", f"Stopped after ${self.cost_usd:.4f} (the limit is ${limits.max_cost_usd:.2f})."
        return None
