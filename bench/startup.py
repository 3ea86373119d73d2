"""Start-up time of `kcode --help` next to `python -c "import openai"`, measured in the same run.

kcode must not pay for the openai SDK (or torch) before it needs them, so its start-up should sit
well below the SDK's import time. Run: `python bench/startup.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _median_seconds(command: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    python = sys.executable
    cases = {
        "python -c pass": [python, "-c", "pass"],
        "kcode --help": [python, "-m", "kcode", "--help"],
        "kcode --version": [python, "-m", "kcode", "--version"],
        'python -c "import openai"': [python, "-c", "import openai"],
    }
    times = {name: _median_seconds(command, runs) for name, command in cases.items()}
    peer = times['python -c "import openai"']
    print(f"median of {runs} runs each")
    for name, seconds in times.items():
        print(f"  {name:<28} {seconds * 1000:7.0f} ms   {seconds / peer:5.2f}x import openai")


if __name__ == "__main__":
    main()
