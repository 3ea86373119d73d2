"""The dataset's eval script, moved from SWE-bench's container to a local workspace, or generated for rows
without one; the result is run by bash in the grading tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from swe_harness.dataset import Instance
from swe_harness.environment_specs import EnvironmentSpec
from swe_harness.eval_script import (
    adapt_eval_script,
    generated_eval_script,
    local_eval_script,
    patched_files,
    split_at_tests,
)

TEST_PATCH = """diff --git a/tests/test_calc.py b/tests/test_calc.py
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -1 +1,2 @@
 # /testbed is where conda activate testbed runs
+x = 1
diff --git a/tests/data.json b/tests/data.json
new file mode 100644
"""

SCRIPT = """#!/bin/bash
set -uxo pipefail
source /opt/miniconda3/bin/activate
conda activate testbed
cd /testbed
git config --global --add safe.directory /testbed
git -c core.fileMode=false diff abc
python -m pip install -e .
git checkout abc tests/test_calc.py
git apply -v - <<'EOF_1234'
""" + TEST_PATCH + """EOF_1234
: '>>>>> Start Test Output'
pytest -rA tests/test_calc.py
: '>>>>> End Test Output'
git checkout abc tests/test_calc.py
"""


def instance(**row: object) -> Instance:
    return Instance(instance_id="acme__calc-1", repo="acme/calc", base_commit="abc", problem_statement="p",
                    version="1.0", gold_patch="", test_patch=TEST_PATCH, fail_to_pass=(), pass_to_pass=(), row=row)


SPEC = EnvironmentSpec(python="3.11", install="python -m pip install -e .", test_cmd="pytest -rA")


def test_container_lines_go_and_testbed_becomes_the_workspace_outside_the_patch(tmp_path: Path) -> None:
    workspace = tmp_path / "my repo"
    adapted = adapt_eval_script(SCRIPT, workspace)
    lines = adapted.splitlines()
    assert not any(line.startswith(("source /opt", "conda activate", "git config --global", "#!", "set -uxo"))
                   for line in lines)
    assert f"cd '{workspace}'" in lines
    assert " # /testbed is where conda activate testbed runs" in lines  # the patch passes through untouched
    assert lines[-1] == "git checkout abc tests/test_calc.py"


def test_a_row_with_a_script_uses_it_and_one_without_gets_the_same_shape(tmp_path: Path) -> None:
    assert local_eval_script(instance(eval_script=SCRIPT), SPEC, tmp_path) == adapt_eval_script(SCRIPT, tmp_path)
    generated = generated_eval_script(instance(), SPEC, tmp_path).splitlines()
    assert generated[:3] == [f"cd {tmp_path}", "python -m pip install -e .",
                             "git checkout abc tests/test_calc.py tests/data.json"]
    start = generated.index(": '>>>>> Start Test Output'")
    assert generated[start + 1] == "pytest -rA tests/test_calc.py"  # data files are not test targets
    assert generated[start + 2] == ": '>>>>> End Test Output'"
    assert TEST_PATCH.rstrip("\n") in "\n".join(generated)


def test_patched_files_reads_the_diff_headers_once_each() -> None:
    assert patched_files(TEST_PATCH + TEST_PATCH) == ["tests/test_calc.py", "tests/data.json"]
    with pytest.raises(ValueError, match="touches no file"):
        generated_eval_script(Instance(**{**instance().__dict__, "test_patch": "not a diff\n"}), SPEC, Path("/w"))


def test_the_script_splits_where_the_tests_start_and_both_halves_keep_the_header() -> None:
    install, tests = split_at_tests(SCRIPT)
    assert install.startswith("#!/bin/bash\nset -uxo pipefail\n") and "git apply -v" in install
    assert TEST_PATCH in install and "pytest" not in install
    assert tests.splitlines()[:4] == ["#!/bin/bash", "set -uxo pipefail", ": '>>>>> Start Test Output'",
                                      "pytest -rA tests/test_calc.py"]
    marker_in_patch = SCRIPT.replace("+x = 1", "+: '>>>>> Start Test Output'")
    assert "+: '>>>>> Start Test Output'" in split_at_tests(marker_in_patch)[0]  # a heredoc is not the script
    assert split_at_tests("echo no markers\n") == ("", "echo no markers\n")
