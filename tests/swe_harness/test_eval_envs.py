"""`kcode eval envs`: environments built ahead of a run, a broken one listed with its reason, and which instances
a gold grading validated. Real subprocesses, the acme/calc task repository and its real environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.swe_harness.task_repo import TaskRepo, instance_row, write_dataset
from tests.swe_harness.test_eval_cli import kcode

pytestmark = pytest.mark.slow


def test_envs_builds_lists_what_failed_and_counts_what_gold_validated(task: TaskRepo, env_specs: Path,
                                                                     env_cache: Path, tmp_path: Path) -> None:
    specs = tmp_path / "specs.toml"  # version 1.1 needs a wheel that is not there: it cannot build here
    specs.write_text(env_specs.read_text().replace('versions = ["1.0"]', 'versions = ["1.0", "1.1"]')
                     + '\n[["acme/calc".overrides]]\nversions = ["1.1"]\npackages = ["/nonexistent/lib.whl"]\n')
    dataset = write_dataset(tmp_path / "dataset.jsonl", [
        instance_row(task, "acme__calc-1"), instance_row(task, "acme__calc-2"),
        instance_row(task, "acme__calc-3", version="1.1")])
    where = ["--dataset", str(dataset), "--repos", str(task.mirrors_dir), "--env-specs", str(specs),
             "--cache-dir", str(env_cache)]

    envs = kcode(["eval", "envs", *where, "--workers", "2"], tmp_path)
    assert envs.returncode == 1, envs.stderr  # one environment could not be built
    assert "acme/calc 1.1 did not build" in envs.stdout and "/nonexistent/lib.whl" in envs.stdout
    assert "2 of 3 instances have a built environment" in envs.stdout
    assert "kcode eval envs: failed acme/calc 1.1" in envs.stderr

    gold = tmp_path / "gold"
    graded = kcode(["eval", "grade", "--gold", *where, "--output", str(gold)], tmp_path)
    assert graded.returncode == 1  # the 1.1 instance is an error there too
    report = kcode(["eval", "envs", *where, "--gold", str(gold), "--json"], tmp_path)
    document = json.loads(report.stdout)
    assert document["counts"] == {"validated": 2, "failed": 0, "environment failed": 1, "not tried": 0}
    statuses = {(e["version"], e["status"]) for e in document["environments"]}
    assert statuses == {("1.0", "cached"), ("1.1", "failed")}  # built once, found by every later run
    failed = next(row for row in document["instances"] if row["validation"] == "environment failed")
    assert failed["instance_id"] == "acme__calc-3" and "/nonexistent/lib.whl" in failed["reason"]
    table = kcode(["eval", "envs", *where, "--gold", str(gold)], tmp_path)
    assert "validated 2 of 3 instances (66.7%)" in table.stdout
    assert "acme/calc 1.1 did not build (1 instance(s))" in table.stdout


def test_envs_refuses_a_gold_directory_that_was_not_graded(task: TaskRepo, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl", [instance_row(task)])
    done = kcode(["eval", "envs", "--dataset", str(dataset), "--repos", str(task.mirrors_dir), "--gold",
                  str(tmp_path)], tmp_path)
    assert done.returncode == 2 and "holds no summary.json" in done.stderr
