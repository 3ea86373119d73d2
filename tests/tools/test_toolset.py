"""Dispatch: every way a call can be wrong comes back as an error result worded for the model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tools.base import ToolResult
from tools.clamp import OutputClamp
from tools.errors import ToolError
from tools.settings import ToolSettings
from tools.submit import SubmitTool
from tools.toolset import Toolset


class WriteTool:
    """A small real tool: writes a file, or refuses a name the model can fix."""

    name = "write"
    description = "Write text to a file."
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "text": {"type": "string"},
            "mode": {"type": "string", "enum": ["w", "a"]},
            "lines": {"type": "array", "items": {"type": "integer"}},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
        },
        "required": ["path", "text"],
    }

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        if arguments["path"].startswith("/"):
            raise ToolError("use a relative path")
        if arguments["path"] == "boom":
            raise RuntimeError("kaboom")
        (self.root / arguments["path"]).write_text(arguments["text"] * arguments.get("count", 1))
        return ToolResult(output=arguments["text"] * arguments.get("count", 1))


@pytest.fixture
def toolset(tmp_path: Path) -> Toolset:
    clamp = OutputClamp(ToolSettings(max_output_chars=1_000), spill_dir=tmp_path / "spill")
    return Toolset([WriteTool(tmp_path), SubmitTool()], clamp)


def test_schemas_are_in_the_openai_function_format(toolset: Toolset) -> None:
    schemas = toolset.schemas()
    assert [s["function"]["name"] for s in schemas] == ["write", "submit"]
    assert schemas[0]["type"] == "function"
    assert schemas[0]["function"]["parameters"]["required"] == ["path", "text"]


def test_a_valid_call_runs_the_tool(toolset: Toolset, tmp_path: Path) -> None:
    result = toolset.dispatch("write", '{"path": "a.txt", "text": "hi"}')
    assert not result.is_error
    assert (tmp_path / "a.txt").read_text() == "hi"


def test_parsed_arguments_are_accepted_too(toolset: Toolset, tmp_path: Path) -> None:
    assert not toolset.dispatch("write", {"path": "b.txt", "text": "x"}).is_error
    assert (tmp_path / "b.txt").exists()


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("wirte", "{}", "There is no tool named 'wirte'. Available tools: write, submit."),
        ("write", '{"path": "a.txt", "text": ', "invalid JSON (Expecting value: line 1 column 27)"),
        ("write", '{"path": "a.txt", "text": "hi', "(Unterminated string starting at: line 1 column 27)"),
        ("write", "[1, 2]", "expected a JSON object, got list"),
        ("write", '{"path": "a.txt"}', "missing required argument 'text'"),
        ("write", '{"path": "a", "text": "t", "colour": 1}', "unexpected argument 'colour' (allowed: path, text"),
        ("write", '{"path": 3, "text": "t"}', "argument 'path' must be string, got integer 3"),
        ("write", '{"path": "a", "text": "t", "count": true}', "argument 'count' must be integer, got boolean"),
        ("write", '{"path": "a", "text": "t", "count": 1.5}', "argument 'count' must be integer, got number"),
        ("write", '{"path": "a", "text": "t", "mode": "x"}', "argument 'mode' must be one of 'w', 'a', got 'x'"),
        ("write", '{"path": "a", "text": "t", "lines": [1, "2"]}', "argument 'lines[1]' must be integer"),
        ("write", '{"path": "/etc/x", "text": "t"}', "use a relative path"),
        ("write", '{"path": "boom", "text": "t"}', "internal error (RuntimeError: kaboom)"),
    ],
)
def test_bad_calls_become_error_results(toolset: Toolset, tmp_path: Path, name: str, arguments: str,
                                        expected: str) -> None:
    result = toolset.dispatch(name, arguments)
    assert result.is_error
    assert expected in result.output
    assert not (tmp_path / "a").exists()


def test_an_integer_is_a_valid_number(toolset: Toolset) -> None:
    assert not toolset.dispatch("write", {"path": "n", "text": "t", "ratio": 2}).is_error


def test_several_problems_are_reported_together(toolset: Toolset) -> None:
    result = toolset.dispatch("write", '{"text": 1, "extra": 2}')
    assert "missing required argument 'path'" in result.output
    assert "argument 'text' must be string" in result.output
    assert "unexpected argument 'extra'" in result.output


def test_internal_errors_keep_the_traceback_for_the_ui(toolset: Toolset) -> None:
    result = toolset.dispatch("write", {"path": "boom", "text": "t"})
    assert "RuntimeError: kaboom" in result.data["traceback"]
    assert "traceback" not in result.output.lower()


def test_every_result_is_clamped(toolset: Toolset) -> None:
    result = toolset.dispatch("write", {"path": "big", "text": "0123456789\n", "count": 1000})
    assert len(result.output) <= 1_000
    assert "the whole output is saved in" in result.output


def test_empty_arguments_mean_no_arguments(toolset: Toolset) -> None:
    result = toolset.dispatch("submit", "")
    assert result.finished
    assert not result.is_error


def test_submit_carries_its_summary(toolset: Toolset) -> None:
    result = toolset.dispatch("submit", '{"summary": "fixed the off-by-one"}')
    assert result.finished
    assert result.data["summary"] == "fixed the off-by-one"
    assert "fixed the off-by-one" in result.output


def test_two_tools_with_one_name_are_refused(tmp_path: Path) -> None:
    clamp = OutputClamp(ToolSettings(), spill_dir=tmp_path)
    with pytest.raises(ValueError, match="two tools are named 'submit'"):
        Toolset([SubmitTool(), SubmitTool()], clamp)


def test_close_removes_the_spill_directory_the_clamp_made(tmp_path: Path) -> None:
    with Toolset([WriteTool(tmp_path)], OutputClamp(ToolSettings(max_output_chars=1_000))) as toolset:
        result = toolset.dispatch("write", {"path": "big", "text": "0123456789\n", "count": 1000})
        saved = Path(result.output.split("the whole output is saved in ")[1].split(" ...]")[0])
        assert saved.parent == toolset.clamp.spill_dir and saved.is_file()
    assert not toolset.clamp.spill_dir.exists()


def test_close_leaves_a_spill_directory_the_caller_gave(toolset: Toolset, tmp_path: Path) -> None:
    toolset.dispatch("write", {"path": "big", "text": "0123456789\n", "count": 1000})
    toolset.close()
    assert [p.read_text() for p in (tmp_path / "spill").iterdir()] == ["0123456789\n" * 1000]
