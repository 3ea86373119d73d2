"""The local worker pool: the same per-instance function on N threads, results in the order they finish.

Threads are enough: an instance spends its time in subprocesses (tests, the agent's shell) and in HTTP
waits for the model, both of which release the GIL.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_unordered(work: Callable[[Item], Result], items: Sequence[Item], workers: int) -> Iterator[Result]:
    """Yield `work(item)` for every item as each finishes, with at most `workers` running at once.

    When the consumer stops early (Ctrl-C), instances not yet started are cancelled; running ones finish.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kcode-eval")
    try:
        futures = [pool.submit(work, item) for item in items]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def describe_crash(exc: BaseException) -> tuple[str, str]:
    """A one-line reason for an unexpected failure, and its traceback for the instance's log."""
    return f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))
