"""The SWE-bench harness's costs per instance, measured against the obvious alternatives.

Pruning: `prepare_workspace` (copy the mirror's packs, repack what the base commit reaches, check out,
verify object by object) against what it replaces, `git clone --no-local` of the same mirror and a checkout
of the same base. The K2 methodology needs a pruned repository per instance, so pruning must cost about a
`git gc`, not a clone. Run: `python bench/harness.py --mirror DIR --base SHA [--runs N]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from swe_harness.repos import run_git
from swe_harness.workspace import prepare_workspace


def time_prune_vs_clone(mirror: Path, base_commit: str, runs: int = 5) -> dict[str, float]:
    """Median seconds of `prepare_workspace` and of a clone + checkout of `base_commit`, and their ratio."""

    def clone(dest: Path) -> None:
        run_git(["clone", "--quiet", "--no-local", "--no-checkout", str(mirror), str(dest)])
        run_git(["checkout", "--quiet", "--detach", base_commit], cwd=dest)

    prune_s = _median_s(lambda dest: prepare_workspace(mirror, base_commit, dest), runs)
    clone_s = _median_s(clone, runs)
    return {"runs": runs, "prepare_workspace_s": prune_s, "clone_checkout_s": clone_s, "ratio": prune_s / clone_s}


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
    args = parser.parse_args()
    if args.mirror is None or args.base is None:
        parser.print_usage()
        raise SystemExit(2)
    result = time_prune_vs_clone(args.mirror, args.base, args.runs)
    print(f"pruning {args.mirror} to {args.base[:12]}, median of {args.runs} runs each")
    print(f"  prepare_workspace                 {result['prepare_workspace_s']:7.2f} s")
    print(f"  git clone --no-local + checkout   {result['clone_checkout_s']:7.2f} s")
    print(f"  ratio                             {result['ratio']:7.2f}")


if __name__ == "__main__":
    main()
