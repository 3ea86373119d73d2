"""The SWE-bench harness's costs per instance, measured against the obvious alternatives.

Pruning: `prepare_workspace` (copy the mirror's packs, repack what the base commit reaches, check out,
verify object by object) against what it replaces, `git clone --no-local` of the same mirror and a checkout
of the same base. The K2 methodology needs a pruned repository per instance, so pruning must cost about a
`git gc`, not a clone. Run: `python bench/harness.py --mirror DIR --base SHA [--runs N]`.

Grading: where a gold grading of one instance spends its time, building the environment against running the
tests, first with an empty environment cache (the first instance of a (repository, version)) and then with
the environment built (every later one). Run: `python bench/harness.py --dataset FILE --instance ID --repos DIR`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from swe_harness.dataset import load_dataset, select_instances
from swe_harness.grading import REPORT_FILE, grade_prediction
from swe_harness.network import no_network_prefix
from swe_harness.repos import run_git
from swe_harness.testbed import TestbedOptions
from swe_harness.workspace import prepare_workspace


def time_prune_vs_clone(mirror: Path, base_commit: str, runs: int = 5) -> dict[str, float]:
    """Median seconds of `prepare_workspace` and of a clone + checkout of `base_commit`, and their ratio."""

    def clone(dest: Path) -> None:
        run_git(["clone", "--quiet", "--no-local", "--no-checkout", str(mirror), str(dest)])
        run_git(["checkout", "--quiet", "--detach", base_commit], cwd=dest)

    prune_s = _median_s(lambda dest: prepare_workspace(mirror, base_commit, dest), runs)
    clone_s = _median_s(clone, runs)
    return {"runs": runs, "prepare_workspace_s": prune_s, "clone_checkout_s": clone_s, "ratio": prune_s / clone_s}


def grading_shares(dataset: Path, instance_id: str, repos: Path) -> list[dict[str, float]]:
    """Seconds of a gold grading's stages, cold then warm: the environment's build, the rest of the setup
    (pruned workspace, the instance's copy of the environment, its install), and the eval script (the
    reinstall and the tests)."""
    [instance] = select_instances(load_dataset(dataset), [instance_id])
    rounds = []
    with tempfile.TemporaryDirectory(prefix="kcode-bench-") as scratch:
        options = TestbedOptions(repos_dir=repos, cache_dir=Path(scratch) / "cache", base_env=dict(os.environ),
                                 clone_missing=False)
        for name in ("cold", "warm"):
            out = Path(scratch) / name
            started = time.perf_counter()
            outcome = grade_prediction(instance, instance.gold_patch, "gold", options, out,
                                       network_prefix=no_network_prefix(), timeout_s=1800)
            total = time.perf_counter() - started
            if outcome.verdict == "error":
                raise SystemExit(f"grading {instance_id} failed: {outcome.detail}")
            seconds = json.loads((out / REPORT_FILE).read_text())[instance_id]["seconds"]
            rounds.append({"total_s": total, "build_s": seconds["environment_build"],
                           "setup_s": seconds["setup"] - seconds["environment_build"],
                           "eval_s": seconds["eval_script"],
                           "resolved": float(outcome.verdict == "resolved")})
    return rounds


def _median_s(make: Callable[[Path], None], runs: int) -> float:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="kcode-bench-") as scratch:
            started = time.perf_counter()
            make(Path(scratch) / "repo")
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mirror", type=Path, help="a mirror's git directory (bare, or a working tree's .git)")
    parser.add_argument("--base", help="the base commit to prune to")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dataset", type=Path, help="a SWE-bench dataset file, for the grading figures")
    parser.add_argument("--instance", help="the instance whose gold patch to grade")
    parser.add_argument("--repos", type=Path, help="the mirrors directory (owner__name)")
    args = parser.parse_args()
    prune = args.mirror is not None and args.base is not None
    grade = args.dataset is not None and args.instance is not None and args.repos is not None
    if not prune and not grade:
        parser.print_usage()
        raise SystemExit(2)
    if prune:
        result = time_prune_vs_clone(args.mirror, args.base, args.runs)
        print(f"pruning {args.mirror} to {args.base[:12]}, median of {args.runs} runs each")
        print(f"  prepare_workspace                 {result['prepare_workspace_s']:7.2f} s")
        print(f"  git clone --no-local + checkout   {result['clone_checkout_s']:7.2f} s")
        print(f"  ratio                             {result['ratio']:7.2f}")
    if grade:
        print(f"gold grading of {args.instance}: share of the time per stage")
        for name, stages in zip(("empty cache", "environment built"), grading_shares(args.dataset, args.instance,
                                                                                   args.repos), strict=True):
            total = stages["total_s"]
            parts = "  ".join(f"{stage} {stages[f'{stage}_s']:6.1f} s ({stages[f'{stage}_s'] / total:4.0%})"
                              for stage in ("build", "setup", "eval"))
            print(f"  {name:<18} total {total:6.1f} s  {parts}  resolved={bool(stages['resolved'])}")


if __name__ == "__main__":
    main()
