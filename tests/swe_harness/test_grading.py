"""Grading end to end on a real repository: pruned testbed, built environment, the eval script with no network,
and swebench's own grader deciding. Gold resolves, a wrong patch does not, an empty one is not run."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from swe_harness.dataset import Instance, load_dataset
from swe_harness.events import HarnessEvent, InstanceFinished
from swe_harness.grading import TESTS_TIMEOUT, grade_all, grade_prediction
from swe_harness.network import no_network_prefix
from swe_harness.predictions import Prediction
from swe_harness.testbed import TestbedOptions
from tests.swe_harness.task_repo import TaskRepo, hanging_row, instance_row, network_row, write_dataset

pytestmark = pytest.mark.slow


def instances(tmp_path: Path, rows: list[dict[str, object]]) -> list[Instance]:
    return load_dataset(write_dataset(tmp_path / "dataset.jsonl", rows))


def refs_and_files(mirror: Path) -> dict[str, float]:
    return {str(p.relative_to(mirror)): p.stat().st_mtime for p in mirror.rglob("*") if p.is_file()}


def test_gold_wrong_empty_and_unappliable_patches_get_the_official_verdicts(
        task: TaskRepo, testbed_options: TestbedOptions, tmp_path: Path) -> None:
    mirror_before = refs_and_files(task.mirror)
    rows = [instance_row(task, "acme__calc-gold"), instance_row(task, "acme__calc-wrong"),
            instance_row(task, "acme__calc-empty"), instance_row(task, "acme__calc-broken"),
            instance_row(task, "acme__calc-unsubmitted")]
    predictions = {
        "acme__calc-gold": Prediction("acme__calc-gold", "m", task.gold_patch),
        "acme__calc-wrong": Prediction("acme__calc-wrong", "m", task.wrong_patch),
        "acme__calc-empty": Prediction("acme__calc-empty", "m", ""),
        "acme__calc-broken": Prediction("acme__calc-broken", "m", task.gold_patch.replace("a + b", "a % b")),
    }
    events: list[HarnessEvent] = []
    summary = grade_all(instances(tmp_path, rows), predictions, testbed_options, tmp_path / "out", workers=2,
                        network_prefix=no_network_prefix(), timeout_s=120, emit=events.append)
    assert summary["resolved_ids"] == ["acme__calc-gold"]
    assert summary["unresolved_ids"] == ["acme__calc-wrong"]
    assert summary["empty_patch_ids"] == ["acme__calc-empty"]
    assert summary["error_ids"] == ["acme__calc-broken"]
    assert summary["incomplete_ids"] == ["acme__calc-unsubmitted"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary

    gold = json.loads((tmp_path / "out" / "instances" / "acme__calc-gold" / "report.json").read_text())
    entry = gold["acme__calc-gold"]
    assert entry["resolved"] and entry["patch_successfully_applied"] and not entry["patch_is_None"]
    assert entry["tests_status"]["FAIL_TO_PASS"] == {"success": ["tests/test_calc.py::test_mul"], "failure": []}
    assert entry["tests_status"]["PASS_TO_PASS"]["success"] == ["tests/test_calc.py::test_add"]
    assert entry["environment"]["requested_python"] == entry["environment"]["python"][:4].rstrip(".")
    wrong = json.loads((tmp_path / "out" / "instances" / "acme__calc-wrong" / "report.json").read_text())
    assert wrong["acme__calc-wrong"]["tests_status"]["FAIL_TO_PASS"]["failure"] == ["tests/test_calc.py::test_mul"]
    log = (tmp_path / "out" / "instances" / "acme__calc-gold" / "test_output.txt").read_text()
    assert ">>>>> Start Test Output" in log and "PASSED tests/test_calc.py::test_mul" in log
    finished = {e.instance_id: e for e in events if isinstance(e, InstanceFinished)}
    assert finished["acme__calc-broken"].detail.startswith("the patch does not apply")
    assert set(finished) == set(predictions)
    assert refs_and_files(task.mirror) == mirror_before


def test_a_rerun_skips_what_was_graded_and_gives_the_same_summary(
        task: TaskRepo, testbed_options: TestbedOptions, tmp_path: Path) -> None:
    rows = [instance_row(task, "acme__calc-1"), instance_row(task, "acme__calc-2")]
    predictions = {"acme__calc-1": Prediction("acme__calc-1", "m", task.gold_patch),
                   "acme__calc-2": Prediction("acme__calc-2", "m", task.wrong_patch)}
    options = dict(network_prefix=no_network_prefix(), timeout_s=120)
    first = grade_all(instances(tmp_path, rows), predictions, testbed_options, tmp_path / "out", workers=1,
                      emit=lambda event: None, **options)  # type: ignore[arg-type]
    events: list[HarnessEvent] = []
    started = time.monotonic()
    second = grade_all(instances(tmp_path, rows), predictions, testbed_options, tmp_path / "out", workers=2,
                       emit=events.append, **options)  # type: ignore[arg-type]
    assert second == first and first["resolved_ids"] == ["acme__calc-1"]
    assert all(isinstance(e, InstanceFinished) and e.resumed for e in events) and len(events) == 2
    assert time.monotonic() - started < 2
    changed = {**predictions, "acme__calc-2": Prediction("acme__calc-2", "m", task.gold_patch)}
    third = grade_all(instances(tmp_path, rows), changed, testbed_options, tmp_path / "out", workers=1,
                      emit=lambda event: None, **options)  # type: ignore[arg-type]
    assert third["resolved_ids"] == ["acme__calc-1", "acme__calc-2"]  # a new patch is graded anew
    broken = {**predictions, "acme__calc-1": Prediction("acme__calc-1", "m", "not a patch\n")}
    for _ in range(2):  # the error must not leave the earlier "resolved" report to be picked up on a rerun
        fourth = grade_all(instances(tmp_path, rows), broken, testbed_options, tmp_path / "out", workers=1,
                           emit=lambda event: None, **options)  # type: ignore[arg-type]
        assert fourth["error_ids"] == ["acme__calc-1"] and fourth["resolved_ids"] == []


def test_a_hanging_test_is_killed_at_the_timeout_and_is_an_error_as_in_swe_bench(
        task: TaskRepo, testbed_options: TestbedOptions, tmp_path: Path) -> None:
    [instance] = instances(tmp_path, [hanging_row(task)])
    started = time.monotonic()
    outcome = grade_prediction(instance, task.gold_patch, "m", testbed_options, tmp_path / "out",
                               network_prefix=no_network_prefix(), timeout_s=5)
    assert time.monotonic() - started < 60
    assert outcome.verdict == "error" and outcome.detail == "the tests did not finish within 5 s"
    assert TESTS_TIMEOUT in (tmp_path / "out" / "test_output.txt").read_text()
    assert (tmp_path / "out" / "error.log").read_text() == "the tests did not finish within 5 s\n"
    assert not (tmp_path / "out" / "report.json").exists()
    leftover = subprocess.run(["pgrep", "-f", "test_sleeps"], capture_output=True, text=True)
    assert leftover.stdout == "", "the hanging test outlived its timeout"


def test_a_test_that_needs_the_network_fails_inside_the_namespace(
        task: TaskRepo, testbed_options: TestbedOptions, tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    connections: list[object] = []

    def accept() -> None:
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            connections.append(connection)
            connection.sendall(b"hello\n")
            connection.close()

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        [instance] = instances(tmp_path, [network_row(task, server.getsockname()[1])])
        outcome = grade_prediction(instance, task.gold_patch, "m", testbed_options, tmp_path / "out",
                                   network_prefix=no_network_prefix(), timeout_s=120)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert outcome.verdict == "unresolved"
    assert "test_reaches_the_host" in outcome.detail
    assert "ConnectionRefusedError" in (tmp_path / "out" / "test_output.txt").read_text()
    assert connections == []  # the host's loopback was never reached
