"""The two commands the README leads with: `make demo` and `make test` set up exactly as the README's step-by-step
set-up does, only once, and CI runs the README's test command. The demo runs for real (on a copy of the tree,
with this venv standing in for a set-up one); `make test` is checked with `make -n`, since running it here would
run this suite inside itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _bash_blocks(text: str) -> list[list[str]]:
    """The README's ```bash blocks, as their command lines with comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [[line.split("  #")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


def _copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "examples", tree / "examples")
    return tree


def _make(tree: Path, *args: str, env: dict[str, str] | None = None,
          prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, "make", "-C", str(tree), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def _without_network() -> tuple[str, ...]:
    """A prefix that runs a command in a network namespace of its own, where this machine allows one."""
    unshare = ("unshare", "--user", "--map-root-user", "--net")
    works = shutil.which("unshare") and subprocess.run([*unshare, "true"], capture_output=True).returncode == 0
    return unshare if works else ()


def _readme_setup() -> list[str]:
    """The step-by-step set-up: the block that creates the venv, with its `pip install` lines."""
    block = next(b for b in _bash_blocks((ROOT / "README.md").read_text()) if b[0].startswith("python3 -m venv"))
    return [line for line in block if line.startswith("pip install")]


def test_the_readme_leads_with_make_demo_and_make_test_and_ci_runs_its_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    first = _bash_blocks(readme)[0]
    assert [line.split()[:2] for line in first] == [["make", "demo"], ["make", "test"]]
    test_section = readme.split("## Run the tests", 1)[1]
    command = _bash_blocks(test_section)[0]
    assert command == ["make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'^make test VENV="\$\(mktemp -d\)/venv"$', ci, re.M), "CI must run it in a fresh venv"


def test_set_up_is_the_readmes_steps_and_runs_only_until_it_is_done(tmp_path: Path) -> None:
    tree = _copy_of_the_tree(tmp_path)
    fresh = _make(tree, "-n", "test", "VENV=v")
    assert fresh.returncode == 0, fresh.stderr
    expected = ["python3 -m venv v", *(f"v/bin/{step}" for step in _readme_setup()), "touch v/.kcode-setup",
                ". v/bin/activate && ruff check . && mypy && python -m pytest -q"]
    assert [line for line in fresh.stdout.splitlines() if not line.startswith("make")] == expected

    (tree / "v").mkdir()
    (tree / "v" / ".kcode-setup").touch()
    assert _make(tree, "-q", "setup", "VENV=v").returncode == 0, "set-up should count as done"
    again = _make(tree, "-n", "test", "VENV=v")
    assert "pip install" not in again.stdout and "python -m pytest -q" in again.stdout

    stamp = (tree / "v" / ".kcode-setup").stat().st_mtime
    os.utime(tree / "pyproject.toml", (stamp + 10, stamp + 10))
    assert "pip install" in _make(tree, "-n", "demo", "VENV=v").stdout, "a changed pyproject.toml sets up again"


@pytest.mark.slow
def test_make_demo_fixes_a_copy_of_the_example_offline_and_touches_nothing_else(tmp_path: Path) -> None:
    tree = _copy_of_the_tree(tmp_path)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "kcode").symlink_to(Path(sys.executable).parent / "kcode")
    (venv / ".kcode-setup").touch()  # this test's venv is set up already: the demo part is what runs
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "KCODE_")) and not k.endswith("_API_KEY")}
    env |= {"HOME": str(home), "TMPDIR": str(scratch)}
    example = {p.name: p.read_bytes() for p in (tree / "examples" / "calc").iterdir()}

    done = _make(tree, "demo", f"VENV={venv}", env=env, prefix=_without_network())

    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install" not in done.stdout
    assert "kcode exited 1: it finished without changes" in done.stdout
    assert "done:" in done.stderr, "kcode fix printed no final status line"
    assert {p.name: p.read_bytes() for p in (tree / "examples" / "calc").iterdir()} == example
    assert not list(home.iterdir()) and not list(scratch.iterdir()), "the demo left files behind"
    assert _make(tree, "-q", "setup", f"VENV={venv}").returncode == 0, "a second run would set up again"
