"""A repository SWE-bench does not know: a spec file with our own log parsers, and instances written by hand.

The end-to-end test runs `kcode eval run` and `kcode eval grade` as a user would, over "acme/calc" (which no
SWE-bench parser is named after), with rows that carry only the fields a hand-written row must (and a version, so
that the session's environment serves): once read with the generic `pytest` parser, once with `junit`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from swe_harness.dataset import load_dataset
from swe_harness.environment_specs import environment_spec
from swe_harness.errors import HarnessError
from swe_harness.eval_script import generated_eval_script
from swe_harness.log_parsers import JUNIT_END, JUNIT_START, parse_junit_log, parse_pytest_log
from tests.kcode.openai_server import Reply, ScriptedServer
from tests.swe_harness.conftest import PYTHON
from tests.swe_harness.task_repo import REPO, TEST_FILE, TaskRepo, write_dataset
from tests.swe_harness.test_eval_cli import call, kcode

_PYTEST_LOG = """\
tests/test_calc.py::test_add PASSED                                      [ 25%]
tests/test_calc.py::test_mul FAILED                                      [ 50%]
=========================== short test summary info ============================
PASSED tests/test_calc.py::test_add
PASSED tests/test_calc.py::test_param[a-1]
XPASS tests/test_calc.py::test_lucky - fixed meanwhile
XFAIL tests/test_calc.py::test_known - not yet
SKIPPED [1] tests/test_calc.py:12: no network
ERROR tests/test_broken.py - ImportError: no module named nope
FAILED tests/test_calc.py::test_mul - assert 7 == 12 - really
"""

_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest">
<testcase classname="tests.test_calc" name="test_add" time="0.001" />
<testcase classname="tests.test_calc" name="test_mul" time="0.001"><failure message="assert 7 == 12" /></testcase>
<testcase classname="tests.test_calc" name="test_mul" time="0.001"><error message="teardown" /></testcase>
<testcase classname="tests.test_calc" name="test_skip" time="0"><skipped type="pytest.skip" /></testcase>
<testcase classname="tests.test_calc" name="test_xfail" time="0"><skipped type="pytest.xfail" /></testcase>
<testcase name="bare" time="0" />
</testsuite></testsuites>"""

_LAUGHS = """<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>
<testsuite><testcase classname="c" name="&b;" /></testsuite>"""


def test_the_pytest_parser_reads_summary_and_verbose_lines() -> None:
    assert parse_pytest_log(_PYTEST_LOG) == {
        "tests/test_calc.py::test_add": "PASSED", "tests/test_calc.py::test_mul": "FAILED",
        "tests/test_calc.py::test_param[a-1]": "PASSED", "tests/test_calc.py::test_lucky": "PASSED",
        "tests/test_calc.py::test_known": "XFAIL", "tests/test_broken.py": "ERROR"}


def test_the_junit_parser_reads_only_its_blocks_and_refuses_document_types() -> None:
    log = f"noise <testsuite><testcase name='outside'/></testsuite>\n{JUNIT_START}\n{_JUNIT}\n{JUNIT_END}\n"
    assert parse_junit_log(log) == {
        "tests.test_calc::test_add": "PASSED", "tests.test_calc::test_mul": "ERROR",
        "tests.test_calc::test_skip": "SKIPPED", "tests.test_calc::test_xfail": "XFAIL", "bare": "PASSED"}
    assert parse_junit_log(f"{JUNIT_START}\n{_LAUGHS}\n{JUNIT_END}\n") == {}
    assert parse_junit_log(f"{JUNIT_START}\n<testsuite><testcase name='x'>\n{JUNIT_END}\n") == {}


def test_a_spec_without_versions_holds_for_every_version_and_checks_its_parser(tmp_path: Path) -> None:
    specs = tmp_path / "specs.toml"
    specs.write_text('["acme/calc"]\npython = "3.11"\ninstall = "pip install -e ."\nlog_parser = "junit"\n'
                     'junit_xml = "out/junit.xml"\ntest_cmd = "pytest --junitxml=out/junit.xml"\n')
    for version in ("", "2.0"):
        spec = environment_spec(REPO, version, specs)
        assert (spec.name, spec.log_parser, spec.junit_xml) == ("acme__calc", "junit", "out/junit.xml")
    specs.write_text('["acme/calc"]\npython = "3.11"\ninstall = "x"\nlog_parser = "junit"\n')
    with pytest.raises(HarnessError, match=r"junit_xml .* goes with"):
        environment_spec(REPO, "", specs)
    specs.write_text('["acme/calc"]\npython = "3.11"\ninstall = "x"\nlog_parser = "unittest"\n')
    with pytest.raises(HarnessError, match="log_parser 'unittest' is neither pytest nor junit"):
        environment_spec(REPO, "", specs)


def test_a_hand_written_row_needs_only_the_required_fields(task: TaskRepo, tmp_path: Path) -> None:
    minimal = _row(task, "calc-1", f"{TEST_FILE}::test_mul", f"{TEST_FILE}::test_add")
    path = write_dataset(tmp_path / "rows.jsonl", [minimal, {**minimal, "instance_id": "calc-2", "test_patch": None}])
    first, second = load_dataset(path)
    assert (first.version, first.gold_patch, second.test_patch) == ("", "", "")
    assert first.grading_record()["version"] == ""
    write_dataset(path, [{k: v for k, v in minimal.items() if k != "problem_statement"}])
    with pytest.raises(HarnessError, match=re.escape("calc-1 lacks problem_statement (a row needs instance_id, repo, "
                                                     "base_commit, problem_statement, FAIL_TO_PASS, PASS_TO_PASS; "
                                                     "patch, test_patch, version may be left out)")):
        load_dataset(path)
    spec = environment_spec(REPO, "1.0", _spec_file(tmp_path, "pytest"))
    script = generated_eval_script(second, spec, tmp_path)
    assert "git apply" not in script and "git checkout" not in script and "pytest -rA\n" in script


