"""A small SWE-bench task over a real git repository, built offline in well under a second, for the harness tests.

The harness is only worth trusting if it is tested on what SWE-bench gives it: a row in the 5.x shape (its
`eval_script` included, test lists as JSON strings) over a repository whose history runs past the base commit.
So `make_task_repo` builds "acme/calc" with a future to leak (the fix, a later commit, tags, a branch, a stash, a
note, a remote's commit) and a bare mirror holding every ref of it, as a local mirror of a GitHub repository
would; `instance_row` describes the bug at the base; `hanging_row` and `network_row` add tests that hang or reach
the host's network, for the timeout and the isolation tests.

Commits are made with a fixed identity and fixed dates and without the user's git configuration, so every sha is
the same on every machine. Patches are built here, not copied from anywhere; the eval script has the official
shape (facts from the SWE-bench data), written out in `eval_script_for`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = "acme/calc"
MIRROR_NAME = "acme__calc"
TEST_FILE = "tests/test_calc.py"
SOURCE_FILE = "calc/__init__.py"
TEST_CMD = "pytest -rA"
INSTALL_CMD = "python -m pip --version"
"""Stands where the official script reinstalls the package: harmless, and it shows the environment's pip."""
LOOPBACK = "127.0.0.1"

_EPOCH = 1_704_164_645  # 2024-01-02T03:04:05Z: the first commit; each later step is an hour on
_IDENTITY = {"GIT_AUTHOR_NAME": "Ada Acme", "GIT_AUTHOR_EMAIL": "ada@acme.example",
             "GIT_COMMITTER_NAME": "Ada Acme", "GIT_COMMITTER_EMAIL": "ada@acme.example"}

_CALC_HEAD = '"""A tiny calculator."""\n\n\ndef add(a, b):\n    return a + b\n'
_CALC_BUGGY = _CALC_HEAD + "\n\ndef mul(a, b):\n    return a + b\n"
_CALC_FIXED = _CALC_HEAD + "\n\ndef mul(a, b):\n    return a * b\n"
_CALC_WRONG = _CALC_HEAD + "\n\ndef mul(a, b):\n    return a * b + 1\n"
_TESTS_BASE = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
_TESTS_FIXED = ("from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
                "def test_mul():\n    assert mul(3, 4) == 12\n    assert mul(0, 5) == 0\n")
_PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "calc"
version = "1.0"
dependencies = []

[tool.setuptools]
packages = ["calc"]

# Present so that pytest takes this directory as its rootdir, wherever the checkout lies.
[tool.pytest.ini_options]
"""


@dataclass(frozen=True)
class TaskRepo:
    """The task's repository, its mirror, and the commits and patches the tests refer to."""

    source: Path
    """A working tree on `main` at its newest commit, with a stash, a note, tags, a branch and a remote."""
    mirror: Path
    """A bare `--mirror` clone of `source` holding all its refs (stash, notes and remotes too): `<dir>/acme__calc`."""
    base_commit: str
    fix_commit: str
    """The base's child: `mul` fixed and `test_mul` added, as the pull request that closed the issue."""
    future_commits: tuple[str, ...]
    """Every commit of the repository the base does not reach, oldest first: what a workspace must not hold."""
    gold_patch: str
    """base → fix of calc/__init__.py, as `git diff` writes it."""
    wrong_patch: str
    """Applies at the base and changes `mul`, but to `a * b + 1`: test_mul still fails."""
    test_patch: str
    """base → fix of tests/test_calc.py: adds `test_mul` (mul(3, 4) == 12 and mul(0, 5) == 0)."""

    @property
    def mirrors_dir(self) -> Path:
        """The directory to give the harness as its mirrors (`--repos`)."""
        return self.mirror.parent


