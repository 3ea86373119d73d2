"""SWE-bench instances read from disk, offline: parquet, JSON, JSONL, or a directory saved by `datasets`.

Every column is kept (the official grader reads `eval_script`, `log_parser`, `eval_type` and `image` from the
row in SWE-bench 5.x data); the ones every stage needs are checked on load, so a broken row is an error
naming its instance before any money is spent on a model. A row written by hand needs only REQUIRED_FIELDS:
without `test_patch` the tests named are already in the repository, without `patch` there is no gold patch to
check the environment with, and without `version` the repository's spec must hold for every version.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swe_harness.errors import HarnessError

REQUIRED_FIELDS = ("instance_id", "repo", "base_commit", "problem_statement", "FAIL_TO_PASS", "PASS_TO_PASS")
"""What the run and grade stages need of every row; other columns are optional and kept as they are."""
OPTIONAL_FIELDS = ("patch", "test_patch", "version")
"""Columns every SWE-bench row has and a hand-written one may leave out: each is then the empty string."""


@dataclass(frozen=True)
class Instance:
    """One task: a repository at a commit, an issue, and the tests that decide whether it is fixed."""

    instance_id: str
    repo: str
    """`owner/name` on GitHub."""
    base_commit: str
    problem_statement: str
    version: str
    gold_patch: str
    test_patch: str
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    row: Mapping[str, Any]
    """The whole record as read, unknown columns included."""

    @property
    def environment_setup_commit(self) -> str:
        """The commit whose dependencies the environment is built from; the base commit when not given."""
        return str(self.row.get("environment_setup_commit") or self.base_commit)

    @property
    def mirror_name(self) -> str:
        """The directory name of this repository's mirror under `--repos`: `owner__name`."""
        return self.repo.replace("/", "__")

    def grading_record(self) -> dict[str, Any]:
        """The row as SWE-bench's `make_test_spec` takes it, with the test lists as JSON lists."""
        return {**self.row, "version": self.version, "FAIL_TO_PASS": list(self.fail_to_pass),
                "PASS_TO_PASS": list(self.pass_to_pass)}


def load_dataset(path: Path) -> list[Instance]:
    """Every instance in `path`, in file order; raises HarnessError for unreadable files and broken rows."""
    if not path.exists():
        raise HarnessError(f"dataset {path} does not exist")
    rows = _read_rows(path)
    instances = [_instance(row, index, path) for index, row in enumerate(rows)]
    refuse_repeats([instance.instance_id for instance in instances], path, "instance")
    return instances


def refuse_repeats(ids: Sequence[str], path: Path, kind: str) -> None:
    """HarnessError naming the first id that `path` holds twice: results are filed by id."""
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise HarnessError(f"{path}: {kind} {item} appears twice")
        seen.add(item)


def select_instances(instances: Sequence[Instance], ids: Iterable[str] = (), *, pattern: str | None = None,
                     slice_spec: str | None = None) -> list[Instance]:
    """The instances named by `ids`, matching the glob `pattern`, then within `slice_spec` (`A:B`, Python's
    slice of what is left); unknown ids are an error, so a typo never silently runs nothing."""
    chosen = list(instances)
    wanted = list(ids)
    if wanted:
        known = {instance.instance_id for instance in instances}
        unknown = [instance_id for instance_id in wanted if instance_id not in known]
        if unknown:
            raise HarnessError(f"not in the dataset: {', '.join(unknown)}")
        chosen = [instance for instance in chosen if instance.instance_id in set(wanted)]
    if pattern is not None:
        chosen = [instance for instance in chosen if fnmatch.fnmatchcase(instance.instance_id, pattern)]
    if slice_spec is not None:
        chosen = chosen[parse_slice(slice_spec)]
    return chosen


def parse_slice(spec: str) -> slice:
    """`A:B`, `A:` or `:B` as a slice; anything else is a HarnessError that shows the form."""
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(part) if part.strip() else None for part in parts)
    except ValueError:
        raise HarnessError(f"--slice takes START:STOP (for example 0:50), got {spec!r}") from None
    return slice(start, stop)


def _read_rows(path: Path) -> list[Mapping[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            return _read_saved_dataset(path)
        if suffix == ".parquet":
            import pyarrow.parquet as pq  # the `swe` extra; only parquet needs it

            return list(pq.read_table(path).to_pylist())
        text = path.read_text(encoding="utf-8")
        if suffix == ".jsonl":
            return [_json_object(line, f"{path}:{number}") for number, line in enumerate(text.splitlines(), 1)
                    if line.strip()]
        if suffix == ".json":
            data = json.loads(text)
            if isinstance(data, dict):  # {instance_id: row}, as some tools save it
                data = list(data.values())
            if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
                raise HarnessError(f"{path}: expected a JSON list of instance objects")
            return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarnessError(f"cannot read dataset {path}: {exc}") from None
    except ImportError:
        raise HarnessError("reading parquet needs pyarrow: pip install 'kcode[swe]'") from None
    except Exception as exc:  # pyarrow raises its own error types for a damaged file
        if type(exc).__module__.startswith("pyarrow"):
            raise HarnessError(f"cannot read dataset {path}: {exc}") from None
        raise
    raise HarnessError(f"dataset {path}: expected .parquet, .json, .jsonl or a directory saved by `datasets`")


def _read_saved_dataset(path: Path) -> list[Mapping[str, Any]]:
    """A `Dataset.save_to_disk` directory (arrow files), or a `DatasetDict` one holding a `test` split."""
    if not (path / "dataset_info.json").exists() and (path / "test" / "dataset_info.json").exists():
        path = path / "test"
    arrow_files = sorted(path.glob("*.arrow"))
    if not arrow_files:
        raise HarnessError(f"{path} is a directory but holds no dataset saved by `datasets` (no .arrow files)")
    import pyarrow as pa

    rows: list[Mapping[str, Any]] = []
    for arrow_file in arrow_files:
        with pa.memory_map(str(arrow_file)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def _json_object(line: str, where: str) -> Mapping[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise HarnessError(f"{where}: expected a JSON object per line")
    return value


def _instance(row: Mapping[str, Any], index: int, path: Path) -> Instance:
    name = str(row.get("instance_id") or f"row {index + 1}")
    missing = [field for field in REQUIRED_FIELDS if row.get(field) is None]
    if missing:
        raise HarnessError(f"{path}: instance {name} lacks {', '.join(missing)} (a row needs "
                           f"{', '.join(REQUIRED_FIELDS)}; {', '.join(OPTIONAL_FIELDS)} may be left out)")
    optional = {field: "" if row.get(field) is None else str(row[field]) for field in OPTIONAL_FIELDS}
    return Instance(
        instance_id=str(row["instance_id"]), repo=str(row["repo"]), base_commit=str(row["base_commit"]),
        problem_statement=str(row["problem_statement"]), version=optional["version"],
        gold_patch=optional["patch"], test_patch=optional["test_patch"],
        fail_to_pass=_test_list(row["FAIL_TO_PASS"], "FAIL_TO_PASS", name),
        pass_to_pass=_test_list(row["PASS_TO_PASS"], "PASS_TO_PASS", name), row=dict(row))


def _test_list(value: Any, field: str, name: str) -> tuple[str, ...]:
    """A test list given as a list, or as the JSON string of one (some SWE-bench releases store it so)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise HarnessError(f"instance {name}: {field} is neither a list nor a JSON list") from None
    if not isinstance(value, list | tuple) or not all(isinstance(test, str) for test in value):
        raise HarnessError(f"instance {name}: {field} must be a list of test names")
    return tuple(value)
