"""The headless sinks of `kcode fix`: progress lines for a person, JSON lines for a program."""

from __future__ import annotations

import fcntl
import io
import json
import os
import struct
import termios

import pytest

from kcode.agent.events import (
    AgentError,
    AssistantDelta,
    Compacted,
    CompletionRetrying,
    MessageAdded,
    Notice,
    ToolCallFinished,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
)
from kcode.messages import Message, ToolCall
from kcode.ui.errors import DisplaySettingError
from kcode.ui.headless import JsonEventWriter, ProgressPrinter
from tools.base import ToolResult

DIFF = "--- a/src/app.py\n+++ b/src/app.py\n@@ -1 +1,2 @@\n-x = 1\n+x = 2\n+y = 3\n"
BASH = ToolCall("functions.bash:0", "bash", json.dumps({"command": "pytest -q tests/test_app.py"}))
EDIT = ToolCall("functions.editor:1", "editor",
                json.dumps({"command": "str_replace", "path": "src/app.py", "old_str": "x = 1", "new_str": "x = 2"}))
VIEW = ToolCall("functions.editor:2", "editor", json.dumps({"command": "view", "path": "missing.py"}))
SUBMIT = ToolCall("functions.submit:3", "submit", json.dumps({"summary": "Fixed x."}))


def a_fix_run() -> list[object]:
    """The events of a short `kcode fix` run: look, fail, edit, a retry, an error, submit."""
    return [
        AssistantDelta("thinking about it", reasoning=True),
        AssistantDelta("I'll run the tests first.\nThen fix."),
        UsageReport(1000, 40, 1040, 0.001),
        ToolCallStarted(BASH),
        ToolCallFinished(BASH, ToolResult("1 failed\nE assert 1 == 2", data={"exit_code": 1})),
        ToolCallStarted(EDIT),
        ToolCallFinished(EDIT, ToolResult("Edited src/app.py.", data={"diff": DIFF, "path": "src/app.py"})),
        AssistantDelta("void"),
        CompletionRetrying(attempt=2, max_attempts=5, delay_s=3.0, reason="502 Bad Gateway"),
        ToolCallStarted(VIEW),
        ToolCallFinished(VIEW, ToolResult.error("The path missing.py does not exist.")),
        Compacted(tokens_before=90_000, tokens_after=12_000, summary="We fixed x."),
        Notice("Compaction done."),
        AgentError("The API failed once."),
        ToolCallStarted(SUBMIT),
        ToolCallFinished(SUBMIT, ToolResult("Submitted. Summary: Fixed x.", finished=True)),
        UsageReport(3000, 100, 5140, 0.0042),
        MessageAdded(Message(role="assistant", content="Done.")),
        TurnEnded("submitted"),
        object(),
    ]


def test_progress_lines_name_each_step_call_and_outcome() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    for event in a_fix_run():
        printer(event)
    assert stream.getvalue().splitlines() == [
        "[1] I'll run the tests first. (+1 lines)",
        "[1] bash: pytest -q tests/test_app.py",
        "[1]   exit 1 · 2 lines",
        "[2] editor: str_replace src/app.py",
        "[2]   +2 −1",
        "retrying in 3s (attempt 2 of 5): 502 Bad Gateway",
        "[3] editor: view missing.py",
        "[3]   error: The path missing.py does not exist.",
        "compacted: 90.0k → 12.0k tokens",
        "note: Compaction done.",
        "error: The API failed once.",
        "[4] submit: Fixed x.",
        "[4]   Submitted. Summary: Fixed x.",
        "done: submitted · 4 steps · 5.1k tokens · $0.0042",
    ]


def test_progress_lines_are_plain_on_a_pipe_and_coloured_on_a_terminal() -> None:
    plain = io.StringIO()
    ProgressPrinter(plain)(AgentError("boom"))
    assert plain.getvalue() == "error: boom\n"

    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        ProgressPrinter(tty)(AgentError("boom"))
    written = os.read(leader, 1024)
    os.close(leader)
    assert b"\x1b[31merror: boom\x1b[0m" in written


def test_progress_long_commands_are_cut_to_one_line_of_the_width() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(stream, width=40)
    printer(ToolCallStarted(ToolCall("c", "bash", json.dumps({"command": "echo " + "x" * 100 + "\nls"}))))
    line = stream.getvalue().rstrip("\n")
    assert line.startswith("[1] bash: echo xxx")
    assert line.endswith("… (+1 lines)")
    assert len(line) == 40


LONG_ERROR = "could not connect (ConnectError: [Errno 111] Connection refused) from http://127.0.0.1:9/v1 " \
    "(model fake); gave up after 2 tries " + "and the rest of a long explanation " * 4


def _a_long_run(printer: ProgressPrinter) -> None:
    printer(ToolCallStarted(ToolCall("c", "bash", json.dumps({"command": "echo " + "x" * 300}))))
    printer(ToolCallFinished(ToolCall("c", "bash", "{}"), ToolResult.error("E" * 300)))
    printer(Notice("1 command was refused: " + "n" * 200))
    printer(AgentError(LONG_ERROR))
    printer(TurnEnded("submitted"))


