"""`kcode eval report` over graded runs written by hand: each run's rate, the mean ± sample std, the rates per
repository and the flipping instances, checked against numbers worked out here; and its errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swe_harness.errors import HarnessError
from swe_harness.runs_report import compare_runs, load_runs, report_document, repository_of
from tests.swe_harness.graded_runs import THREE_RUNS, write_graded_run


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    return [write_graded_run(tmp_path / "out" / f"run-{n}", verdicts) for n, verdicts in enumerate(THREE_RUNS, 1)]


def kcode_report(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCODE_")} | {"COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "kcode", "eval", "report", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_three_runs_give_the_mean_and_sample_std_worked_out_by_hand(three_runs: list[Path]) -> None:
    report = compare_runs(load_runs(three_runs))
    assert report.rates == [3 / 4, 2 / 4, 1 / 4]
    assert report.mean_resolved_rate == pytest.approx((0.75 + 0.5 + 0.25) / 3)
    by_hand = math.sqrt(((0.75 - 0.5) ** 2 + 0 + (0.25 - 0.5) ** 2) / (3 - 1))  # n - 1: the sample std
    assert report.std_resolved_rate == pytest.approx(by_hand) == pytest.approx(0.25)
    two = compare_runs(load_runs(three_runs[:2]))
    assert two.std_resolved_rate == pytest.approx(abs(0.75 - 0.5) / math.sqrt(2))


def test_rates_per_repository_and_the_instances_that_flip(three_runs: list[Path]) -> None:
    document = report_document(compare_runs(load_runs(three_runs)))
    assert [(r["repo"], r["instances"]) for r in document["repositories"]] == [("acme/calc", 3), ("beta/lib", 1)]
    assert document["repositories"][0]["resolved_rates"] == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert document["repositories"][1]["resolved_rates"] == [1.0, 1.0, 0.0]
    assert document["repositories"][1]["mean_resolved_rate"] == pytest.approx(2 / 3)
    assert document["flipping_instances"] == [  # calc-1 always resolves and calc-3 never does: neither flips
        {"instance_id": "acme__calc-2", "verdicts": ["resolved", "unresolved", "error"]},
        {"instance_id": "beta__lib-10", "verdicts": ["resolved", "resolved", "unresolved"]}]


def test_one_run_has_no_std_rather_than_zero(three_runs: list[Path]) -> None:
    document = report_document(compare_runs(load_runs(three_runs[:1])))
    assert document["std_resolved_rate"] is None and document["mean_resolved_rate"] == 0.75
    assert document["flipping_instances"] == []


def test_a_directory_of_run_n_folders_stands_for_those_runs_in_order(three_runs: list[Path]) -> None:
    runs = load_runs([three_runs[0].parent])
    assert [run.path for run in runs] == [path.resolve() for path in three_runs]


def test_runs_over_different_instances_are_refused_naming_the_difference(three_runs: list[Path],
                                                                          tmp_path: Path) -> None:
    other = write_graded_run(tmp_path / "other", {**THREE_RUNS[0], "acme__calc-99": "resolved"})
    with pytest.raises(HarnessError, match=r"1 only in .*other \(e\.g\. acme__calc-99\)"):
        compare_runs(load_runs([three_runs[0], other]))


@pytest.mark.parametrize(("instance_id", "repo"), [
    ("django__django-11099", "django/django"), ("pytest-dev__pytest-5103", "pytest-dev/pytest"),
    ("acme__my-lib-7", "acme/my-lib"), ("handwritten", "handwritten")])
def test_the_repository_is_read_from_the_instance_id(instance_id: str, repo: str) -> None:
    assert repository_of(instance_id) == repo


def test_the_cli_prints_tables_or_the_json_document(three_runs: list[Path]) -> None:
    table = kcode_report(*map(str, three_runs))
    assert table.returncode == 0, table.stderr
    assert "resolved rate: 50.0% ± 25.00 pp (mean ± sample std over 3 runs)" in table.stdout
    assert "acme/calc" in table.stdout and "66.7%" in table.stdout
    assert "acme__calc-2" in table.stdout and "acme__calc-1 " not in table.stdout  # only flips are listed
    as_json = kcode_report("--json", *map(str, three_runs))
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document == json.loads(json.dumps(report_document(compare_runs(load_runs(three_runs)))))
    assert set(document) == {"schema_version", "instances", "runs", "mean_resolved_rate", "std_resolved_rate",
                             "std_kind", "repositories", "flipping_instances"}
    assert document["std_kind"] == "sample" and document["schema_version"] == 1
    assert [(r["resolved"], r["total"], r["resolved_rate"]) for r in document["runs"]] == [
        (3, 4, 0.75), (2, 4, 0.5), (1, 4, 0.25)]
    one = kcode_report(str(three_runs[0]))
    assert "75.0% (one run: the sample std is undefined)" in one.stdout and "± 0" not in one.stdout


def test_bad_input_is_one_line_and_exit_code_2(three_runs: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text('{"resolved_instances": 1}')
    other = write_graded_run(tmp_path / "other", {"acme__calc-1": "resolved"})
    cases = [
        ((), "kcode: give at least one graded run directory"),
        ((str(three_runs[0] / "instances"),), f"kcode: {three_runs[0] / 'instances'} is not a graded run"),
        ((str(tmp_path / "nowhere"),), f"kcode: {tmp_path / 'nowhere'} is not a graded run"),
        ((str(broken),), f"kcode: {broken / 'summary.json'} is not a SWE-bench run summary"),
        ((str(three_runs[0]), str(other)), "cover different instances: 3 only in"),
        ((str(three_runs[0]), "--html", str(tmp_path / "no" / "r.html")), "--html: the directory of"),
    ]
    for args, message in cases:
        done = kcode_report(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)
        assert done.stdout == ""
