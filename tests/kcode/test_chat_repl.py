"""`kcode chat` in a real pseudo-terminal against the scripted server: the whole interactive loop.

Type a task and see the streamed answer, approve a command, cancel a long command with Ctrl-C, carry on,
leave with Ctrl-D, then resume the session and find the earlier conversation sent to the model again.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-kcode-chat-test-7f3a9c"
CURSOR_QUERY = "\x1b[6n"  # prompt_toolkit asks where the cursor is; a terminal answers


def _spawn(args: list[str], server: ScriptedServer, home: Path) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    env.update(HOME=str(home), KCODE_BASE_URL=server.base_url, KCODE_API_KEY=API_KEY, KCODE_MODEL="scripted-model",
               TERM="xterm-256color", COLUMNS="100", LINES="30")
    return pexpect.spawn(sys.executable, ["-m", "kcode", "chat", *args], cwd=str(ROOT), env=env,
                         dimensions=(30, 100), encoding="utf-8", timeout=30)


def _expect(child: pexpect.spawn, pattern: str) -> None:
    """Wait for `pattern`, answering the terminal's cursor-position queries on the way."""
    while child.expect_exact([pattern, CURSOR_QUERY]) == 1:
        child.send("\x1b[1;1R")


def _say(child: pexpect.spawn, text: str) -> None:
    _expect(child, "›")
    child.send(text)
    child.send("\r")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "notes.txt").write_text("hello\n")
    return root


def test_chat_streams_asks_cancels_continues_and_resumes(repo: Path, tmp_path: Path,
                                                         openai_server: ScriptedServer) -> None:
    marker = repo / "approved.txt"
    openai_server.add(
        Reply(text="Hi! I can **help** with this repo.", chunk_chars=2, chunk_delay_s=0.01),
        Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": f"echo ran > {marker}; env; echo tool-ok"})),)),
        Reply(text="The command ran."),
        Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": "sleep 60"})),)),
        Reply(text="Continuing after the interruption."),
    )
    child = _spawn([str(repo)], openai_server, tmp_path)
    child.logfile_read = screen = io.StringIO()
    _say(child, "hello")
    _expect(child, "with this repo.")

    _say(child, "make the marker file")
    _expect(child, "echo ran")  # the approval shows the command
    _expect(child, "›")
    child.send("y\r")
    _expect(child, "The command ran.")
    assert marker.read_text() == "ran\n"

    _say(child, "now wait a long time")
    _expect(child, "sleep 60")
    _expect(child, "›")
    child.send("y\r")
    _expect(child, "Running")
    time.sleep(1.0)
    started = time.monotonic()
    child.sendintr()
    _expect(child, "interrupted")
    assert time.monotonic() - started < 10

    _say(child, "carry on")
    _expect(child, "Continuing after the interruption.")
    history = openai_server.chat_requests[-1].body["messages"]
    interrupted = [m for m in history if m["role"] == "tool" and "interrupted" in m["content"].lower()]
    assert interrupted, history

    _expect(child, "›")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    openai_server.add(Reply(text="Resumed and remembering."))
    resumed = _spawn([str(repo), "--resume"], openai_server, tmp_path)
    _expect(resumed, "Resumed session")
    _say(resumed, "do you remember?")
    _expect(resumed, "Resumed and remembering.")
    sent = openai_server.chat_requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"][:2] == ["hello", "make the marker file"]
    assert sent[-1] == {"role": "user", "content": "do you remember?"}
    _say(resumed, "/exit")
    resumed.expect(pexpect.EOF)
    resumed.close()
    assert resumed.exitstatus == 0

    shown_to_model = json.dumps([request.body for request in openai_server.chat_requests])
    assert "tool-ok" in shown_to_model and API_KEY not in shown_to_model and API_KEY not in screen.getvalue()
    kept = [path for path in (tmp_path / ".local" / "share" / "kcode").rglob("*") if path.is_file()]
    assert any(path.suffix == ".jsonl" for path in kept)  # the session, among others
    assert not [path for path in kept if API_KEY.encode() in path.read_bytes()]


def test_declining_with_feedback_tells_the_model(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(
        Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": "rm -rf build"})),)),
        Reply(text="Understood, I will not delete it."),
    )
    child = _spawn([str(repo)], openai_server, tmp_path)
    _say(child, "clean up")
    _expect(child, "rm -rf build")
    _expect(child, "›")
    child.send("f\r")
    _expect(child, "›")
    child.send("keep the build folder\r")
    _expect(child, "Understood")
    result = openai_server.chat_requests[-1].body["messages"][-1]
    assert result["role"] == "tool" and "keep the build folder" in result["content"]
    _say(child, "/exit")
    child.expect(pexpect.EOF)


def test_slash_commands(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    child = _spawn([str(repo)], openai_server, tmp_path)
    _say(child, "/help")
    _expect(child, "/compact")
    _say(child, "/model")
    _expect(child, "scripted-model")
    _say(child, "/bogus")
    _expect(child, "Unknown command /bogus")
    _say(child, "/mcp")
    _expect(child, "No MCP servers in this session")
    assert openai_server.chat_requests == []

    long_answer = "First answer. " + "Details follow. " * 200  # long enough that a summary is shorter
    openai_server.add(Reply(text=long_answer, chunk_chars=200), Reply(text="The user said hello; kcode answered."),
                      Reply(text="Answer from the other model."))
    _say(child, "hello")
    _expect(child, "First answer.")
    _say(child, "/cost")
    _expect(child, "15 tokens")
    _say(child, "/compact")
    _expect(child, "compacted the conversation")
    summary_request = openai_server.chat_requests[1].body
    assert "tools" not in summary_request and "hello" in json.dumps(summary_request["messages"])
    _say(child, "/model other-model")
    _expect(child, "Model: other-model")
    _say(child, "and now?")
    _expect(child, "Answer from the other model.")
    last = openai_server.chat_requests[2].body
    assert last["model"] == "other-model"
    assert any("The user said hello; kcode answered." in str(m.get("content")) for m in last["messages"])
    _say(child, "/clear")
    _expect(child, "New conversation")
    _say(child, "/exit")
    child.expect(pexpect.EOF)
    sessions = sorted((tmp_path / ".local" / "share" / "kcode" / "sessions").glob("*.jsonl"))
    assert len(sessions) == 2  # /clear started a second one


def test_resuming_a_session_of_another_workspace_is_refused(repo: Path, tmp_path: Path,
                                                            openai_server: ScriptedServer) -> None:
    from kcode.sessions import SessionStore

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    recorder = SessionStore(tmp_path / ".local" / "share" / "kcode" / "sessions").create(elsewhere.resolve(), "m")
    child = _spawn([str(repo), "--resume", recorder.id], openai_server, tmp_path)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert f"kcode chat {elsewhere.resolve()} --resume {recorder.id}" in child.before.replace("\r\n", "")
