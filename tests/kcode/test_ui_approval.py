"""The terminal approver with scripted answers, behind the real `Approvals`, and once in a real pty."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest
from rich.console import Console

from kcode.agent.approvals import ApprovalRequest, Approvals
from kcode.messages import ToolCall
from kcode.ui.approval_prompt import TerminalApprover
from kcode.ui.describe import call_summary, printable, visible
from kcode.ui.errors import DisplaySettingError

ROOT = Path(__file__).resolve().parents[2]


def plain_console() -> Console:
    return Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)


def output(console: Console) -> str:
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())  # type: ignore[attr-defined]


class Script:
    """Answers the prompts in order and keeps the prompts it was shown."""

    def __init__(self, *answers: str | type[BaseException]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        if isinstance(answer, type):
            raise answer()
        return answer


def command_request(command: str = "pytest -q") -> ApprovalRequest:
    arguments = {"command": command}
    return ApprovalRequest(ToolCall("c1", "bash", json.dumps(arguments)), "command", arguments,
                           "commands starting with `pytest` for the rest of this session")


def edit_request(**arguments: object) -> ApprovalRequest:
    return ApprovalRequest(ToolCall("c2", "editor", json.dumps(arguments)), "edit", arguments,
                           "every file edit for the rest of this session")


@pytest.mark.parametrize(("answer", "verdict"), [("y", "yes"), ("YES", "yes"), (" a ", "always"), ("n", "no")])
def test_answers_map_to_decisions(answer: str, verdict: str) -> None:
    decision = TerminalApprover(plain_console(), ask=Script(answer)).decide(command_request())
    assert decision.verdict == verdict


def test_command_question_shows_the_command_and_what_always_allows() -> None:
    console = plain_console()
    TerminalApprover(console, ask=Script("y")).decide(command_request("pytest -q tests/test_app.py"))
    text = output(console)
    assert "Run this command?" in text
    assert "│ $ pytest -q tests/test_app.py" in text
    assert "  a  yes, and allow commands starting with `pytest` for the rest of this session" in text
    assert "  f  no, and tell kcode what to do instead" in text


def test_a_long_always_line_wraps_under_its_meaning_at_80_columns() -> None:
    console = Console(file=io.StringIO(), width=80, force_terminal=False, color_system=None)
    request = ApprovalRequest(command_request().call, "command", {"command": "pytest -q"},
                              "commands starting with `python -m pytest tests/kcode` for the rest of this session")
    TerminalApprover(console, ask=Script("y")).decide(request)
    lines = output(console).splitlines()
    start = lines.index("  a  yes, and allow commands starting with `python -m pytest tests/kcode` for")
    assert lines[start + 1] == "     the rest of this session"


def test_a_tool_kcode_does_not_know_shows_its_arguments() -> None:
    console = plain_console()
    arguments = {"url": "https://example.com"}
    request = ApprovalRequest(ToolCall("c", "browser", json.dumps(arguments)), "command", arguments, "this call")
    TerminalApprover(console, ask=Script("n")).decide(request)
    assert "Run browser?" in output(console)
    assert '│ url="https://example.com"' in output(console)


def test_feedback_is_typed_in_and_reaches_the_model() -> None:
    script = Script("f", "use uv run pytest instead")
    decision = TerminalApprover(plain_console(), ask=script).decide(command_request())
    assert decision.verdict == "no"
    assert "The user said:\nuse uv run pytest instead" in decision.message
    assert script.prompts == ["› ", "What should kcode do instead? › "]


def test_unclear_answer_asks_again() -> None:
    console = plain_console()
    script = Script("maybe", "", "n")
    decision = TerminalApprover(console, ask=script).decide(command_request())
    assert decision.verdict == "no"
    assert len(script.prompts) == 3
    assert output(console).count("Type y, a, n or f.") == 2


def test_ctrl_d_refuses_and_ctrl_c_propagates() -> None:
    assert TerminalApprover(plain_console(), ask=Script(EOFError)).decide(command_request()).verdict == "no"
    with pytest.raises(KeyboardInterrupt):
        TerminalApprover(plain_console(), ask=Script(KeyboardInterrupt)).decide(command_request())


def test_str_replace_edit_shows_what_would_change() -> None:
    console = plain_console()
    request = edit_request(command="str_replace", path="src/app.py", old_str="import os\nx = 1\n",
                           new_str="import os\nx = 2\n")
    TerminalApprover(console, ask=Script("y")).decide(request)
    text = output(console)
    assert "Apply this editor edit?" in text
    assert "│ str_replace src/app.py" in text
    assert "│  import os" in text
    assert "│ -x = 1" in text
    assert "│ +x = 2" in text
    assert "every file edit for the rest of this session" in text


def test_create_over_an_existing_file_says_so_and_long_previews_are_clamped() -> None:
    console = plain_console()
    text_of_file = "\n".join(f"line {i}" for i in range(50))
    request = edit_request(command="create", path="new.py", file_text=text_of_file, overwrite=True)
    TerminalApprover(console, ask=Script("n"), preview_lines=5).decide(request)
    text = output(console)
    assert "create new.py (replacing the existing file)" in text
    assert "│ +line 4" in text
    assert "+line 5" not in text
    assert "… 45 more lines" in text


def test_insert_names_the_line() -> None:
    console = plain_console()
    TerminalApprover(console, ask=Script("y")).decide(
        edit_request(command="insert", path="a.py", insert_line=3, new_str="y = 0"))
    assert "insert a.py after line 3" in output(console)
    assert "│ +y = 0" in output(console)


def test_a_carriage_return_in_a_command_is_shown_not_obeyed() -> None:
    console = plain_console()
    TerminalApprover(console, ask=Script("n")).decide(command_request("rm -rf /tmp/x #\rpytest -q"))
    text = output(console)
    assert "│ $ rm -rf /tmp/x #\\rpytest -q" in text
    assert "\r" not in console.file.getvalue()  # type: ignore[attr-defined]


def test_an_escape_sequence_in_a_command_is_shown_escaped_not_emitted() -> None:
    console = plain_console()
    TerminalApprover(console, ask=Script("n")).decide(command_request("rm -rf ~ \x1b[2K\x1b[1Gpytest -q \u202egnp.x"))
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "$ rm -rf ~ \\x1b[2K\\x1b[1Gpytest -q \\u202egnp.x" in raw
    assert "\x1b" not in raw and "\u202e" not in raw


def test_an_edit_shows_control_characters_in_its_path_and_text_escaped() -> None:
    console = plain_console()
    request = edit_request(command="str_replace", path="a.py\x1b[8m", old_str="x = 1\r\n",
                           new_str="x = 2 #\rx = 1\r\n")
    TerminalApprover(console, ask=Script("n")).decide(request)
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "str_replace a.py\\x1b[8m" in raw
    assert "-x = 1\\r" in raw
    assert "+x = 2 #\\rx = 1\\r" in raw
    assert "\x1b" not in raw and "\r" not in raw


def test_the_tool_name_and_the_always_scope_are_shown_escaped() -> None:
    console = plain_console()
    arguments = {"url": "https://example.com"}
    request = ApprovalRequest(ToolCall("c", "fetch\x1b[2J", json.dumps(arguments)), "command", arguments,
                              "commands starting with `x\x1b[2K`")
    TerminalApprover(console, ask=Script("n")).decide(request)
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Run fetch\\x1b[2J?" in raw
    assert "allow commands starting with `x\\x1b[2K`" in raw
    assert "\x1b" not in raw


@pytest.mark.parametrize(("text", "shown"), [
    ("pytest -q", "pytest -q"),
    ("rm -rf ~ #\rpytest -q", "rm -rf ~ #\\rpytest -q"),
    ("a\tb\nc", "a\tb\nc"),
    ("\x00\x07\x7f\x85", "\\x00\\x07\\x7f\\x85"),
    ("x\u202ey\u200bz\u2028", "x\\u202ey\\u200bz\\u2028"),
    ("tag\U000e0041", "tag\\U000e0041"),
    ("café 日本 ✓", "café 日本 ✓"),
])
def test_visible_writes_out_every_control_and_invisible_character(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_call_summaries_escape_control_characters_and_output_keeps_its_last_redraw() -> None:
    command = ToolCall("c", "bash", json.dumps({"command": "rm -rf ~ #\rpytest -q\nls"}))
    assert call_summary(command) == "rm -rf ~ #\\rpytest -q (+1 lines)"
    editor = ToolCall("c", "editor", json.dumps({"command": "view", "path": "a\x1b[2Jb"}))
    assert call_summary(editor) == "view a\\x1b[2Jb"
    assert printable("10%\r50%\r100%\n\x1b[32mok\x1b[0m") == "100%\nok"  # output: a progress bar's last state


def test_the_question_runs_inside_the_suspend_context() -> None:
    events: list[str] = []

    @contextmanager
    def suspend() -> Iterator[None]:
        events.append("suspend")
        yield
        events.append("resume")

    def ask(prompt: str) -> str:
        events.append("ask")
        return "y"

    TerminalApprover(plain_console(), ask=ask, suspend=suspend).decide(command_request())
    assert events == ["suspend", "ask", "resume"]


def test_behind_real_approvals_always_is_remembered_and_no_becomes_an_error_result() -> None:
    script = Script("a", "n")
    approvals = Approvals("ask", TerminalApprover(plain_console(), ask=script))
    assert approvals.check(ToolCall("c1", "bash", json.dumps({"command": "pytest -x"}))) is None
    assert approvals.check(ToolCall("c2", "bash", json.dumps({"command": "pytest -q"}))) is None  # no question
    refused = approvals.check(ToolCall("c3", "bash", json.dumps({"command": "rm -rf build"})))
    assert refused is not None and refused.is_error
    assert len(script.prompts) == 2


def test_a_destructive_command_opens_with_its_warning_and_is_not_offered_always() -> None:
    console = plain_console()
    request = ApprovalRequest(ToolCall("c1", "bash", json.dumps({"command": "rm -rf ~"})), "command",
                              {"command": "rm -rf ~"}, "this exact command for the rest of this session",
                              warning="This command deletes your home directory ~ (/home/u).")
    assert TerminalApprover(console, ask=Script("y")).decide(request).verdict == "yes"
    lines = output(console).splitlines()
    body = [line for line in lines if line.startswith("│")]
    assert body[0] == "│ ⚠ This command deletes your home directory ~ (/home/u).".ljust(99) + "│"
    assert body[1].startswith("│ $ rm -rf ~")
    assert "  y  yes, this once" in lines
    assert not any(line.startswith("  a  ") for line in lines)


def test_leaving_the_sandbox_says_what_it_stopped_and_what_the_command_could_do_outside() -> None:
    console = plain_console()
    request = ApprovalRequest(ToolCall("c1", "bash", "{}"), "command", {"command": "pip install rich"}, "",
                              outside_sandbox="network access")
    assert TerminalApprover(console, ask=Script("n")).decide(request).verdict == "no"
    lines = output(console).splitlines()
    assert "Run it again outside the sandbox?" in lines[1]
    text = " ".join(line.strip("│ ") for line in lines)
    assert "The sandbox stopped network access. Outside it, this command can change any file you can" in text
    assert "$ pip install rich" in text and "  y  yes, this once" in lines
    assert not any(line.startswith("  a  ") for line in lines)


def test_the_warning_is_red_in_a_colour_terminal() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system="standard")
    request = ApprovalRequest(ToolCall("c1", "bash", "{}"), "command", {"command": "git reset --hard"}, "scope",
                              warning="This command discards \x1b[2J changes.")
    TerminalApprover(console, ask=Script("n")).decide(request)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[1;31m⚠ This command discards" in text


def test_behind_real_approvals_always_for_a_destructive_command_is_one_yes(tmp_path: Path) -> None:
    script = Script("a", "a")
    approvals = Approvals("ask", TerminalApprover(plain_console(), ask=script), workspace=tmp_path,
                          home=tmp_path / "home", shell_cwd=lambda: str(tmp_path))
    for _ in range(2):
        assert approvals.check(ToolCall("c1", "bash", json.dumps({"command": "git reset --hard"}))) is None
    assert len(script.prompts) == 2  # asked again: "always" did not stick


def test_a_preview_of_no_lines_is_refused() -> None:
    with pytest.raises(DisplaySettingError, match="preview_lines"):
        TerminalApprover(plain_console(), preview_lines=0)


def test_default_prompt_works_in_a_real_terminal(tmp_path: Path) -> None:
    script = tmp_path / "approve.py"
    script.write_text(textwrap.dedent("""
        import json
        from rich.console import Console
        from kcode.agent.approvals import ApprovalRequest
        from kcode.messages import ToolCall
        from kcode.ui.approval_prompt import TerminalApprover

        args = {"command": "make test"}
        request = ApprovalRequest(ToolCall("c", "bash", json.dumps(args)), "command", args, "this exact command")
        decision = TerminalApprover(Console()).decide(request)
        print("DECISION", decision.verdict, decision.message)
    """))
    child = pexpect.spawn(sys.executable, [str(script)], cwd=str(ROOT), dimensions=(30, 100), encoding="utf-8",
                          timeout=20)
    child.expect("make test")
    child.expect("› ")
    child.sendline("f")
    child.expect("What should kcode do instead")
    child.sendline("run the unit tests only")
    child.expect("DECISION no Not run: the user declined this call. The user said:")
    child.expect("run the unit tests only")
    child.expect(pexpect.EOF)


def test_a_long_command_is_shown_whole_before_anyone_approves_it() -> None:
    console = plain_console()
    script = "\n".join(f"echo step {i}" for i in range(60)) + "\nrm -rf build"
    TerminalApprover(console, ask=Script("n"), preview_lines=10).decide(command_request(script))
    text = output(console)
    assert "echo step 59" in text and "rm -rf build" in text
    assert "more lines" not in text
