"""The chat renderer, drawn on in-memory consoles: plain text compared exactly, colours checked by their codes."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from kcode.agent.events import (
    AgentError,
    AssistantDelta,
    Compacted,
    CompletionRetrying,
    Notice,
    ToolCallFinished,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
)
from kcode.messages import ToolCall
from kcode.ui.errors import DisplaySettingError
from kcode.ui.render import ChatRenderer
from tools.base import ToolResult

DIFF = "--- a/src/app.py\n+++ b/src/app.py\n@@ -1,3 +1,3 @@\n import os\n-x = 1\n+x = 2\n print(x)\n"


def plain_console() -> Console:
    return Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)


def output(console: Console) -> str:
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines())


def call(name: str, call_id: str = "c1", **arguments: object) -> ToolCall:
    return ToolCall(call_id, name, json.dumps(arguments))


def test_bash_call_shows_its_command_and_a_clamped_preview() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    bash = call("bash", command="pytest -q")
    render(ToolCallStarted(bash))
    lines = [f"line {i}" for i in range(25)] + ["[exit code 1]"]
    render(ToolCallFinished(bash, ToolResult("\n".join(lines), data={"exit_code": 1})))
    assert output(console) == "\n".join([
        "",
        "● bash  pytest -q",
        "  ⎿  line 0", *[f"     line {i}" for i in range(1, 5)],
        "     … 16 more lines",
        *[f"     line {i}" for i in range(21, 25)],
        "     [exit code 1]",
    ])


def test_edit_shows_its_diff_without_file_headers() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    edit = call("editor", command="str_replace", path="src/app.py", old_str="x = 1", new_str="x = 2")
    render(ToolCallStarted(edit))
    render(ToolCallFinished(edit, ToolResult("edited", data={"diff": DIFF})))
    assert output(console) == "\n".join([
        "",
        "● editor  str_replace src/app.py",
        "  ⎿  @@ -1,3 +1,3 @@",
        "      import os",
        "     -x = 1",
        "     +x = 2",
        "      print(x)",
    ])


def test_long_diff_is_clamped_and_a_view_is_not_echoed() -> None:
    console = plain_console()
    render = ChatRenderer(console, diff_lines=3)
    edit = call("editor", command="str_replace", path="a.py")
    render(ToolCallFinished(edit, ToolResult("edited", data={"diff": DIFF})))
    view = call("editor", "c2", command="view", path="a.py")
    render(ToolCallFinished(view, ToolResult("a.py: lines 1-3 of 3\n1\timport os\n2\tx = 1\n3\tprint(x)")))
    text = output(console)
    assert "     -x = 1\n     … 2 more lines" in text
    assert "+x = 2" not in text
    assert "● editor  view a.py\n  ⎿  a.py: lines 1-3 of 3" in text
    assert "import os" not in text.split("view a.py")[1]


def test_error_result_and_agent_error_are_visible() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    bad = call("editor", command="view", path="nope.py")
    render(ToolCallStarted(bad))
    render(ToolCallFinished(bad, ToolResult.error("The path nope.py does not exist.")))
    render(AgentError("The API refused the request: 401 Unauthorized"))
    text = output(console)
    assert "● editor  view nope.py\n  ⎿  The path nope.py does not exist." in text
    assert "✗ The API refused the request: 401 Unauthorized" in text


def test_error_colours_red_and_diff_lines_get_colour_codes() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="truecolor")
    render = ChatRenderer(console)
    edit = call("editor", command="str_replace", path="src/app.py")
    render(ToolCallFinished(edit, ToolResult("edited", data={"diff": DIFF})))
    bad = call("bash", "c2", command="false")
    render(ToolCallFinished(bad, ToolResult.error("boom")))
    render.close()
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[32m+x = 2" in raw
    assert "\x1b[31m-x = 1" in raw
    assert "\x1b[36m@@ -1,3 +1,3 @@" in raw
    assert "\x1b[31mboom" in raw


def test_streamed_markdown_is_printed_once_rendered() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    render.start_turn()
    for piece in ["The fix is ", "**done**", ":\n\n- one\n", "- two\n"]:
        render(AssistantDelta(piece))
    render(TurnEnded("answered"))
    text = output(console)
    assert "The fix is done:" in text
    assert " • one\n • two" in text
    assert "**" not in text
    assert "Thinking" not in text  # no animation on a console that is not a terminal


def test_reasoning_is_printed_apart_from_the_answer() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="truecolor")
    render = ChatRenderer(console)
    render(AssistantDelta("Let me think.", reasoning=True))
    render(AssistantDelta("Answer."))
    render(TurnEnded("answered"))
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[2;3mLet me think." in raw  # dim italic
    assert raw.index("Let me think.") < raw.rindex("Answer.")


def test_usage_line_shows_tokens_and_the_cost_of_each_turn() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    render.start_turn()
    render(UsageReport(prompt_tokens=12_000, completion_tokens=300, total_tokens=12_300, cost_usd=0.01))
    render(UsageReport(prompt_tokens=13_000, completion_tokens=450, total_tokens=25_750, cost_usd=0.025))
    render(TurnEnded("answered"))
    render.start_turn()
    render(UsageReport(prompt_tokens=14_000, completion_tokens=50, total_tokens=39_800, cost_usd=0.04))
    render(TurnEnded("answered"))
    lines = output(console).splitlines()
    assert lines[1] == "  2 steps · 25.0k in · 750 out · $0.0250   session 25.8k tokens · $0.0250"
    assert lines[3] == "  1 step · 14.0k in · 50 out · $0.0150   session 39.8k tokens · $0.0400"


def test_usage_without_prices_shows_tokens_only() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    render(UsageReport(prompt_tokens=900, completion_tokens=20, total_tokens=920, cost_usd=None))
    render(TurnEnded("interrupted"))
    assert output(console) == "\n■ interrupted\n\n  1 step · 900 in · 20 out   session 920 tokens"


def test_retry_discards_the_void_text_and_says_so() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    render(AssistantDelta("half an answ"))
    render(CompletionRetrying(attempt=2, max_attempts=5, delay_s=4.0, reason="429 rate limited"))
    render(AssistantDelta("A whole answer."))
    render(TurnEnded("answered"))
    text = output(console)
    assert "half an answ" not in text
    assert "↻ 429 rate limited; retrying in 4s (attempt 2 of 5)" in text
    assert "A whole answer." in text


def test_compaction_notice_and_unknown_events() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    render(Compacted(tokens_before=120_400, tokens_after=18_200, summary="..."))
    render(Notice("Compacting the conversation."))
    render(object())
    assert output(console) == ("\n⟳ compacted the conversation: 120.4k → 18.2k tokens"
                               "\n\n· Compacting the conversation.")


def test_result_after_another_header_repeats_its_own_header() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    first, second = call("bash", "c1", command="ls"), call("bash", "c2", command="pwd")
    render(ToolCallStarted(first))
    render(ToolCallStarted(second))
    render(ToolCallFinished(first, ToolResult("")))
    assert output(console).endswith("● bash  pwd\n\n● bash  ls\n  ⎿  (no output)")


def test_escape_sequences_in_tool_output_do_not_reach_the_terminal() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="truecolor")
    render = ChatRenderer(console)
    render(ToolCallFinished(call("bash", command="pytest"), ToolResult("\x1b[31mFAILED\x1b[0m\x1b]0;title\x07 x")))
    render.close()
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "FAILED x" in raw
    assert "\x1b]0;" not in raw


def test_spinner_counts_seconds_on_the_injected_clock_and_steps_aside_for_a_prompt() -> None:
    now = [100.0]
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="truecolor",
                      get_time=lambda: now[0])
    render = ChatRenderer(console)
    render.start_turn()
    now[0] = 107.0
    with render.suspended():
        console.print("Approve?")
        now[0] = 137.0  # the user took 30 s to answer: not counted
    render(Notice("printed above the live region, which is back"))
    render.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())  # type: ignore[attr-defined]
    assert "Thinking… 7s · ctrl-c to interrupt" in screen
    assert screen.index("Thinking") < screen.index("Approve?") < screen.index("which is back")
    assert "Thinking… 7s" in screen[screen.index("which is back"):]


def test_preview_of_no_lines_is_refused() -> None:
    with pytest.raises(DisplaySettingError, match="preview_lines"):
        ChatRenderer(plain_console(), preview_lines=0)


def test_a_declined_call_says_so_and_a_prompt_before_the_result_repeats_the_header() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    bash = call("bash", command="rm -rf build")
    render(ToolCallStarted(bash))
    with render.suspended():
        console.print("› n")
    render(ToolCallFinished(bash, ToolResult.error("Not run: the user declined this call.", declined=True)))
    assert output(console) == "\n● bash  rm -rf build\n› n\n\n● bash  rm -rf build\n  ⎿  declined"


def test_removed_lines_that_look_like_file_headers_stay_in_the_diff() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    diff = "--- a/q.sql\n+++ b/q.sql\n@@ -1,2 +1,2 @@\n--- old comment\n+++ new comment\n select 1;\n"
    render(ToolCallFinished(call("editor", command="str_replace", path="q.sql"), ToolResult("ok", data={"diff": diff})))
    assert output(console).endswith("  ⎿  @@ -1,2 +1,2 @@\n     --- old comment\n     +++ new comment\n      select 1;")


def test_live_preview_of_a_long_message_shows_its_end_still_as_code() -> None:
    console = Console(file=io.StringIO(), width=60, height=12, force_terminal=True, color_system="truecolor")
    render = ChatRenderer(console)
    render(AssistantDelta("Here is the file:\n\n```python\n"))
    for i in range(100):
        render(AssistantDelta(f"value_{i} = {i}\n"))
    with render.suspended():  # stopping the live region draws its last frame
        frame = console.file.getvalue()  # type: ignore[attr-defined]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frame)
    assert "value_99 = 99" in text
    assert "value_50 = 50" not in text and "Here is the file" not in text
    assert "48;2;39;40;34m" in frame  # the code block's background: the cut reopened the fence
    render.close()
    assert "Here is the file:" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_file_view_is_summed_up_by_its_header_not_echoed() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    view = call("editor", command="view", path="calc.py")
    render(ToolCallStarted(view))
    render(ToolCallFinished(view, ToolResult("calc.py: lines 1-2 of 2\n     1\tdef add(a, b):\n"
                                             "     2\t    return a - b\n[end of file]")))
    assert output(console) == "\n● editor  view calc.py\n  ⎿  calc.py: lines 1-2 of 2"


def test_an_escape_sequence_in_a_tool_name_never_reaches_the_terminal() -> None:
    console = plain_console()
    render = ChatRenderer(console)
    rogue = call("bash\x1b[2J", command="ls")
    render(ToolCallStarted(rogue))
    render(ToolCallFinished(rogue, ToolResult.error("There is no tool named that.")))
    text = output(console)
    assert "\x1b" not in text
    assert "bash\\x1b[2J" in text
