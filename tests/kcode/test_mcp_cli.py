"""MCP servers from the command line: `kcode fix` with a scripted model calling their tools, and `kcode mcp list`.

All real: kcode in a subprocess, the SDK's own server over stdio and streamable HTTP, the scripted
OpenAI-compatible server on 127.0.0.1. One fix session meets every kind of trouble (a server that hangs at
start-up, an `isError` answer, a huge answer, a server that dies mid-call) and still finishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.kcode.mcp_servers.launch import http_demo, server_table
from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer


def _kcode(args: list[str], home: Path, config: Path, server: ScriptedServer | None = None,
           ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    env.update(HOME=str(home), KCODE_CONFIG=str(config))
    if server is not None:
        env.update(KCODE_BASE_URL=server.base_url, KCODE_API_KEY="test-key", KCODE_MODEL="scripted-model")
    return subprocess.run([sys.executable, "-m", "kcode", *args], env=env, capture_output=True, text=True,
                          input="", timeout=120)


def _call(name: str, **arguments: object) -> ScriptedCall:
    return ScriptedCall(name, json.dumps(arguments))


def _tool_answers(server: ScriptedServer, request: int) -> dict[str, str]:
    """The tool results the model was sent in request number `request`, by tool name."""
    messages = server.chat_requests[request].body["messages"]
    return {m["name"]: m["content"] for m in messages if m["role"] == "tool"}


def test_fix_uses_mcp_tools_and_survives_every_failure(tmp_path: Path, openai_server: ScriptedServer) -> None:
    workspace = tmp_path / "repo"
    workspace.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    with http_demo() as url:
        config = tmp_path / "config.toml"
        config.write_text(server_table("demo") + server_table("stuck", "hang", startup_timeout_s=1)
                          + f'[mcp_servers.web]\nurl = "{url}"\n')
        openai_server.add(
            Reply(tool_calls=(_call("mcp__demo__echo", text="hello"), _call("mcp__web__fail", reason="nope"),
                              _call("mcp__web__huge", lines=3000))),
            Reply(tool_calls=(_call("mcp__demo__crash"),)),
            Reply(tool_calls=(_call("mcp__demo__echo", text="still there?"),)),
            Reply(tool_calls=(_call("submit", summary="done"),)),
        )
        trajectory = tmp_path / "trajectory.jsonl"
        done = _kcode(["fix", str(workspace), "--task", "ask the servers", "--yes", "--trajectory", str(trajectory)],
                      tmp_path, config, openai_server)
    assert done.returncode == 1, done.stderr  # finished, nothing changed
    assert "MCP server stuck is left out: did not start within 1 s" in done.stderr
    offered = {tool["function"]["name"] for tool in openai_server.chat_requests[0].body["tools"]}
    assert {"bash", "mcp__demo__echo", "mcp__web__huge"} <= offered and not any("stuck" in n for n in offered)

    first = _tool_answers(openai_server, 1)
    assert first["mcp__demo__echo"] == "demo says: hello"
    assert "failed on purpose: nope" in first["mcp__web__fail"]
    huge = first["mcp__web__huge"]
    assert len(huge) <= 16_000 and "line 3000 of a very long answer" in huge and "the whole output is saved" in huge
    assert "stopped during the call" in _tool_answers(openai_server, 2)["mcp__demo__crash"]
    assert "is not running" in _tool_answers(openai_server, 3)["mcp__demo__echo"]
    recorded = trajectory.read_text()
    assert "mcp__demo__echo" in recorded and "demo says: hello" in recorded


def test_no_mcp_leaves_the_servers_out(tmp_path: Path, openai_server: ScriptedServer) -> None:
    config = tmp_path / "config.toml"
    config.write_text(server_table("demo", "exit"))  # would print a line if it were started
    openai_server.add(Reply(text="nothing to do"))
    done = _kcode(["fix", str(tmp_path), "--task", "t", "--no-mcp"], tmp_path, config, openai_server)
    assert done.returncode == 1, done.stderr
    assert "MCP" not in done.stderr
    assert not [t for t in openai_server.chat_requests[0].body["tools"] if t["function"]["name"].startswith("mcp")]


def test_mcp_list_shows_each_server_and_its_tools(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(server_table("demo", trust=True) + server_table("broken", "exit")
                      + server_table("spare", enabled=False))
    done = _kcode(["mcp", "list", str(tmp_path)], tmp_path, config)
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr  # one enabled server did not start
    target = f"{sys.executable} {Path(__file__).parent / 'mcp_servers' / 'demo.py'}"
    assert lines[0] == f"demo ({target} stdio, trusted): connected, 6 tools"
    assert lines[1].split() == ["echo", "Answer", "with", "the", "text", "given,", "prefixed", "so", "a", "test",
                                "can", "tell", "it", "came", "from", "this", "server."]
    assert [line.split()[0] for line in lines[1:7]] == ["echo", "add", "fail", "huge", "picture", "crash"]
    assert lines[7].startswith(f"broken ({target} exit): failed: ") and "cannot open its database" in lines[7]
    assert lines[8] == f"spare ({target} stdio): disabled"


def test_mcp_list_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[mcp_servers.x]\ncommand = "a"\nurl = "http://h/mcp"\n')
    done = _kcode(["mcp", "list"], tmp_path, config)
    assert done.returncode == 2
    assert done.stderr.strip() == f"kcode: {config}: mcp_servers.x: give either command (a stdio server) or url " \
                                  "(a streamable-HTTP server)"


def test_a_session_without_servers_never_imports_the_sdk(tmp_path: Path) -> None:
    code = f"""
import sys
from pathlib import Path
from kcode.config import load_settings
from kcode.commands.agent_setup import mcp_servers
import kcode.cli, kcode.commands.chat, kcode.commands.fix
settings = load_settings({{"HOME": {str(tmp_path)!r}, "KCODE_BASE_URL": "http://127.0.0.1:9/v1", "KCODE_MODEL": "m"}})
with mcp_servers(settings, Path("."), print) as servers:
    assert servers is None
print(sorted(name for name in sys.modules if name == "mcp" or name.startswith(("mcp.", "mcp_types"))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
