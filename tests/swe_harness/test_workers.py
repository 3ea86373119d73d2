"""The worker pool and its cancellation: Ctrl-C in the main thread stops the work in flight, and no process
of an instance outlives it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from swe_harness.grading import run_script
from swe_harness.workers import Cancellation, map_unordered


def test_results_come_as_they_finish_with_at_most_n_running() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def work(delay: float) -> float:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(delay)
        with lock:
            running -= 1
        return delay

    assert list(map_unordered(work, [0.3, 0.05, 0.1], 3, Cancellation())) == [0.05, 0.1, 0.3]
    list(map_unordered(work, [0.05] * 6, 2, Cancellation()))
    assert peak <= 3
    with pytest.raises(ValueError, match="workers must be at least 1"):
        list(map_unordered(work, [1.0], 0, Cancellation()))


def test_leaving_early_cancels_the_running_work_and_drops_the_rest() -> None:
    cancellation = Cancellation()
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        if n == 0:
            return n
        stopped = threading.Event()
        with cancellation.on_cancel(stopped.set):
            stopped.wait(timeout=30)
        return n

    results = map_unordered(work, list(range(10)), 2, cancellation)
    assert next(results) == 0
    began = time.monotonic()
    results.close()  # what a Ctrl-C in the consuming loop does to the generator
    assert cancellation.cancelled and time.monotonic() - began < 10
    assert len(started) < 10


def test_an_interrupt_while_waiting_stops_running_instances_at_once() -> None:
    cancellation = Cancellation()

    def work(n: int) -> int:
        if n == 0:
            raise KeyboardInterrupt  # stands for Ctrl-C reaching the consumer while others run
        stopped = threading.Event()
        with cancellation.on_cancel(stopped.set):
            stopped.wait(timeout=30)
        return n

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(map_unordered(work, [1, 0, 2, 3, 4], 2, cancellation))
    assert cancellation.cancelled and time.monotonic() - began < 10


def test_a_callback_registered_after_the_cancel_runs_at_once() -> None:
    cancellation = Cancellation()
    cancellation.cancel()
    calls: list[str] = []
    with cancellation.on_cancel(lambda: calls.append("late")):
        pass
    assert calls == ["late"]


def test_a_cancelled_script_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    script = tmp_path / "eval.sh"
    script.write_text(f"sleep 300 &\necho $! > {tmp_path}/child\nsleep 300\n")
    cancellation = Cancellation()
    threading.Timer(0.5, cancellation.cancel).start()
    began = time.monotonic()
    timed_out = run_script(script, tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "log", (), 60, cancellation)
    assert not timed_out and time.monotonic() - began < 10
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and b") Z" not in Path(f"/proc/{child}/stat").read_bytes() \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or b") Z" in Path(f"/proc/{child}/stat").read_bytes()
