"""How a real command's result reads on screen: its blank lines, its line count, a command with no output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from kcode.agent.events import ToolCallFinished, ToolCallStarted
from kcode.messages import ToolCall
from kcode.ui.describe import result_summary
from kcode.ui.render import ChatRenderer
from tools.base import ToolResult
from tools.bash import BashTool
from tools.clamp import OutputClamp
from tools.settings import ToolSettings
from tools.toolset import Toolset
from tools.workspace import Workspace


@pytest.fixture
def toolset(tmp_path: Path) -> Iterator[Toolset]:
    clamp = OutputClamp(ToolSettings(), tmp_path / "spill")
    root = tmp_path / "ws"
    root.mkdir()
    with Toolset([BashTool(Workspace(root), clamp.settings, clamp)], clamp) as tools:
        yield tools


def bash_call(command: str) -> ToolCall:
    return ToolCall("c1", "bash", json.dumps({"command": command}))


@pytest.mark.parametrize(("command", "summary"), [
    ("true", "no output"),
    ("false", "exit 1 · no output"),
    ("printf 'a\\n\\nb\\n'", "3 lines"),
    ("echo one; exit 2", "exit 2 · 1 line"),
])
def test_a_commands_summary_counts_its_own_lines_only(toolset: Toolset, command: str, summary: str) -> None:
    call = bash_call(command)
    assert result_summary(call, toolset.dispatch("bash", call.arguments)) == summary


def test_blank_lines_in_a_commands_output_stay_on_screen(toolset: Toolset) -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)
    render = ChatRenderer(console)
    call = bash_call("printf 'def a():\\n    pass\\n\\n\\ndef b():\\n    pass\\n'")
    render(ToolCallStarted(call))
    render(ToolCallFinished(call, toolset.dispatch("bash", call.arguments)))
    shown = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert shown[-6:] == ["  ⎿  def a():", "         pass", "", "", "     def b():", "         pass"]


def test_a_preview_never_hides_a_single_line_behind_a_mark() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)
    render = ChatRenderer(console, preview_lines=4, diff_lines=3)
    five = ToolResult("one\ntwo\n\nfour\nfive")  # its blank third line must not become `… 1 more lines`
    render(ToolCallFinished(bash_call("cat five"), five))
    render(ToolCallFinished(bash_call("cat six"), ToolResult("1\n2\n3\n4\n5\n6")))
    diff = "@@ -1,2 +1,2 @@\n-a\n+b\n c\n"
    render(ToolCallFinished(ToolCall("c2", "editor", "{}"), ToolResult("edited", data={"diff": diff})))
    shown = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert shown[2:7] == ["  ⎿  one", "     two", "", "     four", "     five"]
    assert shown[9:14] == ["  ⎿  1", "     2", "     … 2 more lines", "     5", "     6"]
    assert shown[-4:] == ["  ⎿  @@ -1,2 +1,2 @@", "     -a", "     +b", "      c"]
