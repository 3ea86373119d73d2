"""When a failed model request is worth another try, and how long to wait first.

Waits use decorrelated jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): each delay
is drawn uniformly between the base and three times the previous delay, capped, so many clients that
failed together do not retry together. A server's `Retry-After` is a floor, never shortened. The random
source and the clock are injected so tests can pin both.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping
from dataclasses import dataclass

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Besides every 5xx: request timeout, lock conflict, rate limit (the set OpenAI's own SDK retries)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try one completion and the bounds on the waits between tries."""

    max_attempts: int = 6
    """Tries in all, the first included; 1 means never retry."""
    base_delay_s: float = 1.0
    """Shortest wait, and the scale the jitter grows from."""
    max_delay_s: float = 30.0
    """Longest wait our own backoff chooses (a server's Retry-After may ask for more)."""
    max_retry_after_s: float = 120.0
    """A server asking to wait longer than this is taken as "not today": fail now with its reason."""
    refused_attempts: int = 2
    """Tries in all when the host refuses the connection: nothing listens there, which waiting rarely mends,
    so one quick retry (a server still starting) rather than the whole back-off."""
    refused_delay_s: float = 0.5
    """The wait before that quick retry."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 < self.base_delay_s <= self.max_delay_s:
            raise ValueError(f"need 0 < base_delay_s <= max_delay_s, got {self.base_delay_s} and {self.max_delay_s}")
        if self.max_retry_after_s < 0:
            raise ValueError(f"max_retry_after_s must be >= 0, got {self.max_retry_after_s}")
        if self.refused_attempts < 1 or self.refused_delay_s < 0:
            raise ValueError(f"need refused_attempts >= 1 and refused_delay_s >= 0, got {self.refused_attempts} "
                             f"and {self.refused_delay_s}")


class Backoff:
    """The successive waits of one request; make a new one per request."""

    def __init__(self, policy: RetryPolicy, random: Callable[[], float]) -> None:
        self._policy = policy
        self._random = random
        self._previous_s = policy.base_delay_s

    def next_delay_s(self, retry_after_s: float | None = None) -> float:
        base, cap = self._policy.base_delay_s, self._policy.max_delay_s
        upper = min(cap, self._previous_s * 3)
        delay = base + self._random() * (upper - base)
        self._previous_s = delay
        return delay if retry_after_s is None else max(delay, retry_after_s)


def is_retryable_status(status: int, headers: Mapping[str, str]) -> bool:
    """Retry rate limits, timeouts, conflicts and server errors, unless the server says otherwise.

    `x-should-retry` (sent by OpenAI, and by kcode's scripted test server when its script runs out)
    overrides the status either way.
    """
    verdict = headers.get("x-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_s(headers: Mapping[str, str], now_s: float) -> float | None:
    """The wait a response asks for: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date.

    `headers` must look names up case-insensitively (httpx's headers do); `now_s` is the Unix time
    that an HTTP date is measured from. Unparseable values count as absent; past dates as zero.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now_s, 0.0)
