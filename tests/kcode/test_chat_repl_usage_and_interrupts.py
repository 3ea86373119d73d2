"""`kcode chat` in a pseudo-terminal: what it counts and says across a resume, a /compact and a Ctrl-C.

A resumed session keeps counting its tokens, /compact against a server that reports the same usage
whatever it is sent says one sensible line, and a command stopped with Ctrl-C is reported as having run,
with a spinner that did not count the time the approval question took.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pexpect
import pytest

from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer
from tests.kcode.test_chat_repl import _expect, _say, _spawn

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _plain(screen: str) -> str:
    return _ANSI.sub("", screen)


def _tokens(shown: str) -> float:
    """A count as `format_tokens` writes it (950, 12.3k) back to a number."""
    return float(shown[:-1]) * 1000 if shown.endswith("k") else float(shown)


def _leave(child: pexpect.spawn) -> None:
    _say(child, "/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def test_a_resumed_session_counts_on_and_compact_reports_once_from_our_own_count(
        repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(text="Hello there.", prompt_tokens=1200, completion_tokens=34))
    first = _spawn([str(repo)], openai_server, tmp_path)
    _say(first, "hello")
    _expect(first, "Hello there.")
    _leave(first)

    long_answer = "First answer. " + "Details follow. " * 300
    openai_server.add(Reply(text=long_answer, chunk_chars=400), Reply(text="They said hello twice."))
    resumed = _spawn([str(repo), "--resume"], openai_server, tmp_path)
    resumed.logfile_read = screen = io.StringIO()
    _say(resumed, "/cost")
    _expect(resumed, "1,234 tokens")
    _say(resumed, "tell me more")  # the server says 10 + 5 tokens, far fewer than the history holds
    _expect(resumed, "Details follow.")
    _say(resumed, "/cost")
    _expect(resumed, "1,249 tokens")
    _say(resumed, "/compact")
    _expect(resumed, "tokens")
    _leave(resumed)

    shown = _plain(screen.getvalue())
    reports = re.findall(r"compacted the conversation: (\S+) → (\S+) tokens", shown)
    assert len(reports) == 1 and "Compacted:" not in shown, shown
    before, after = (_tokens(count) for count in reports[0])
    assert before - after > 1000  # the summary replaced a 4,800-character answer (some 1,400 tokens)


def test_a_command_stopped_with_ctrl_c_ran_and_its_timer_starts_at_approval(
        repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": "sleep 30"})),)),
                      Reply(text="Stopped as asked."))
    child = _spawn([str(repo)], openai_server, tmp_path)
    child.logfile_read = screen = io.StringIO()
    _say(child, "wait a while")
    _expect(child, "sleep 30")
    _expect(child, "›")
    time.sleep(2.5)  # the user reads the question before answering
    approved_at = len(screen.getvalue())
    child.send("y\r")
    _expect(child, "ctrl-c to interrupt")
    time.sleep(1.5)
    child.sendintr()
    _expect(child, "interrupted")
    timers = re.findall(r"Running bash… (\d+)s", _plain(screen.getvalue()[approved_at:]))
    assert timers and timers[0] == "0", timers

    _say(child, "go on")
    _expect(child, "Stopped as asked.")
    result = openai_server.chat_requests[-1].body["messages"][-2]
    assert result["role"] == "tool" and not result["content"].startswith("Not run"), result
    ran_for = re.match(r"Interrupted by the user after (\d+\.\d) s of running", result["content"])
    assert ran_for is not None and 1.0 <= float(ran_for[1]) < 10, result
    _leave(child)