def make_task_repo(root: Path, mirrors_dir: Path | None = None) -> TaskRepo:
    """Build the repository under `root` (`root/calc`, its fork `root/upstream`) and its mirror under
    `mirrors_dir` (default `root/mirrors`); `root` may exist but must not hold those directories."""
    source, upstream = root / "calc", root / "upstream"
    mirror = (mirrors_dir or root / "mirrors") / MIRROR_NAME
    root.mkdir(parents=True, exist_ok=True)
    _git(root, "init", "-q", "-b", "main", str(source))
    _commit(source, 0, "Add add()", {SOURCE_FILE: _CALC_HEAD, TEST_FILE: _TESTS_BASE, "conftest.py": "",
                                      "pyproject.toml": _PYPROJECT, ".gitignore": "*.egg-info/\nbuild/\n"})
    base = _commit(source, 1, "Add mul()", {SOURCE_FILE: _CALC_BUGGY})
    _git(root, "clone", "-q", str(source), str(upstream))  # a fork that moves on by itself
    _commit(upstream, 2, "Document calc", {"README.md": "# calc\n"})
    fix = _commit(source, 3, "Fix mul() (#1)", {SOURCE_FILE: _CALC_FIXED, TEST_FILE: _TESTS_FIXED})
    _git(source, "tag", "fixed", fix)
    _git(source, "notes", "add", "-m", "Closes #1", fix, at=4)
    _git(source, "checkout", "-q", "-b", "feature")
    _commit(source, 5, "Add sub()", {"calc/sub.py": "def sub(a, b):\n    return a - b\n"})
    _git(source, "checkout", "-q", "main")
    later = _commit(source, 6, "Release 1.0", {"CHANGES.md": "1.0: mul() multiplies\n"})
    _git(source, "tag", "-a", "-m", "calc 1.0", "v1.0", later, at=7)
    (source / SOURCE_FILE).write_text(_CALC_FIXED + "\n\ndef div(a, b):\n    return a / b\n")
    _git(source, "stash", "push", "-q", "-m", "div, unfinished", at=8)
    _git(source, "remote", "add", "upstream", str(upstream))
    _git(source, "fetch", "-q", "upstream")
    mirror.parent.mkdir(parents=True, exist_ok=True)
    _git(root, "clone", "-q", "--mirror", str(source), str(mirror))
    future = tuple(_git(source, "rev-list", "--reverse", "--all", "--not", base).split())
    return TaskRepo(source=source, mirror=mirror, base_commit=base, fix_commit=fix, future_commits=future,
                    gold_patch=_git(source, "diff", base, fix, "--", SOURCE_FILE),
                    wrong_patch=file_patch(SOURCE_FILE, _CALC_BUGGY, _CALC_WRONG),
                    test_patch=_git(source, "diff", base, fix, "--", TEST_FILE))


def instance_row(task: TaskRepo, instance_id: str = "acme__calc-1", **changes: Any) -> dict[str, Any]:
    """The SWE-bench 5.x row of the mul() bug; `changes` replace fields. Unless `eval_script` is among them,
    the script is made from the final row's base commit and test patch, so the two always agree."""
    row: dict[str, Any] = {
        "repo": REPO, "instance_id": instance_id, "base_commit": task.base_commit,
        "patch": task.gold_patch, "test_patch": task.test_patch,
        "problem_statement": "mul() adds instead of multiplying\n\n`calc.mul(3, 4)` returns 7; it should be 12.\n",
        "hints_text": "", "created_at": "2024-01-02T05:04:05Z", "version": "1.0",
        "FAIL_TO_PASS": json.dumps([f"{TEST_FILE}::test_mul"]), "PASS_TO_PASS": json.dumps([f"{TEST_FILE}::test_add"]),
        "environment_setup_commit": task.base_commit, "difficulty": "<15 min fix",
        "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail", "image": "",
    }
    row |= changes
    if "eval_script" not in changes:
        row["eval_script"] = eval_script_for(str(row["base_commit"]), str(row["test_patch"]),
                                             patched_files(str(row["test_patch"])), TEST_CMD)
    return row


def hanging_row(task: TaskRepo, instance_id: str = "acme__calc-2") -> dict[str, Any]:
    """A row whose one FAIL_TO_PASS test sleeps for an hour: only a timeout ends its eval script."""
    test = "def test_sleeps():\n    import time\n\n    time.sleep(3600)\n"
    return _row_with_test(task, instance_id, "test_sleeps", test)


