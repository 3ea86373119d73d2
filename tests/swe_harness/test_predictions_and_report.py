"""Predictions survive a crash mid-line, and the summary has SWE-bench's shape and counting rules."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from swe_harness.errors import HarnessError
from swe_harness.predictions import Prediction, PredictionWriter, load_predictions
from swe_harness.report import resolved_rate, run_summary


def test_writer_appends_whole_lines_from_many_threads_and_a_reload_reads_them(tmp_path: Path) -> None:
    writer = PredictionWriter(tmp_path / "predictions.jsonl")
    threads = [threading.Thread(target=writer.append, args=(Prediction(f"i-{n}", "m", "x" * 10_000),))
               for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loaded = load_predictions(tmp_path / "predictions.jsonl")
    assert sorted(loaded) == sorted(f"i-{n}" for n in range(20))
    assert all(p.model_patch == "x" * 10_000 and p.model_name_or_path == "m" for p in loaded.values())


def test_a_line_cut_off_by_a_crash_is_dropped_and_appends_start_clean(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"instance_id": "a", "model_name_or_path": "m", "model_patch": "p"}) + "\n"
                    + '{"instance_id": "b", "model_pa')
    assert list(load_predictions(path)) == ["a"]
    PredictionWriter(path).append(Prediction("c", "m", ""))
    assert list(load_predictions(path)) == ["a", "c"]
    assert path.read_text().count("\n") == 2


def test_json_maps_and_lists_load_and_bad_records_are_named(tmp_path: Path) -> None:
    as_map = tmp_path / "preds.json"
    as_map.write_text(json.dumps({"a": {"instance_id": "a", "model_name_or_path": "m", "model_patch": None}}))
    assert load_predictions(as_map)["a"].model_patch is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model_patch": "x"}\n')
    with pytest.raises(HarnessError, match="prediction 1 has no instance_id"):
        load_predictions(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{oops\n{"instance_id": "a"}\n')
    with pytest.raises(HarnessError, match=r"broken\.jsonl:1: not JSON"):
        load_predictions(broken)
    with pytest.raises(HarnessError, match="cannot read predictions"):
        load_predictions(tmp_path / "missing.jsonl")


def test_summary_counts_as_swe_bench_does() -> None:
    summary = run_summary(["r", "u", "e", "x", "none", "crashed"], ["r", "u", "e", "x", "crashed", "not-in-set"],
                          {"r": "resolved", "u": "unresolved", "e": "empty", "x": "error"})
    assert summary == {
        "total_instances": 6, "submitted_instances": 5, "completed_instances": 2, "resolved_instances": 1,
        "unresolved_instances": 1, "empty_patch_instances": 1, "error_instances": 2,
        "completed_ids": ["r", "u"], "incomplete_ids": ["none"], "empty_patch_ids": ["e"],
        "submitted_ids": ["crashed", "e", "r", "u", "x"], "resolved_ids": ["r"], "unresolved_ids": ["u"],
        "error_ids": ["crashed", "x"], "schema_version": 2}
    assert resolved_rate(summary) == pytest.approx(1 / 6)
    assert resolved_rate(run_summary([], [], {})) == 0.0
