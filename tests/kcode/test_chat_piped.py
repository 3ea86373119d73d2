"""`kcode chat` with a message piped to stdin: it answers that one message and leaves, asking nobody."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kcode.commands.piped_input import NOBODY_TO_ASK
from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "main.py").write_text("print('hello')\n")
    return root


def _chat(args: list[str], server: ScriptedServer, home: Path, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    env.update(HOME=str(home), KCODE_BASE_URL=server.base_url, KCODE_API_KEY="test-key", KCODE_MODEL="scripted-model")
    return subprocess.run([sys.executable, "-m", "kcode", "chat", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_a_piped_message_is_answered_then_chat_leaves(repo: Path, tmp_path: Path,
                                                      openai_server: ScriptedServer) -> None:
    view = ScriptedCall("editor", json.dumps({"command": "view", "path": "main.py"}))
    openai_server.add(Reply(tool_calls=(view,)), Reply(text="main.py prints hello."))
    done = _chat([str(repo)], openai_server, tmp_path, "explain main.py\n")
    assert done.returncode == 0, done.stderr
    assert "main.py prints hello." in done.stdout
    assert "not a terminal" not in done.stderr
    assert "/help for commands" not in done.stdout  # no banner for nobody to read
    first = openai_server.chat_requests[0].body["messages"]
    assert first[-1] == {"role": "user", "content": "explain main.py"}
    assert "print('hello')" in openai_server.chat_requests[1].body["messages"][-1]["content"]
    assert len(openai_server.chat_requests) == 2  # one message, one answer, then gone
    assert list((tmp_path / ".local/share/kcode/sessions").iterdir())  # saved, for --resume in a terminal


def test_what_would_need_asking_is_refused_unless_yes_allows_it(repo: Path, tmp_path: Path,
                                                                openai_server: ScriptedServer) -> None:
    marker = repo / "ran.txt"
    touch = ScriptedCall("bash", json.dumps({"command": f"touch {marker}"}))
    openai_server.add(Reply(tool_calls=(touch,)), Reply(text="Could not run it."),
                      Reply(tool_calls=(touch,)), Reply(text="Done."))
    refused = _chat([str(repo)], openai_server, tmp_path, "touch a file")
    assert refused.returncode == 0, refused.stderr
    assert not marker.exists()
    assert openai_server.chat_requests[1].body["messages"][-1]["content"] == NOBODY_TO_ASK
    allowed = _chat([str(repo), "--yes"], openai_server, tmp_path, "touch a file")
    assert allowed.returncode == 0, allowed.stderr
    assert marker.exists()


def test_an_empty_pipe_is_a_usage_error(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    done = _chat([str(repo)], openai_server, tmp_path, "  \n")
    assert done.returncode == 2
    assert done.stderr == "kcode: stdin is not a terminal and brought no message: pipe one in, or run kcode chat " \
                          "in a terminal\n"
    assert openai_server.chat_requests == []