def network_row(task: TaskRepo, port: int, instance_id: str = "acme__calc-3") -> dict[str, Any]:
    """A row whose one FAIL_TO_PASS test sends a line to 127.0.0.1:`port` and needs a reply (any bytes).

    With a server listening on the host it passes; in a network namespace of its own it must fail.
    """
    test = ("def test_reaches_the_host():\n    import socket\n\n"
            f"    with socket.create_connection(({LOOPBACK!r}, {port}), timeout=5) as connection:\n"
            "        connection.sendall(b\"ping\\n\")\n"
            "        assert connection.recv(64)\n")
    return _row_with_test(task, instance_id, "test_reaches_the_host", test)


def eval_script_for(base_commit: str, test_patch: str, test_files: list[str], test_cmd: str,
                    install: str = INSTALL_CMD) -> str:
    """An eval script in the shape SWE-bench 5.x rows carry: conda activation, `cd /testbed`, the repository's
    state shown, the reinstall (`install`), the test files reset to the base and `test_patch` applied from a
    here-document, `test_cmd` on the test files between the official markers, and the test files reset again."""
    files = " ".join(test_files)
    delimiter = _delimiter(test_patch)
    lines = [
        "#!/bin/bash", "set -uxo pipefail", "source /opt/miniconda3/bin/activate", "conda activate testbed",
        "cd /testbed", "git config --global --add safe.directory /testbed", "cd /testbed",
        "git status", "git show", f"git -c core.fileMode=false diff {base_commit}",
        "source /opt/miniconda3/bin/activate", "conda activate testbed", install,
        f"git checkout {base_commit} {files}",
        f"git apply -v - <<'{delimiter}'", test_patch, delimiter,
        ": '>>>>> Start Test Output'", f"{test_cmd} {files}", ": '>>>>> End Test Output'",
        f"git checkout {base_commit} {files}",
    ]
    return "\n".join(lines) + "\n"


def write_dataset(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` as JSONL (one object a line) to `path` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def file_patch(name: str, before: str, after: str) -> str:
    """A `git diff`-style patch (with its `diff --git` header) that turns `before` into `after` in file `name`."""
    body = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                f"a/{name}", f"b/{name}")
    return f"diff --git a/{name} b/{name}\n" + "".join(body)


def patched_files(patch: str) -> list[str]:
    """The files a patch's `diff --git a/X b/X` headers name, in order, once each."""
    return list(dict.fromkeys(re.findall(r"^diff --git a/(\S+) b/", patch, re.M)))


def _row_with_test(task: TaskRepo, instance_id: str, test_name: str, test: str) -> dict[str, Any]:
    test_patch = file_patch(TEST_FILE, _TESTS_BASE, f"{_TESTS_BASE}\n\n{test}")
    return instance_row(task, instance_id, test_patch=test_patch, problem_statement=f"{test_name} should pass\n",
                        FAIL_TO_PASS=json.dumps([f"{TEST_FILE}::{test_name}"]))


def _delimiter(text: str) -> str:
    """A here-document end marker `EOF_<12 digits>` that does not occur in `text`, the same for the same text."""
    number = zlib.crc32(text.encode()) * 100
    while f"EOF_{number:012d}" in text:
        number += 1
    return f"EOF_{number:012d}"


def _commit(repo: Path, at: int, message: str, files: dict[str, str]) -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message, at=at)
    return _git(repo, "rev-parse", "HEAD").strip()


def _git(cwd: Path, *args: str, at: int = 0) -> str:
    """Run git in `cwd` with the fixed identity and the date of step `at`, the user's config and `GIT_*`
    variables ignored; return its output, raise with git's message on failure."""
    date = f"@{_EPOCH + 3600 * at} +0000"
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env |= _IDENTITY | {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "GIT_CONFIG_NOSYSTEM": "1",
                        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "core.autocrlf=false", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout
