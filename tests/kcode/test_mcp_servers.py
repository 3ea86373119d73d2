"""The connection manager against real MCP servers (the SDK's own server, over stdio and streamable HTTP).

Each server's tools reach the toolset as `mcp__SERVER__TOOL` and answer through it: text, an image described in
words, an `isError` result as an error, a huge answer clamped and spilled to a file like bash output. A server
that hangs at start-up or exits is left out with its reason; one that dies mid-session answers with an error
until restarted; trusted servers' tools run without asking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kcode.agent.approvals import MCP_TOOL_REFUSED, ApprovalRequest, Approvals, Decision, headless_approvals
from kcode.commands.agent_setup import guarded
from kcode.config import Settings
from kcode.mcp.config import McpServerConfig
from kcode.mcp.connection import McpServers
from kcode.messages import ToolCall
from kcode.profiles import Profile
from tests.kcode.mcp_servers.launch import demo_args, http_demo
from tools.settings import ToolSettings
from tools.standard import standard_toolset


def _stdio(name: str, mode: str = "stdio", **keys: object) -> McpServerConfig:
    command, *args = demo_args(mode)
    return McpServerConfig(name, command=command, args=tuple(args), **keys)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServers]:
    """One demo server over stdio, one over HTTP, one that hangs, one that exits, and one disabled."""
    with http_demo() as url:
        configs = [_stdio("local", env={"TEST_MARK": " (marked)"}, trust=True),
                   McpServerConfig("remote", url=url, headers={"X-Test": "1"}),
                   _stdio("stuck", "hang", startup_timeout_s=1.0),
                   _stdio("broken", "exit"),
                   _stdio("spare", enabled=False)]
        started = time.monotonic()
        with McpServers.start(configs, cwd=tmp_path_factory.mktemp("workspace")) as connected:
            assert time.monotonic() - started < 15  # the hanging one is given up on, not waited for
            yield connected


def test_statuses_say_which_servers_started_and_why_others_did_not(servers: McpServers) -> None:
    by_name = {status.name: status for status in servers.statuses()}
    assert list(by_name) == ["local", "remote", "stuck", "broken", "spare"]
    assert by_name["local"].state == by_name["remote"].state == "connected"
    assert [name for name, _ in by_name["remote"].tools] == ["echo", "add", "fail", "huge", "picture", "crash"]
    assert by_name["stuck"].state == "failed" and by_name["stuck"].detail == "did not start within 1 s"
    assert by_name["broken"].state == "failed" and "cannot open its database" in by_name["broken"].detail
    assert by_name["spare"].state == "disabled"
    assert by_name["local"].trusted and not by_name["remote"].trusted


def test_tools_join_the_toolset_and_answer_through_it(servers: McpServers, tmp_path: Path) -> None:
    with standard_toolset(tmp_path, ToolSettings(max_output_chars=2_000), extra_tools=servers.tools()) as toolset:
        names = toolset.names
        assert "bash" in names and "mcp__local__echo" in names and "mcp__remote__add" in names
        assert not [name for name in names if name.startswith(("mcp__stuck", "mcp__broken", "mcp__spare"))]
        schema = next(s for s in toolset.schemas() if s["function"]["name"] == "mcp__remote__add")["function"]
        assert schema["parameters"]["properties"]["b"]["type"] == ["integer", "null"]
        assert "From the MCP server 'remote'" in schema["description"]

        echoed = toolset.dispatch("mcp__local__echo", json.dumps({"text": "hi"}))
        assert (echoed.output, echoed.is_error) == ("demo says: hi (marked)", False)  # its env reached it
        assert toolset.dispatch("mcp__remote__add", {"a": 2, "b": 3}).output == "5"
        assert toolset.dispatch("mcp__remote__add", {"a": "two"}).is_error  # checked before it is sent
        picture = toolset.dispatch("mcp__remote__picture", {})
        assert picture.output == "[image: image/png, 100 bytes, not shown]"

        failed = toolset.dispatch("mcp__remote__fail", {"reason": "bad input"})
        assert failed.is_error and "failed on purpose: bad input" in failed.output

        huge = toolset.dispatch("mcp__local__huge", {"lines": 20_000})
        assert len(huge.output) <= 2_000 and "line 1 of a very long answer" in huge.output
        assert "line 20000 of a very long answer" in huge.output
        spilled = Path(huge.output.split("saved in ")[1].split(" ...]")[0])
        assert spilled.read_text().count("\n") == 20_000


def test_trusted_servers_tools_run_without_asking(servers: McpServers, tmp_path: Path) -> None:
    asked: list[str] = []

    class Recorder:
        def decide(self, request: ApprovalRequest) -> Decision:
            asked.append(request.call.name)
            return Decision.yes()

    settings = Settings(profile=Profile(name="t", provider="openai", model="m"), config_dir=tmp_path,
                        data_dir=tmp_path)
    with standard_toolset(tmp_path, extra_tools=servers.tools()) as toolset:
        approvals = guarded(Approvals("ask", Recorder()), settings, tmp_path, toolset, home=tmp_path,
                            on_decision=None)
        for name in ("mcp__local__echo", "mcp__remote__echo"):
            assert approvals.check(ToolCall("c1", name, json.dumps({"text": "x"}))) is None
        assert asked == ["mcp__remote__echo"]
        # `kcode fix` without --yes: a trusted server's tools run, an untrusted one's are refused like commands
        headless = guarded(headless_approvals(False), settings, tmp_path, toolset, home=tmp_path, on_decision=None)
        assert headless.check(ToolCall("c2", "mcp__local__echo", "{}")) is None
        refused = headless.check(ToolCall("c3", "mcp__remote__echo", "{}"))
        assert refused is not None and refused.output == MCP_TOOL_REFUSED


def test_a_server_that_dies_answers_with_an_error_until_restarted(tmp_path: Path) -> None:
    with McpServers.start([_stdio("fragile")], cwd=tmp_path) as servers:
        tools = {tool.name: tool for tool in servers.tools()}
        crashed = tools["mcp__fragile__crash"].run({})
        assert crashed.is_error and "stopped during the call" in crashed.output
        after = tools["mcp__fragile__echo"].run({"text": "hello?"})
        assert after.is_error and "is not running" in after.output and "restarts it" in after.output
        assert servers.statuses()[0].state == "stopped"
        restarted = servers.restart("fragile")
        assert restarted is not None and restarted.state == "connected"
        assert tools["mcp__fragile__echo"].run({"text": "back"}).output == "demo says: back"
        assert servers.restart("nobody") is None