def test_progress_on_a_pipe_is_never_cut() -> None:
    stream = io.StringIO()
    _a_long_run(ProgressPrinter(stream))
    assert stream.getvalue().splitlines() == [
        "[1] bash: echo " + "x" * 300,
        "[1]   error: " + "E" * 300,
        "note: 1 command was refused: " + "n" * 200,
        "error: " + LONG_ERROR.strip(),
        "done: submitted · 1 step",
    ]


def test_progress_on_a_terminal_fits_its_width_but_keeps_errors_and_the_end_whole() -> None:
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    with os.fdopen(follower, "w") as tty:
        _a_long_run(ProgressPrinter(tty, color=False))
    written = b""
    while not written.endswith(b"1 step\r\n"):
        written += os.read(leader, 65536)
    os.close(leader)
    lines = written.decode().splitlines()
    assert [len(line) for line in lines[:2]] == [60, 60]
    assert lines[0].startswith("[1] bash: echo xxx") and lines[0].endswith("…")
    assert lines[2] == "note: 1 command was refused: " + "n" * 200
    assert lines[3] == "error: " + LONG_ERROR.strip()
    assert lines[4] == "done: submitted · 1 step"


def test_progress_limit_end_is_reported_with_usage_without_cost() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    printer(UsageReport(500, 10, 510, None))
    printer(TurnEnded("step_limit"))
    assert stream.getvalue() == "done: step limit · 0 steps · 510 tokens\n"


def test_progress_refuses_a_uselessly_short_width() -> None:
    with pytest.raises(DisplaySettingError, match="width"):
        ProgressPrinter(io.StringIO(), width=5)


def test_json_lines_follow_the_documented_schema() -> None:
    stream = io.StringIO()
    writer = JsonEventWriter(stream)
    for event in a_fix_run():
        writer(event)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["type"] for r in records] == [
        "usage", "tool_call", "tool_result", "tool_call", "tool_result", "retrying", "tool_call", "tool_result",
        "compacted", "notice", "error", "tool_call", "tool_result", "usage", "message", "turn_ended",
    ]
    assert records[1] == {"type": "tool_call", "id": "functions.bash:0", "name": "bash",
                          "arguments": BASH.arguments}
    assert records[2] == {"type": "tool_result", "id": "functions.bash:0", "name": "bash",
                          "output": "1 failed\nE assert 1 == 2", "is_error": False, "exit_code": 1, "diff": None,
                          "finished": False}
    assert records[4]["diff"] == DIFF and records[4]["exit_code"] is None
    assert records[7]["is_error"] is True
    assert records[12]["finished"] is True
    assert records[0] == {"type": "usage", "prompt_tokens": 1000, "completion_tokens": 40, "total_tokens": 1040,
                          "cost_usd": 0.001}
    assert records[5] == {"type": "retrying", "attempt": 2, "max_attempts": 5, "delay_s": 3.0,
                          "reason": "502 Bad Gateway"}
    assert records[8] == {"type": "compacted", "tokens_before": 90_000, "tokens_after": 12_000,
                          "summary": "We fixed x.", "elided_outputs": 0}
    assert records[14] == {"type": "message", "message": {"role": "assistant", "content": "Done."}}
    assert records[15] == {"type": "turn_ended", "reason": "submitted"}


def test_json_deltas_only_on_request_and_text_kept_as_written() -> None:
    quiet, chatty = io.StringIO(), io.StringIO()
    for stream, include in ((quiet, False), (chatty, True)):
        writer = JsonEventWriter(stream, include_deltas=include)
        writer(AssistantDelta("Grüße ✓"))
        writer(AssistantDelta("hmm", reasoning=True))
    assert quiet.getvalue() == ""
    lines = chatty.getvalue().splitlines()
    assert lines[0] == '{"type": "text_delta", "text": "Grüße ✓", "reasoning": false}'
    assert json.loads(lines[1]) == {"type": "text_delta", "text": "hmm", "reasoning": True}


def test_progress_names_searches_unknown_tools_and_broken_arguments() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    for call in (ToolCall("1", "search_text", json.dumps({"pattern": "def main", "path": "src", "glob": "*.py"})),
                 ToolCall("2", "find_files", json.dumps({"pattern": "test_*.py"})),
                 ToolCall("3", "browser", json.dumps({"url": "https://example.com", "wait": 2})),
                 ToolCall("4", "bash", '{"command": "ls')):
        printer(ToolCallStarted(call))
    assert stream.getvalue().splitlines() == [
        '[1] search_text: "def main" in src (*.py)',
        '[1] find_files: "test_*.py"',
        '[1] browser: url="https://example.com", wait=2',
        '[1] bash: {"command": "ls',
    ]
