"""MCP tools in `kcode chat` in a real pseudo-terminal: a trusted server's tool runs at once, an untrusted one's asks
first, and `/mcp` shows the session's servers (as `kcode mcp list` does) and restarts one."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pexpect

from tests.kcode.mcp_servers.launch import server_table
from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer
from tests.kcode.test_chat_repl import CURSOR_QUERY, ROOT


def _expect(child: pexpect.spawn, pattern: str) -> None:
    while child.expect_exact([pattern, CURSOR_QUERY]) == 1:
        child.send("\x1b[1;1R")


def _say(child: pexpect.spawn, text: str) -> None:
    _expect(child, "›")
    child.send(text + "\r")


def test_trusted_tools_run_untrusted_ones_ask(tmp_path: Path, openai_server: ScriptedServer) -> None:
    config = tmp_path / "config.toml"
    config.write_text(server_table("sure", trust=True) + server_table("ask"))
    openai_server.add(
        Reply(tool_calls=(ScriptedCall("mcp__sure__echo", json.dumps({"text": "quiet"})),)),
        Reply(text="The trusted tool ran."),
        Reply(tool_calls=(ScriptedCall("mcp__ask__echo", json.dumps({"text": "loud"})),)),
        Reply(text="The asked tool ran."),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    env.update(HOME=str(tmp_path), KCODE_CONFIG=str(config), KCODE_BASE_URL=openai_server.base_url,
               KCODE_API_KEY="test-key", KCODE_MODEL="scripted-model", TERM="xterm-256color", COLUMNS="100",
               LINES="30")
    child = pexpect.spawn(sys.executable, ["-m", "kcode", "chat", str(tmp_path)], cwd=str(ROOT), env=env,
                          dimensions=(30, 100), encoding="utf-8", timeout=30)
    child.logfile_read = screen = io.StringIO()

    _say(child, "use the trusted server")
    _expect(child, "The trusted tool ran.")
    assert "Run mcp__sure__echo?" not in screen.getvalue()
    assert openai_server.chat_requests[1].body["messages"][-1]["content"] == "demo says: quiet"

    _say(child, "use the other server")
    _expect(child, "Run mcp__ask__echo?")
    _expect(child, 'text="loud"')
    _expect(child, "›")
    child.send("y\r")
    _expect(child, "The asked tool ran.")
    assert openai_server.chat_requests[3].body["messages"][-1]["content"] == "demo says: loud"

    _say(child, "/mcp")  # a status line per server, a line per tool
    _expect(child, "sure (")
    _expect(child, "crash    Kills the server mid-call.")
    _expect(child, "ask (")
    _expect(child, "crash    Kills the server mid-call.")
    shown = " ".join(screen.getvalue().split())  # the status lines may wrap at 100 columns
    assert "stdio, trusted): connected, 6 tools echo Answer with the text given" in shown
    _say(child, "/mcp restart ask")
    _expect(child, "ask (")
    _expect(child, "crash    Kills the server mid-call.")
    _say(child, "/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
