"""The engine stays installable next to a CPU torch: its extra does not pull in triton (a CUDA torch brings its
own), nothing imports triton to build or run a model, and a tiny checkpoint's files all get the same mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_engine_extra_does_not_list_triton() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["engine"], "the engine extra vanished"
    assert not [dep for dep in extras["engine"] if dep.lower().startswith("triton")]


def test_building_and_running_the_tiny_model_never_imports_triton(tmp_path: Path) -> None:
    code = f"""
import sys
from engine import LLM, SamplingParams, make_tiny
for dtype in ("bf16", "fp8"):
    path = make_tiny({str(tmp_path)!r} + "/" + dtype, dtype=dtype)
    LLM(path, dtype="float32").generate("def add(a, b):", SamplingParams(temperature=0, max_tokens=2))
print(sorted(name for name in sys.modules if name.split(".")[0] == "triton"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_make_tiny_writes_every_file_with_the_umask_mode(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny"
    done = subprocess.run(
        [sys.executable, "-m", "kcode", "engine", "make-tiny", str(checkpoint), "--shards", "2"],
        capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o027),
    )
    assert done.returncode == 0, done.stderr
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in checkpoint.iterdir()}
    assert any(name.endswith(".safetensors") for name in modes)
    assert set(modes.values()) == {0o640}, modes
