"""Datasets load offline from every format SWE-bench ships, and broken rows name their instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from swe_harness.dataset import load_dataset, parse_slice, select_instances
from swe_harness.errors import HarnessError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "swebench"


def row(instance_id: str = "acme__calc-1", **changes: Any) -> dict[str, Any]:
    base = {"instance_id": instance_id, "repo": "acme/calc", "base_commit": "a" * 40, "patch": "diff --git a/x b/x\n",
            "test_patch": "diff --git a/t b/t\n", "problem_statement": "add() is wrong", "version": "1.0",
            "FAIL_TO_PASS": '["t.py::test_new"]', "PASS_TO_PASS": ["t.py::test_old"], "hints_text": "",
            "created_at": "2024-01-01", "environment_setup_commit": "b" * 40, "difficulty": "easy"}
    return {**base, **changes}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", "datasets"])
def test_every_format_loads_the_same_instances_with_unknown_columns_kept(tmp_path: Path, suffix: str) -> None:
    rows = [row(), row("acme__calc-2", FAIL_TO_PASS=["t.py::a", "t.py::b"])]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".parquet":
        as_text = [{**r, "PASS_TO_PASS": json.dumps(r["PASS_TO_PASS"]),
                    "FAIL_TO_PASS": r["FAIL_TO_PASS"] if isinstance(r["FAIL_TO_PASS"], str)
                    else json.dumps(r["FAIL_TO_PASS"])} for r in rows]
        pq.write_table(pa.Table.from_pylist(as_text), path)
    else:
        datasets = pytest.importorskip("datasets")
        as_text = [{**r, "PASS_TO_PASS": json.dumps(r["PASS_TO_PASS"]),
                    "FAIL_TO_PASS": r["FAIL_TO_PASS"] if isinstance(r["FAIL_TO_PASS"], str)
                    else json.dumps(r["FAIL_TO_PASS"])} for r in rows]
        datasets.Dataset.from_list(as_text).save_to_disk(str(path))
    first, second = load_dataset(path)
    assert (first.instance_id, second.instance_id) == ("acme__calc-1", "acme__calc-2")
    assert first.fail_to_pass == ("t.py::test_new",) and first.pass_to_pass == ("t.py::test_old",)
    assert second.fail_to_pass == ("t.py::a", "t.py::b")
    assert first.row["difficulty"] == "easy" and first.environment_setup_commit == "b" * 40
    assert first.mirror_name == "acme__calc"
    assert first.grading_record()["FAIL_TO_PASS"] == ["t.py::test_new"]


def test_the_shared_swe_bench_verified_file_loads(tmp_path: Path) -> None:
    path = SHARED / "SWE-bench_Verified_test.parquet"
    if not path.exists():
        pytest.skip("../shared/swebench is not beside this checkout")
    instances = load_dataset(path)
    assert len(instances) == 500
    requests = select_instances(instances, ["psf__requests-1142"])[0]
    assert requests.repo == "psf/requests" and requests.fail_to_pass and "eval_script" in requests.row


@pytest.mark.parametrize(("changes", "message"), [
    ({"base_commit": None}, "instance acme__calc-1 lacks base_commit"),
    ({"FAIL_TO_PASS": "not json"}, "acme__calc-1: FAIL_TO_PASS is neither a list nor a JSON list"),
    ({"PASS_TO_PASS": [1, 2]}, "acme__calc-1: PASS_TO_PASS must be a list of test names"),
])
def test_a_broken_row_is_an_error_naming_its_instance(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row(**changes)) + "\n")
    with pytest.raises(HarnessError, match=message):
        load_dataset(path)


def test_a_row_without_an_id_is_named_by_its_position(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([row(), {k: v for k, v in row("x").items() if k != "instance_id"}]))
    with pytest.raises(HarnessError, match="instance row 2 lacks instance_id"):
        load_dataset(path)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json\n", r"data\.jsonl:1: not JSON"),
    ("[1, 2]\n", "expected a JSON object per line"),
])
def test_unreadable_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(HarnessError, match=message):
        load_dataset(path)


def test_other_files_and_duplicates_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(HarnessError, match=r"expected \.parquet, \.json, \.jsonl"):
        load_dataset(tmp_path / "data.csv")
    with pytest.raises(HarnessError, match="does not exist"):
        load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "dup.jsonl").write_text(json.dumps(row()) + "\n" + json.dumps(row()) + "\n")
    with pytest.raises(HarnessError, match="acme__calc-1 appears twice"):
        load_dataset(tmp_path / "dup.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match=r"no \.arrow files"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "data-00000-of-00001.arrow").write_bytes(b"not arrow")
    with pytest.raises(HarnessError, match="cannot read dataset"):
        load_dataset(tmp_path / "empty")


def test_selection_by_ids_pattern_and_slice(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row(f"{repo}-{n}")) + "\n" for repo in ("psf__requests", "pallets__flask")
                            for n in range(3)))
    instances = load_dataset(path)
    assert [i.instance_id for i in select_instances(instances, pattern="psf__*", slice_spec="1:")] == [
        "psf__requests-1", "psf__requests-2"]
    assert [i.instance_id for i in select_instances(instances, ["pallets__flask-2", "psf__requests-0"])] == [
        "psf__requests-0", "pallets__flask-2"]
    assert len(select_instances(instances, slice_spec=":-1")) == 5
    with pytest.raises(HarnessError, match="not in the dataset: psf__requests-9"):
        select_instances(instances, ["psf__requests-9"])


@pytest.mark.parametrize("spec", ["5", "a:b", "1:2:3"])
def test_a_bad_slice_shows_the_form(spec: str) -> None:
    with pytest.raises(HarnessError, match="--slice takes START:STOP"):
        parse_slice(spec)
