"""Per-call cost of kcode's persistent bash session next to spawning `bash -c` per call, in the same run.

The session pays no fork or exec of bash per call, only a line down a pipe, a completion record back
and the output file; its per-call time should sit well below a fresh `bash -c`. Both sides capture the
output and decode it. Run: `python bench/bash_session.py [--calls N]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tools.bash import BashTool
from tools.clamp import OutputClamp
from tools.settings import ToolSettings
from tools.workspace import Workspace

COMMANDS = ("true", "echo hi", "cd . && export X=1 && echo $X")


def _per_call_ms(call: Callable[[str], str], command: str, calls: int, expected: str) -> float:
    """Median of five rounds of `calls` calls, so a busy neighbour on a shared machine skews less."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            output = call(command)
        rounds.append((time.perf_counter() - start) / calls * 1000)
        if output != expected:
            raise RuntimeError(f"{command!r} gave {output!r}, expected {expected!r}")
    return statistics.median(rounds)


def _spawn(command: str) -> str:
    done = subprocess.run(["bash", "--noprofile", "--norc", "-c", command], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, timeout=120)
    return done.stdout.decode("utf-8", errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per round (five rounds per case)")
    calls = parser.parse_args().calls
    with tempfile.TemporaryDirectory(prefix="kcode-bench-") as scratch:
        root = Path(scratch) / "ws"
        root.mkdir()
        clamp = OutputClamp(ToolSettings(), Path(scratch) / "spill")
        with BashTool(Workspace(root), ToolSettings(), clamp) as tool:
            start = time.perf_counter()
            tool.run({"command": "true"})
            first_ms = (time.perf_counter() - start) * 1000

            def session(command: str) -> str:
                return tool.run({"command": command}).output

            print(f"{calls} calls x 5 rounds per case, median per-call time; first session call (starts "
                  f"bash): {first_ms:.1f} ms")
            print(f"  {'command':<32} {'session':>9} {'bash -c':>9} {'ratio':>7}")
            for command in COMMANDS:
                expected = _spawn(command)
                ours = _per_call_ms(session, command, calls, expected or "[no output]")
                peer = _per_call_ms(_spawn, command, calls, expected)
                print(f"  {command:<32} {ours:7.3f}ms {peer:7.3f}ms {peer / ours:6.1f}x")


if __name__ == "__main__":
    main()
