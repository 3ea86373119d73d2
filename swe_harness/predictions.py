"""Predictions in SWE-bench's format: JSON lines of `instance_id`, `model_name_or_path` and `model_patch`.

`run` appends a line as each instance finishes, flushed, so a crash or Ctrl-C keeps every finished one and
a rerun skips them; a line cut off by a crash is dropped on the next load instead of failing the run.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swe_harness.errors import HarnessError


@dataclass(frozen=True)
class Prediction:
    instance_id: str
    model_name_or_path: str
    model_patch: str | None

    def to_json(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "model_name_or_path": self.model_name_or_path,
                "model_patch": self.model_patch}


def load_predictions(path: Path) -> dict[str, Prediction]:
    """Predictions from a `.jsonl` file (or a `.json` list or `{id: prediction}` map), the last one per id
    winning; a malformed line is an error naming it, except a cut-off last line, which is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read predictions {path}: {exc}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}: not JSON ({exc.msg})") from None
        records = list(data.values()) if isinstance(data, dict) else data
        if not isinstance(records, list):
            raise HarnessError(f"{path}: expected a list of predictions or a map of them by instance id")
        return _parsed(records, path)
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                break  # the line a crash cut off: that instance simply counts as not done
            raise HarnessError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return _parsed(records, path)


class PredictionWriter:
    """Appends predictions to a JSONL file, one whole line at a time, from any number of worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path.exists():  # rewrite without a cut-off last line, so appends start on a line of their own
            kept = load_predictions(path).values()
            fresh = path.with_name(f".{path.name}.tmp")
            fresh.write_text("".join(json.dumps(p.to_json()) + "\n" for p in kept), encoding="utf-8")
            os.replace(fresh, path)  # a crash right now must not lose predictions already paid for

    def append(self, prediction: Prediction) -> None:
        line = json.dumps(prediction.to_json()) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


def _parsed(records: list[Any], path: Path) -> dict[str, Prediction]:
    predictions: dict[str, Prediction] = {}
    for index, record in enumerate(records, 1):
        if not isinstance(record, Mapping) or not isinstance(record.get("instance_id"), str):
            raise HarnessError(f"{path}: prediction {index} has no instance_id")
        patch = record.get("model_patch")
        if patch is not None and not isinstance(patch, str):
            raise HarnessError(f"{path}: the model_patch of {record['instance_id']} is not text")
        predictions[record["instance_id"]] = Prediction(record["instance_id"],
                                                        str(record.get("model_name_or_path") or "unknown"), patch)
    return predictions
