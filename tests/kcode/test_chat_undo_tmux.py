"""`/undo` in a real `kcode chat` driven through tmux: the scripted model edits a file with `sed -i` and then
deletes one with `rm` through the bash tool, and each time `/undo` typed at the prompt brings the file back."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One chat in a detached tmux session on a private server socket, read back with capture-pane."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def wait_for(self, text: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            screen = self("capture-pane", "-p", "-J", "-S", "-200", "-t", "chat")
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")

    def type(self, line: str) -> None:
        self("send-keys", "-t", "chat", "-l", line)
        self("send-keys", "-t", "chat", "Enter")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(tmp_path / "tmux.sock")
    yield session
    subprocess.run(["tmux", "-S", str(session.socket), "kill-server"], capture_output=True, timeout=10)


def test_undo_brings_back_a_file_changed_by_sed_and_one_removed_by_rm(tmp_path: Path, tmux: Tmux,
                                                                      openai_server: ScriptedServer) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "notes.txt").write_text("old line\n")
    (repo / "keep.txt").write_text("precious\n")
    openai_server.add(
        Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": "sed -i s/old/new/ notes.txt"})),)),
        Reply(text="Edited the notes."),
        Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": "rm keep.txt"})),)),
        Reply(text="Removed the file."),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_", "TMUX"))}
    env |= {"HOME": str(tmp_path), "KCODE_BASE_URL": openai_server.base_url, "KCODE_API_KEY": "k",
            "KCODE_MODEL": "scripted-model", "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "chat.sh"
    script.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier())
                      + f"exec {shlex.quote(sys.executable)} -m kcode chat --yes\n")
    tmux("new-session", "-d", "-s", "chat", "-x", "120", "-y", "40", "-c", str(repo),
         f"bash {shlex.quote(str(script))}")

    tmux.wait_for("/help for commands")
    tmux.wait_for("›")  # the prompt is drawn: keys typed before it could be lost
    tmux.type("change the notes")
    tmux.wait_for("Edited the notes.")
    assert (repo / "notes.txt").read_text() == "new line\n"
    tmux.type("/undo")
    tmux.wait_for("restored notes.txt")
    assert (repo / "notes.txt").read_text() == "old line\n"

    tmux.type("remove keep.txt")
    tmux.wait_for("Removed the file.")
    assert not (repo / "keep.txt").exists()
    tmux.type("/undo")
    tmux.wait_for("restored keep.txt")
    assert (repo / "keep.txt").read_text() == "precious\n"
    assert (repo / "notes.txt").read_text() == "old line\n"
    assert not (repo / ".git").exists()  # the checkpoints live in kcode's data directory, not the workspace

    tmux.type("/rewind 1")  # files as before the rm (as they are now), conversation cut before its call
    tmux.wait_for("The conversation is back to before step 3")
    openai_server.add(Reply(text="Rewound."))
    tmux.type("what now?")
    tmux.wait_for("Rewound.")
    sent = openai_server.chat_requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["change the notes", "remove keep.txt", "what now?"]
    assert not any("rm keep.txt" in json.dumps(m.get("tool_calls", [])) for m in sent)
    tmux.type("/checkpoints")
    assert "sed -i s/old/new/" in tmux.wait_for("files changed")
    tmux.type("/exit")
