"""The README's Python example runs as written (on a checkpoint made the way the README makes it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example, "the README lost its Python example"
    checkpoint = tmp_path / "tiny"
    make = re.search(r"kcode engine make-tiny /tmp/tiny( .*?)\s+#", readme)
    assert make, "the README lost its make-tiny command"
    subprocess.run([sys.executable, "-m", "kcode", "engine", "make-tiny", str(checkpoint), *make.group(1).split()],
                   check=True, capture_output=True, timeout=120)
    code = example.group(1).replace("/tmp/tiny", str(checkpoint))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) >= 2 and "'role': 'assistant'" in lines[-1]
