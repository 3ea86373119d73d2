"""The local worker pool: the same per-instance function on N threads, results in the order they finish.

Threads are enough: an instance spends its time in subprocesses (tests, the agent's shell) and in HTTP
waits for the model, both of which release the GIL. Ctrl-C reaches only the main thread, so the pool
passes it on through a `Cancellation` that the work in flight listens to.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Cancellation:
    """Set once when a run is interrupted; work in flight registers how to stop (kill its tests, say)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    @contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Call `callback` if the run is cancelled while the block runs (at once if it already was)."""
        with self._lock:
            self._callbacks.append(callback)
            already = self._event.is_set()
        if already:
            callback()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.remove(callback)


def map_unordered(work: Callable[[Item], Result], items: Sequence[Item], workers: int,
                  cancellation: Cancellation) -> Iterator[Result]:
    """Yield `work(item)` for every item as each finishes, with at most `workers` running at once.

    When the consumer stops early (Ctrl-C), items not yet started are dropped, `cancellation` tells the
    running ones to stop, and this waits for them, so no instance is left running behind the caller's back.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kcode-eval")
    finished = False
    try:
        futures = [pool.submit(work, item) for item in items]
        for future in as_completed(futures):
            yield future.result()
        finished = True
    finally:
        if not finished:
            cancellation.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def record_crash(exc: BaseException, log: Path) -> str:
    """Write the traceback of an unexpected failure to `log`; return the one-line reason to report."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    return f"{type(exc).__name__}: {exc}"
