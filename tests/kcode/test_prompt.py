"""The system prompt, the fix task prompt and the project rules they carry."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kcode.agent.prompt import MAX_RULES_BYTES, fix_prompt, load_template, project_rules, system_prompt
from tests.kcode.scripted import make_toolset

REPO = Path(__file__).parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "repo"
    workspace.mkdir()
    return workspace


def test_the_system_prompt_names_the_workspace_the_os_the_tools_and_the_rules(root: Path) -> None:
    toolset = make_toolset(root)
    prompt = system_prompt(root, toolset, "Use tabs. Never touch vendor/.", os_name="Linux 6.1")

    assert f"Workspace (the repository root; relative paths start here): {root}" in prompt
    assert "Operating system: Linux 6.1" in prompt
    assert "- `editor`: View, create and edit text files.\n" in prompt
    assert "- `bash`: Run a shell command in the workspace." in prompt
    assert "- `submit`: Call this once the task is complete and every change is saved in the workspace." in prompt
    assert prompt.rstrip().endswith("Use tabs. Never touch vendor/.")
    assert "$" not in prompt.replace("$$", "")  # every placeholder was filled


def test_without_rules_there_is_no_rules_section_and_the_real_os_is_named(root: Path) -> None:
    prompt = system_prompt(root, make_toolset(root))
    assert "Project rules" not in prompt
    assert "Operating system: " in prompt and "Operating system: \n" not in prompt


def test_project_rules_are_read_from_agents_md(root: Path) -> None:
    assert project_rules(root) == ""
    (root / "AGENTS.md").write_text("# Rules\n\nRun `make lint`.\n")
    assert project_rules(root) == "# Rules\n\nRun `make lint`."
    (root / "AGENTS.md").unlink()
    (root / "AGENTS.md").mkdir()
    assert project_rules(root) == ""


def test_long_rules_are_cut_at_a_line_end_with_a_note(root: Path) -> None:
    line = "- rule é with a two-byte letter\n"  # 33 bytes
    (root / "AGENTS.md").write_text(line * 1000, encoding="utf-8")

    rules = project_rules(root)

    body, note = rules.rsplit("\n\n", 1)
    assert len(body.encode()) <= MAX_RULES_BYTES
    assert body.endswith("letter") and "\ufffd" not in body
    assert note == (f"[AGENTS.md is 33,000 bytes; only the first {(MAX_RULES_BYTES // 33) * 33:,} are shown. "
                    f"View {root / 'AGENTS.md'} for the rest.]")


def test_a_cut_inside_a_character_drops_the_half_character(root: Path) -> None:
    (root / "AGENTS.md").write_bytes(b"a" * 99 + "é".encode() * 10)
    body = project_rules(root, max_bytes=100).split("\n\n")[0]
    assert body == "a" * 99


def test_the_fix_prompt_carries_the_task_verbatim_and_says_when_commands_are_refused() -> None:
    task = "Parsing `$HOME/${x}` fails with KeyError"
    allowed = fix_prompt(task, commands_allowed=True)
    refused = fix_prompt(task, commands_allowed=False)

    assert f"<issue>\n{task}\n</issue>" in allowed
    assert "submit" in allowed and "without --yes" not in allowed
    assert "kcode fix was started without --yes" in refused


def test_prompts_are_package_data_in_the_wheel(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=120)
    (wheel,) = tmp_path.glob("kcode-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("system.md", "fix.md", "summary.md"):
        assert f"kcode/agent/prompts/{name}" in names
        assert load_template(name).strip()
