"""The script that runs an instance's tests, made to run in a local workspace instead of SWE-bench's container.

SWE-bench 5.x data carries each instance's `eval_script`: activate the conda env, `cd /testbed`, reinstall,
reset the test files to the base commit, apply `test_patch`, run the tests between the official markers,
reset again. Here the environment is already active (its variables come with the process), so the conda
lines go, `/testbed` becomes the workspace, and the line that would write the user's global git config is
dropped. Rows without a script (older releases, hand-written instances) get one of the same shape from the
environment spec's install and test commands: a row without a test patch runs the test command as it is, over
tests already in the repository; with the `junit` parser the script prints the spec's JUnit file into the test
output, where the parser reads it, and keeps the test command's exit status for SWE-bench's cross-check.

`split_at_tests` cuts a script where the test output starts: the part before (reinstall the repository,
reset and patch the test files) may reach the package index, as it does in SWE-bench's container, since a
patch may add a dependency; the tests themselves run with no network.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from swe_harness.dataset import Instance
from swe_harness.environment_specs import EnvironmentSpec
from swe_harness.log_parsers import JUNIT_END, JUNIT_START

CONTAINER_ROOT = "/testbed"
START_MARKER = ">>>>> Start Test Output"
END_MARKER = ">>>>> End Test Output"
NON_TEST_SUFFIXES = (".json", ".png", ".csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")
"""Files a test patch may touch that are data, not tests to name on the test command line (as SWE-bench)."""

_DROPPED = (
    re.compile(r"^\s*source\s+/opt/miniconda3/bin/activate\b"),
    re.compile(r"^\s*conda\s+activate\b"),
    re.compile(r"^\s*git\s+config\s+--global\b"),
)
_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?")


def local_eval_script(instance: Instance, spec: EnvironmentSpec, workspace: Path) -> str:
    """The body of the eval script for `workspace` (no shebang: SWE-bench's TestSpec adds its own header)."""
    script = instance.row.get("eval_script")
    if script:
        return adapt_eval_script(str(script), workspace)
    return generated_eval_script(instance, spec, workspace)


def adapt_eval_script(script: str, workspace: Path) -> str:
    """The dataset's script with container-only lines dropped and `/testbed` pointed at `workspace`.

    Here-documents (the test patch) pass through untouched: a patch may mention `/testbed` or `conda`.
    """
    kept: list[str] = []
    for line, is_command in _lines(script):
        if not is_command:
            kept.append(line)
        elif not (line.startswith("#!") or line.strip() == "set -uxo pipefail" or any(p.match(line) for p in _DROPPED)):
            kept.append(_retarget(line, workspace))
    return "\n".join(kept) + "\n"


def generated_eval_script(instance: Instance, spec: EnvironmentSpec, workspace: Path) -> str:
    """A script of the official shape for a row that has none: reinstall, reset and patch the tests, run them."""
    test_files = patched_files(instance.test_patch)
    if instance.test_patch.strip() and not test_files:
        raise ValueError(f"{instance.instance_id}: its test_patch touches no file, so there is nothing to run")
    base = shlex.quote(instance.base_commit)
    files = " ".join(shlex.quote(name) for name in test_files)
    targets = " ".join(shlex.quote(name) for name in test_files if not name.endswith(NON_TEST_SUFFIXES))
    delimiter = _unused_delimiter(instance.test_patch)
    reset = [f"git checkout {base} {files}"] if test_files else []
    patch = [f"git apply -v - <<'{delimiter}'", instance.test_patch.rstrip("\n"), delimiter] if test_files else []
    return "\n".join([
        f"cd {shlex.quote(str(workspace))}",
        *([spec.install] if spec.install else []),
        *reset,
        *patch,
        *([f"rm -f {shlex.quote(spec.junit_xml)}"] if spec.junit_xml else []),
        f": '{START_MARKER}'",
        *marked_test_lines(spec, targets),
        f": '{END_MARKER}'",
        *reset,
    ]) + "\n"


def marked_test_lines(spec: EnvironmentSpec, targets: str) -> list[str]:
    """The lines between the markers: the test command on `targets`, then, for a JUnit spec, its XML file between
    the parser's own markers and the test command's exit status restored (SWE-bench records `$?` next)."""
    command = f"{spec.test_cmd} {targets}".rstrip()
    if not spec.junit_xml:
        return [command]
    return [command, "KCODE_TESTS_STATUS=$?", f"echo '{JUNIT_START}'", f"cat {shlex.quote(spec.junit_xml)}", "echo",
            f"echo '{JUNIT_END}'", '(exit "$KCODE_TESTS_STATUS")']


def split_at_tests(script: str) -> tuple[str, str]:
    """(the script up to the start-of-tests marker, the rest), each with the script's own header lines
    (shebang, `set` options) so both run as the whole did; ("", script) when there is no marker."""
    lines = script.splitlines()
    header = [line for line in lines[:2] if line.startswith("#!") or line.startswith("set ")]
    for index, (line, is_command) in enumerate(_lines(script)):
        if is_command and line == f": '{START_MARKER}'":
            return "\n".join(lines[:index]) + "\n", "\n".join([*header, *lines[index:]]) + "\n"
    return "", script


def patched_files(patch: str) -> list[str]:
    """The paths a unified diff touches (its `diff --git a/X b/Y` headers' `a/` side), in order, once each."""
    names: list[str] = []
    for match in re.finditer(r"^diff --git a/(\S+) b/\S+", patch, re.M):
        if match.group(1) not in names:
            names.append(match.group(1))
    return names


def _lines(script: str) -> Iterator[tuple[str, bool]]:
    """Each line of `script`, and whether bash reads it as a command (False inside a here-document)."""
    heredoc_end: str | None = None
    for line in script.splitlines():
        if heredoc_end is not None:
            yield line, False
            heredoc_end = None if line == heredoc_end else heredoc_end
            continue
        yield line, True
        opened = _HEREDOC.search(line)
        heredoc_end = opened.group(1) if opened is not None else None


def _retarget(line: str, workspace: Path) -> str:
    return re.sub(rf"{re.escape(CONTAINER_ROOT)}(?=/|\s|$|['\"])", shlex.quote(str(workspace)), line)


def _unused_delimiter(text: str) -> str:
    delimiter = "EOF_KCODE_TEST_PATCH"
    while delimiter in text:
        delimiter += "_"
    return delimiter
