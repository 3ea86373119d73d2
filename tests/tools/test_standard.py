"""The standard toolset: what its bash shell may see, and what its close leaves behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tools.settings import ToolSettings
from tools.standard import standard_toolset


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


def test_hidden_variables_never_reach_the_shell_while_others_do(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCODE_TEST_API_KEY", "sk-hidden-value")
    monkeypatch.setenv("KCODE_TEST_VISIBLE", "plain-value")
    with standard_toolset(root, hidden_env=["KCODE_TEST_API_KEY"]) as toolset:
        first = toolset.dispatch("bash", {"command": "env"}).output
        exited = toolset.dispatch("bash", {"command": "exit 3"})
        assert exited.data["ending"] == "shell_exited"
        fresh = toolset.dispatch("bash", {"command": "env; echo \"[$KCODE_TEST_API_KEY]\""}).output
    for output in (first, fresh):
        assert "KCODE_TEST_VISIBLE=plain-value" in output
        assert "sk-hidden-value" not in output and "KCODE_TEST_API_KEY" not in output
    assert "[]" in fresh


def test_without_hidden_names_the_shell_sees_the_whole_environment(root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCODE_TEST_API_KEY", "sk-shown-value")
    with standard_toolset(root) as toolset:
        assert toolset.dispatch("bash", {"command": "echo $KCODE_TEST_API_KEY"}).output == "sk-shown-value\n"


def test_one_string_for_hidden_env_is_refused_rather_than_split_into_letters(root: Path) -> None:
    with pytest.raises(ValueError, match="pass \\['MOONSHOT_API_KEY'\\]"):
        standard_toolset(root, hidden_env="MOONSHOT_API_KEY")


def test_close_removes_the_temporary_spill_directory_with_its_outputs(root: Path) -> None:
    with standard_toolset(root, ToolSettings(max_output_chars=1_000)) as toolset:
        spill = toolset.clamp.spill_dir
        result = toolset.dispatch("bash", {"command": "seq 1 100000"})
        assert len(result.output) <= 1_000
        assert Path(result.data["output_file"]).parent == spill and any(spill.iterdir())
    assert not spill.exists()


def test_close_leaves_a_spill_directory_the_caller_chose(root: Path, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    with standard_toolset(root, ToolSettings(max_output_chars=1_000), spill_dir=spill) as toolset:
        saved = Path(toolset.dispatch("bash", {"command": "seq 1 100000"}).data["output_file"])
    assert saved.parent == spill
    assert saved.read_text().splitlines()[-1] == "100000"


def test_a_toolset_that_cannot_be_made_leaves_no_spill_directory(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(ValueError, match="is not a directory"):
        standard_toolset(tmp_path / "missing")
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("allowed", [False, True])
def test_the_outside_setting_reaches_the_editor_and_search(root: Path, allowed: bool) -> None:
    outside = root.parent / "outside.txt"
    outside.write_text("needle\n")
    with standard_toolset(root, ToolSettings(allow_outside_workspace=allowed)) as toolset:
        view = toolset.dispatch("editor", {"command": "view", "path": "../outside.txt"})
        search = toolset.dispatch("search_text", {"pattern": "needle", "path": str(outside)})
    assert view.is_error is not allowed and search.is_error is not allowed
    if allowed:
        assert "needle" in view.output and "needle" in search.output
    else:
        assert "outside the workspace" in view.output and "outside the workspace" in search.output
