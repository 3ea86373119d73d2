"""Start-up stays light: `kcode --help` and chat with a remote model never import torch or triton."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "triton", "transformers", "safetensors", "tiktoken")


def _modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                          capture_output=True, text=True, check=True, timeout=60)
    return set(done.stdout.split())


def test_help_imports_neither_the_engine_nor_the_api_client() -> None:
    modules = _modules_after(
        "import sys\nfrom kcode import cli\nsys.argv = ['kcode', '--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass")
    assert "kcode.cli" in modules
    assert not {m for m in modules if m.split(".")[0] in ("openai", "prompt_toolkit", "swe_harness", "swebench",
                                                          *HEAVY)}


def test_eval_help_and_the_harness_leave_the_grader_and_the_engine_out() -> None:
    modules = _modules_after(
        "import sys\nfrom kcode import cli\nsys.argv = ['kcode', 'eval', 'run', '--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "import kcode.commands.eval, swe_harness.run, swe_harness.grading")
    assert "swe_harness.grading" in modules
    assert not {m for m in modules if m.split(".")[0] in ("swebench", "datasets", "pyarrow", *HEAVY)}


def test_chat_with_a_remote_model_loads_no_engine() -> None:
    modules = _modules_after("import kcode.commands.chat, kcode.commands.fix, kcode.backends.remote")
    assert "openai" in modules  # the remote path does need the SDK
    assert not {m for m in modules if m.split(".")[0] in HEAVY}
