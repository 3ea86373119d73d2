"""SWE-Dev: a task built from the small "acme/calc" repository, its tests hidden from the agent (in the files and
in git's objects), scored by the pass rate of the hidden tests after a scripted, partly right implementation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from swe_harness.errors import HarnessError
from swe_harness.swe_dev import load_tasks, pass_rate, select_tasks
from tests.kcode.openai_server import Reply, ScriptedServer
from tests.swe_harness.task_repo import REPO, SOURCE_FILE, TEST_FILE, TaskRepo
from tests.swe_harness.test_eval_cli import call, kcode

SHARED_TASK = (Path(__file__).resolve().parents[3] / "shared" / "swebench" /
               "swe-dev_test_easy_datefinder-test_extract_date_strings-level1-metadata.json")
_MASKED = '"""A tiny calculator."""\n\n\ndef add(a, b):\n    return a + b\n'
_REFERENCE = _MASKED + "\n\ndef mul(a, b):\n    return a * b\n"
_HIDDEN_TESTS = ("from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
                 "def test_mul():\n    assert mul(3, 4) == 12\n\n\n"
                 "def test_mul_negative():\n    assert mul(-2, 3) == -6\n")


def swe_dev_task(task: TaskRepo, name: str = "calc-test_mul") -> dict[str, Any]:
    """A task in SWE-Dev's shape over acme/calc at the fix commit: write `mul`, judged by three hidden tests."""
    return {
        "dir_path": "/app/calc", "package_name": "calc", "sample_name": name, "src_dir": "calc/", "test_dir": "tests/",
        "test_file": TEST_FILE, "test_code": _HIDDEN_TESTS, "file_code": {SOURCE_FILE: _MASKED},
        "GT_file_code": {SOURCE_FILE: _REFERENCE}, "GT_src_dict": {}, "dependency_dict": {},
        "PRD": "# PROJECT NAME: calc\n\nImplement `mul(a, b)` in calc/__init__.py: the product of a and b.\n",
        "call_tree": {f"{TEST_FILE}:test_mul": {f"{SOURCE_FILE}:mul": {}}},
        # Ours: the repository and commits the task is built from (the environment is the session's).
        "repo": REPO, "base_commit": task.fix_commit, "version": "1.0", "environment_setup_commit": task.base_commit,
    }


def test_the_shared_swe_dev_task_loads() -> None:
    if not SHARED_TASK.exists():
        pytest.skip("../shared/swebench is not beside this checkout")
    [task] = load_tasks(SHARED_TASK)
    assert (task.task_id, task.repo, task.base_commit) == ("datefinder-test_extract_date_strings",
                                                           "swe-dev/datefinder", "")
    assert list(task.hidden_tests) == ["tests/test_extract_date_strings.py"]
    assert task.removed_tests == ("tests/test_extract_date_strings.py",)
    assert "def extract_date_strings(" not in task.masked_files["datefinder/__init__.py"]
    assert "def extract_date_strings(" in task.reference_files["datefinder/__init__.py"]


def test_tasks_load_from_a_directory_and_bad_ones_are_named(task: TaskRepo, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps(swe_dev_task(task, name)))
    assert [t.task_id for t in select_tasks(load_tasks(tmp_path), ["b"])] == ["b"]
    with pytest.raises(HarnessError, match="not among the tasks: c"):
        select_tasks(load_tasks(tmp_path), ["c"])
    (tmp_path / "b.json").write_text(json.dumps({**swe_dev_task(task, "b"), "test_code": ""}))
    with pytest.raises(HarnessError, match=r"b\.json: b lacks test_code"):
        load_tasks(tmp_path)


def test_the_pass_rate_counts_only_tests_that_pass_over_the_reference() -> None:
    reference = {"a": "PASSED", "b": "PASSED", "c": "XFAIL", "broken": "FAILED"}
    assert pass_rate(reference, {"a": "PASSED", "b": "FAILED", "broken": "PASSED"}) == (1 / 3, ["a"], ["b", "c"])
    assert pass_rate({"a": "FAILED"}, {"a": "PASSED"}) == (0.0, [], [])


@pytest.mark.slow
def test_a_task_hides_its_tests_and_scores_the_pass_rate(task: TaskRepo, env_specs: Path, env_cache: Path,
                                                         tmp_path: Path, openai_server: ScriptedServer) -> None:
    tasks = tmp_path / "task.json"
    tasks.write_text(json.dumps(swe_dev_task(task)))
    secrets = [_git(task.source, "rev-parse", f"{ref}:{path}") for ref, path in (
        (task.fix_commit, TEST_FILE), (task.base_commit, TEST_FILE), (task.fix_commit, SOURCE_FILE))]
    secrets += [task.fix_commit, task.base_commit]
    probes = "; ".join(f"git cat-file -e {sha} 2>/dev/null && echo present-{sha}" for sha in secrets)
    openai_server.add(
        Reply(tool_calls=(call("bash", command=f"ls -A . tests; cat {TEST_FILE}; git log --all --format=%s; "
                                               f"{probes}; grep -rn 'def mul' . ; echo end"),)),
        Reply(tool_calls=(call("editor", command="str_replace", path=SOURCE_FILE, old_str="    return a + b\n",
                               new_str="    return a + b\n\n\ndef mul(a, b):\n    return abs(a * b)\n"),)),
        Reply(tool_calls=(call("submit", summary="mul, without signs"),)))
    output = tmp_path / "out"
    args = ["eval", "swe-dev", "--tasks", str(tasks), "--repos", str(task.mirrors_dir), "--output", str(output),
            "--env-specs", str(env_specs), "--cache-dir", str(env_cache)]
    done = kcode(args, tmp_path, openai_server)
    assert done.returncode == 0, done.stderr
    assert "mean pass rate 0.667 over 1 task(s)" in done.stderr

    seen = openai_server.chat_requests[1].body["messages"][-1]["content"]
    assert "'tests': No such file or directory" in seen and f"{TEST_FILE}: No such file or directory" in seen
    assert "present-" not in seen and seen.rstrip().endswith("end")
    assert "Fix mul" not in seen and "Add mul()" not in seen and "SWE-Dev task calc-test_mul" in seen
    assert "def mul" not in seen  # neither the reference nor the hidden tests are anywhere in the workspace
    task_prompt = openai_server.chat_requests[0].body["messages"][1]["content"]
    assert "Implement `mul(a, b)`" in task_prompt

    instance = output / "instances" / "calc-test_mul"
    score = json.loads((instance / "swe_dev.json").read_text())
    assert (score["status"], score["pass_rate"]) == ("scored", 2 / 3)
    assert score["passed"] == [f"{TEST_FILE}::test_add", f"{TEST_FILE}::test_mul"]
    assert score["failed"] == [f"{TEST_FILE}::test_mul_negative"]
    assert "3 passed" in (instance / "reference_output.txt").read_text()
    summary = json.loads((output / "swe_dev_summary.json").read_text())
    assert summary == {"total_tasks": 1, "mean_pass_rate": 0.6667, "pass_rates": {"calc-test_mul": 0.6667},
                       "error_ids": []}
    [prediction] = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert "+    return abs(a * b)" in prediction["model_patch"] and "tests/" not in prediction["model_patch"]

    requests = len(openai_server.chat_requests)
    again = kcode([*args, "--json"], tmp_path, openai_server)
    assert again.returncode == 0 and len(openai_server.chat_requests) == requests
    assert json.loads(again.stdout.splitlines()[-1])["mean_pass_rate"] == 0.6667


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
