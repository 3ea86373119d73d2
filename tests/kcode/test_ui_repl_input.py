"""The chat's input line, typed into through prompt_toolkit's pipe input, and once in a real pty."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import pexpect
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kcode.ui.repl_input import ChatCompleter, ReplInput

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print(1)\n")
    (root / "src" / "model.py").write_text("")
    (root / "setup.py").write_text("")
    (root / ".env").write_text("SECRET=1\n")
    return root


def typed(keys: str, history: Path, root: Path, **kwargs: object) -> str:
    """What `read` returns after `keys` were typed (all at once, before the prompt starts)."""
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        return ReplInput(history, root=root, input=pipe, output=DummyOutput(), **kwargs).read()  # type: ignore[arg-type]


def typed_slowly(chunks: list[str], history: Path, root: Path) -> str:
    """Like `typed`, pausing between chunks so completions (computed asynchronously) can appear."""
    with create_pipe_input() as pipe:
        repl = ReplInput(history, root=root, input=pipe, output=DummyOutput())
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(repl.read()))
        reader.start()
        for chunk in chunks:
            time.sleep(0.15)
            pipe.send_text(chunk)
        reader.join(timeout=5)
        assert result, "the prompt never returned"
        return result[0]


def completions(text: str, root: Path, commands: tuple[str, ...] = ()) -> list[str]:
    completer = ChatCompleter(root, ["/help", "/compact", "/cost", "/exit", *commands])
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent(text_inserted=True))]


def test_enter_sends_the_line(tmp_path: Path, workspace: Path) -> None:
    assert typed("fix the failing test\r", tmp_path / "history", workspace) == "fix the failing test"


@pytest.mark.parametrize("newline", ["\x1b\r", "\\\r", "\n"], ids=["esc-enter", "backslash-enter", "ctrl-j"])
def test_newline_keys_make_multiline_messages(newline: str, tmp_path: Path, workspace: Path) -> None:
    assert typed(f"first{newline}second\r", tmp_path / "history", workspace) == "first\nsecond"


def test_ctrl_c_keeps_the_line_a_second_clears_it_and_on_an_empty_line_interrupts(tmp_path: Path,
                                                                                    workspace: Path) -> None:
    assert typed("keep this\x03 line\r", tmp_path / "history", workspace) == "keep this line"
    assert typed("never mind\x03\x03real message\r", tmp_path / "history", workspace) == "real message"
    with pytest.raises(KeyboardInterrupt):
        typed("\x03", tmp_path / "history", workspace)


def test_ctrl_d_on_an_empty_line_ends_input(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(EOFError):
        typed("\x04", tmp_path / "history", workspace)


def test_history_is_saved_to_the_file_and_recalled_by_a_new_session(tmp_path: Path, workspace: Path) -> None:
    history = tmp_path / "state" / "kcode" / "history"
    typed("first question\r", history, workspace)
    typed("second\x1b\rline\r", history, workspace)
    saved = history.read_text()
    assert "+first question" in saved and "+second\n+line" in saved
    up, enter = "\x1b[A", "\r"
    # Up walks through a multi-line entry line by line before it steps back to the one before.
    assert typed(up * 3 + enter, history, workspace) == "first question"


def test_slash_commands_complete_at_the_start_of_the_line(workspace: Path) -> None:
    assert completions("/co", workspace) == ["/compact", "/cost"]
    assert completions("/", workspace, ("/undo",))[-1] == "/undo"
    assert completions("please /co", workspace) == []
    assert completions("/compact now", workspace) == []


def test_paths_complete_after_an_at_sign(workspace: Path) -> None:
    assert completions("look at @s", workspace) == ["setup.py", "src/"]
    assert completions("look at @src/m", workspace) == ["src/main.py", "src/model.py"]
    assert completions("@src/p", workspace) == ["src/pkg/"]
    assert completions("@", workspace) == ["setup.py", "src/"]  # hidden files only when asked for
    assert completions("@.e", workspace) == [".env"]
    assert completions("@nowhere/x", workspace) == []
    assert completions("look at src/m", workspace) == []


def test_tab_then_enter_runs_a_slash_command(tmp_path: Path, workspace: Path) -> None:
    assert typed_slowly(["/comp", "\t", "\r"], tmp_path / "history", workspace) == "/compact"


def test_enter_after_tab_sends_the_completed_request(tmp_path: Path, workspace: Path) -> None:
    keys = ["read @src/ma", "\t", "\r"]
    assert typed_slowly(keys, tmp_path / "history", workspace) == "read @src/main.py"


def test_enter_on_a_chosen_directory_keeps_editing(tmp_path: Path, workspace: Path) -> None:
    keys = ["read @sr", "\t", "\r", "main.py\r"]
    assert typed_slowly(keys, tmp_path / "history", workspace) == "read @src/main.py"


def test_ctrl_c_after_tab_keeps_the_completed_text(tmp_path: Path, workspace: Path) -> None:
    keys = ["read @src/ma", "\t", "\x03", " please\r"]
    assert typed_slowly(keys, tmp_path / "history", workspace) == "read @src/main.py please"


def test_toolbar_text_comes_from_the_callback(tmp_path: Path, workspace: Path) -> None:
    calls: list[int] = []

    def toolbar() -> str:
        calls.append(1)
        return "kimi-k2 · 12.3k tokens"

    assert typed("hi\r", tmp_path / "history", workspace, toolbar=toolbar) == "hi"
    assert calls


def test_prompt_works_in_a_real_terminal(tmp_path: Path, workspace: Path) -> None:
    script = tmp_path / "repl.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from kcode.ui.repl_input import ReplInput
        repl = ReplInput(Path({str(tmp_path / "history")!r}), root=Path({str(workspace)!r}),
                         toolbar=lambda: "kimi-k2-0905")
        print("GOT", repr(repl.read()))
    """))
    child = pexpect.spawn(sys.executable, [str(script)], cwd=str(ROOT), dimensions=(24, 100), encoding="utf-8",
                          timeout=20)
    child.expect_exact("\x1b[6n")  # prompt_toolkit asks where the cursor is; a terminal answers
    child.send("\x1b[1;1R")
    child.expect("kimi-k2-0905")  # the toolbar needs the answer: only then is the screen's height known
    child.send("two\x1b\rlines")
    child.send("\r")
    child.expect(r"GOT 'two\\nlines'")
    child.expect(pexpect.EOF)


def test_tab_enter_sends_and_ctrl_c_keeps_the_text_in_a_real_terminal(tmp_path: Path, workspace: Path) -> None:
    script = tmp_path / "repl.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from kcode.ui.repl_input import ReplInput
        repl = ReplInput(Path({str(tmp_path / "history")!r}), root=Path({str(workspace)!r}), toolbar=lambda: "ready")
        print("GOT", repr(repl.read()))
        print("GOT", repr(repl.read()))
    """))
    child = pexpect.spawn(sys.executable, [str(script)], cwd=str(ROOT), dimensions=(24, 100), encoding="utf-8",
                          timeout=20)
    for typed_keys, sent in ((["read @src/ma", "\t", "\r"], "read @src/main.py"),
                             (["fix the test", "\x03", " please", "\r"], "fix the test please")):
        child.expect_exact("\x1b[6n")
        child.send("\x1b[1;1R")
        child.expect("ready")
        for keys in typed_keys:
            child.send(keys)
            time.sleep(0.3)  # completions are computed in the background
        child.expect_exact(f"GOT {sent!r}")
    child.expect(pexpect.EOF)
