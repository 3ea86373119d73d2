"""`kcode eval run --runs N` as a user runs it: N runs into OUTPUT/run-K, each graded by the official grader, the
mean ± sample std printed, and a rerun that resumes every run without a model call."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.kcode.openai_server import Reply, ScriptedServer
from tests.swe_harness.task_repo import TaskRepo, instance_row, write_dataset
from tests.swe_harness.test_eval_cli import call, common, kcode

pytestmark = pytest.mark.slow


def _fix(new_body: str) -> tuple[Reply, Reply]:
    """The scripted model's whole attempt: one edit of mul(), then submit."""
    edit = call("editor", command="str_replace", path="calc/__init__.py",
                old_str="def mul(a, b):\n    return a + b", new_str=f"def mul(a, b):\n    return {new_body}")
    return Reply(tool_calls=(edit,)), Reply(tool_calls=(call("submit", summary="mul fixed"),))


def test_two_graded_runs_give_the_mean_and_sample_std_and_a_rerun_resumes_both(
        task: TaskRepo, env_specs: Path, env_cache: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl", [instance_row(task, "acme__calc-1")])
    output = tmp_path / "out"
    openai_server.add(*_fix("a * b"), *_fix("a * b + 1"))  # run-1 fixes mul(); run-2 gets it wrong
    args = ["eval", "run", "--runs", "2", "--timeout", "120", *common(task, dataset, output, env_specs, env_cache)]
    first = kcode(args, tmp_path, openai_server)
    assert first.returncode == 0, first.stderr

    summaries = [json.loads((output / f"run-{k}" / "summary.json").read_text()) for k in (1, 2)]
    assert summaries[0]["resolved_ids"] == ["acme__calc-1"] and summaries[1]["unresolved_ids"] == ["acme__calc-1"]
    for k in (1, 2):
        assert len((output / f"run-{k}" / "predictions.jsonl").read_text().splitlines()) == 1
        assert (output / f"run-{k}" / "instances" / "acme__calc-1" / "report.json").is_file()
    rates = [s["resolved_instances"] / s["total_instances"] for s in summaries]
    mean, std = statistics.mean(rates), statistics.stdev(rates)  # 0.5 and 0.7071 by hand
    assert first.stdout.splitlines() == [
        "run-1: resolved 1 of 1 (100.0%)", "run-2: resolved 0 of 1 (0.0%)",
        f"resolved rate: {100 * mean:.1f}% ± {100 * std:.2f} pp (mean ± sample std over 2 runs)"]
    assert "run 2 of 2 into" in first.stderr

    requests = len(openai_server.chat_requests)
    again = kcode([*args, "--json"], tmp_path, openai_server)
    assert again.returncode == 0, again.stderr
    assert len(openai_server.chat_requests) == requests  # every instance of both runs was finished
    events = [json.loads(line) for line in again.stdout.splitlines()]
    finished = [e for e in events if e["type"] == "instance_finished"]
    assert len(finished) == 4 and all(e["resumed"] for e in finished)  # 2 runs × (run + grade)
    assert [e["run"] for e in events if e["type"] == "run_started"] == [1, 2]
    spread = events[-1]
    assert spread["type"] == "runs" and spread["std_kind"] == "sample"
    assert [run["resolved_rate"] for run in spread["runs"]] == rates
    assert spread["mean_resolved_rate"] == pytest.approx(mean) and spread["std_resolved_rate"] == pytest.approx(std)


def test_a_plain_run_without_runs_neither_grades_nor_makes_run_directories(
        task: TaskRepo, env_specs: Path, env_cache: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl", [instance_row(task, "acme__calc-1")])
    output = tmp_path / "out"
    openai_server.add(*_fix("a * b"))
    done = kcode(["eval", "run", *common(task, dataset, output, env_specs, env_cache)], tmp_path, openai_server)
    assert done.returncode == 0, done.stderr
    assert (output / "predictions.jsonl").is_file()
    assert not (output / "summary.json").exists() and not (output / "run-1").exists()
