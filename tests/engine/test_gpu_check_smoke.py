"""bench/gpu_check.py runs end to end on the CPU (`--smoke`): every section reports a figure or a reason, none
fails, and the goals read their figures, so the one GPU run the issue gets is not spent on a broken script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_reports_every_section_and_goal() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KCODE_KERNELS", "TRITON_INTERPRET")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "failed:" not in out, out
    for header in ("device-to-device copy", "block-fp8 GEMM", "fused MoE", "MLA decode", "decode and prefill", "goals"):
        assert f"== {header}" in out, out
    for model in ("k2-2.2b", "moonlight-16b"):
        for label in ("bf16", "fp8"):
            assert f"{model} {label}:" in out, out
    assert out.count("decode batch") == 8  # batches 1 and 2, two models, two precisions
    assert out.count("prefill of 32 tokens") == 4
    assert "fp8 / bf16, decode b1" in out
    goals = out.split("== goals (issue 11) ==")[1]
    assert "not measured" not in goals, goals  # every goal found its figure
