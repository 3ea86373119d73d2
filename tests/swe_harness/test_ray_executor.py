"""The Ray executor on a real local Ray instance (two CPUs, started once for this module): the same per-instance
function as the thread pool, progress events forwarded to the driver, Ctrl-C cancelling the tasks in flight, and
`kcode eval grade --executor ray` giving the summary two local workers give."""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swe_harness.errors import HarnessError
from swe_harness.events import HarnessEvent, HarnessSink, InstanceStarted, InstanceStep
from swe_harness.executors import RayExecutor, make_executor
from swe_harness.workers import Cancellation
from tests.swe_harness.task_repo import TaskRepo, instance_row, write_dataset
from tests.swe_harness.test_eval_cli import common, kcode

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray instance on this machine, as `ray start --head` would give; the address other drivers join.

    A new Ray instance turns token authentication on and would write its token to ~/.ray; given one in the
    environment, it uses that, and the kcode subprocesses inherit it (and the RAY_AUTH_MODE Ray sets), as a
    cluster's users would set them."""
    with pytest.MonkeyPatch.context() as environ:
        environ.delenv("RAY_AUTH_MODE", raising=False)  # Ray sets it; undone with the rest at the end
        environ.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield str(ray.get_runtime_context().gcs_address)
        finally:
            ray.shutdown()


def _sleep_then_square(item: float, emit: HarnessSink, cancellation: Cancellation) -> int:
    emit(InstanceStarted(str(item)))
    time.sleep(item)
    emit(InstanceStep(str(item), 1))
    return round(item * 10) ** 2


def _wait_for_cancel(marker: str, emit: HarnessSink, cancellation: Cancellation) -> str:
    """Stands for an instance whose tests run until they are killed: it ends only when cancelled."""
    emit(InstanceStarted(marker))
    stopped = threading.Event()
    with cancellation.on_cancel(stopped.set):
        stopped.wait(timeout=60)
    Path(marker).write_text("cancelled" if stopped.is_set() else "timed out")
    return marker


def test_results_come_back_as_tasks_finish_with_their_events(ray_address: str) -> None:
    events: list[HarnessEvent] = []
    results = RayExecutor.connect(None).map_unordered(_sleep_then_square, [1.5, 0.1, 0.2], 2, events.append,
                                                      Cancellation())
    assert list(results) == [1, 4, 225]
    assert sorted((type(e).__name__, e.instance_id) for e in events) == sorted(
        (kind, str(item)) for item in (1.5, 0.1, 0.2) for kind in ("InstanceStarted", "InstanceStep"))
    assert events.index(InstanceStarted("0.1")) < events.index(InstanceStep("0.1", 1))


def test_an_interrupt_while_waiting_cancels_the_tasks_in_flight_and_submits_no_more(ray_address: str,
                                                                                      tmp_path: Path) -> None:
    markers = [tmp_path / f"task-{n}" for n in range(4)]
    started: list[str] = []

    def emit(event: HarnessEvent) -> None:
        started.append(event.instance_id)
        if len(started) == 2:
            raise KeyboardInterrupt  # stands for Ctrl-C reaching the driver while both tasks wait on their tests

    cancellation = Cancellation()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(RayExecutor.connect(None).map_unordered(_wait_for_cancel, [str(m) for m in markers], 2, emit,
                                                     cancellation))
    assert cancellation.cancelled and time.monotonic() - began < 30
    assert [m.read_text() for m in markers[:2]] == ["cancelled", "cancelled"]  # stopped, not left to time out
    assert not markers[2].exists() and not markers[3].exists()


def _die(item: int, emit: HarnessSink, cancellation: Cancellation) -> int:
    if item == 1:
        os._exit(1)  # stands for a node or worker lost under the task
    return item


def test_a_task_ray_loses_stops_the_run_with_one_line(ray_address: str) -> None:
    with pytest.raises(HarnessError, match=r"a Ray task was lost \(.+\); finished instances are kept"):
        list(RayExecutor.connect(None).map_unordered(_die, [1], 1, lambda event: None, Cancellation()))


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    with pytest.raises(HarnessError, match=r"pip install 'kcode\[cluster\]'"):
        make_executor("ray")
    with pytest.raises(HarnessError, match="--ray-address needs --executor ray"):
        make_executor("local", "auto")
    with pytest.raises(HarnessError, match="choose one of local, ray"):
        make_executor("slurm")


def test_a_cluster_address_nothing_listens_at_is_one_line_and_exit_2(task: TaskRepo, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl", [instance_row(task)])
    done = kcode(["eval", "grade", "--gold", "--executor", "ray", "--ray-address", "127.0.0.1:1", "--dataset",
                  str(dataset), "--repos", str(task.mirrors_dir), "--output", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("kcode: cannot reach the Ray cluster at 127.0.0.1:1: ")


@pytest.mark.slow
def test_grade_gold_on_ray_gives_the_summary_of_two_local_workers(
        ray_address: str, task: TaskRepo, env_specs: Path, env_cache: Path, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl", [instance_row(task, f"acme__calc-{n}") for n in (1, 2)])
    with ThreadPoolExecutor(2) as both:  # side by side, to keep the test short
        local_run = both.submit(kcode, ["eval", "grade", "--gold", "--workers", "2",
                                        *common(task, dataset, tmp_path / "local", env_specs, env_cache)], tmp_path)
        on_ray = kcode(["eval", "grade", "--gold", "--json", "--workers", "2", "--executor", "ray", "--ray-address",
                        ray_address, *common(task, dataset, tmp_path / "ray", env_specs, env_cache)], tmp_path)
        local = local_run.result()
    assert local.returncode == 0 and on_ray.returncode == 0, local.stderr + on_ray.stderr
    events = [json.loads(line) for line in on_ray.stdout.splitlines()]
    assert sorted(e["instance_id"] for e in events if e["type"] == "instance_started") == ["acme__calc-1",
                                                                                          "acme__calc-2"]
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "local" / "summary.json").read_text())
    assert summary["resolved_ids"] == ["acme__calc-1", "acme__calc-2"] and events[-1]["type"] == "summary"
    assert (tmp_path / "ray" / "instances" / "acme__calc-1" / "report.json").is_file()