@pytest.mark.slow
def test_run_and_grade_a_spec_file_repository_with_the_pytest_and_junit_parsers(
        task: TaskRepo, env_cache: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    pytest_specs, junit_specs = _spec_file(tmp_path, "pytest"), _spec_file(tmp_path, "junit")
    rows = [_row(task, name, f"{TEST_FILE}::test_mul", f"{TEST_FILE}::test_add", version="1.0")
            for name in ("calc-1", "calc-2")]
    dataset = write_dataset(tmp_path / "rows.jsonl", rows)
    openai_server.add(
        Reply(tool_calls=(call("editor", command="str_replace", path="calc/__init__.py",
                               old_str="def mul(a, b):\n    return a + b",
                               new_str="def mul(a, b):\n    return a * b"),)),
        Reply(tool_calls=(call("submit", summary="mul multiplies"),)))
    run_dir = tmp_path / "run"
    run = kcode(["eval", "run", "calc-1", *_options(task, dataset, run_dir, pytest_specs, env_cache)], tmp_path,
                openai_server)
    assert run.returncode == 0, run.stderr
    predictions = run_dir / "predictions.jsonl"
    with predictions.open("a") as out:  # a second, wrong answer: mul(3, 4) == 13
        out.write(json.dumps({"instance_id": "calc-2", "model_name_or_path": "scripted-model",
                              "model_patch": task.wrong_patch}) + "\n")

    graded = kcode(["eval", "grade", "--predictions", str(predictions),
                    *_options(task, dataset, tmp_path / "pytest", pytest_specs, env_cache)], tmp_path)
    assert graded.returncode == 0, graded.stderr
    assert "resolved 1 of 2 (50.0%)" in graded.stderr
    report = json.loads((tmp_path / "pytest" / "instances" / "calc-2" / "report.json").read_text())["calc-2"]
    assert report["tests_status"]["FAIL_TO_PASS"]["failure"] == [f"{TEST_FILE}::test_mul"]
    assert report["tests_status"]["PASS_TO_PASS"]["success"] == [f"{TEST_FILE}::test_add"]

    junit_rows = [_row(task, name, "tests.test_calc::test_mul", "tests.test_calc::test_add", version="1.0")
                  for name in ("calc-1", "calc-2")]
    junit_dataset = write_dataset(tmp_path / "junit.jsonl", junit_rows)
    graded = kcode(["eval", "grade", "--predictions", str(predictions),
                    *_options(task, junit_dataset, tmp_path / "junit", junit_specs, env_cache)], tmp_path)
    assert graded.returncode == 0, graded.stderr
    summary = json.loads((tmp_path / "junit" / "summary.json").read_text())
    assert (summary["resolved_ids"], summary["unresolved_ids"]) == (["calc-1"], ["calc-2"])
    log = (tmp_path / "junit" / "instances" / "calc-2" / "test_output.txt").read_text()
    assert JUNIT_START in log and 'classname="tests.test_calc" name="test_mul"' in log
    report = json.loads((tmp_path / "junit" / "instances" / "calc-2" / "report.json").read_text())["calc-2"]
    assert report["tests_status"]["FAIL_TO_PASS"]["failure"] == ["tests.test_calc::test_mul"]


def _row(task: TaskRepo, instance_id: str, fail_to_pass: str, pass_to_pass: str,
         **optional: str) -> dict[str, object]:
    """A hand-written row: the required fields and a test patch (no gold patch, no eval script), plus `optional`."""
    return {"instance_id": instance_id, "repo": REPO, "base_commit": task.base_commit,
            "problem_statement": "mul() adds instead of multiplying\n", "test_patch": task.test_patch,
            "FAIL_TO_PASS": [fail_to_pass], "PASS_TO_PASS": [pass_to_pass], **optional}


def _spec_file(tmp_path: Path, parser: str) -> Path:
    """A spec for acme/calc at version 1.0, read with `parser`: the environment is the session's (conftest)."""
    test_cmd = "pytest -rA" if parser == "pytest" else "pytest -rA --junitxml=reports/junit.xml"
    junit = 'junit_xml = "reports/junit.xml"\n' if parser == "junit" else ""
    path = tmp_path / f"{parser}.toml"
    path.write_text(f'["{REPO}"]\nversions = ["1.0"]\npython = "{PYTHON}"\n'
                    f'packages = ["pytest=={pytest.__version__}"]\ninstall = "python -m pip install -e ."\n'
                    f'test_cmd = "{test_cmd}"\nlog_parser = "{parser}"\n{junit}')
    return path


def _options(task: TaskRepo, dataset: Path, output: Path, specs: Path, env_cache: Path) -> list[str]:
    return ["--dataset", str(dataset), "--repos", str(task.mirrors_dir), "--output", str(output),
            "--env-specs", str(specs), "--cache-dir", str(env_cache)]
