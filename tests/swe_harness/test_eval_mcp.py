"""`kcode eval run` with an MCP server in config.toml: a real SDK server over stdio whose tool the scripted model
calls; its answer reaches the model, and the trajectory records that the tool was offered. `--no-mcp` leaves
it out. The environment cache is the session's, so only the first run of the file builds it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.kcode.mcp_servers.launch import server_table
from tests.kcode.openai_server import Reply, ScriptedServer
from tests.swe_harness.task_repo import TaskRepo, instance_row, write_dataset
from tests.swe_harness.test_eval_cli import call, common, kcode


def _offered(output: Path) -> str:
    records = [json.loads(line) for line in (output / "instances" / "acme__calc-1" / "trajectory.jsonl")
               .read_text().splitlines()]
    return next(r["message"] for r in records if "tools offered" in str(r.get("message", "")))


def test_an_mcp_tool_serves_the_agent_in_an_eval_run_unless_no_mcp(
        task: TaskRepo, env_specs: Path, env_cache: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    config = tmp_path / ".config" / "kcode" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(server_table("demo"))
    dataset = write_dataset(tmp_path / "dataset.jsonl", [instance_row(task, "acme__calc-1")])
    openai_server.add(
        Reply(tool_calls=(call("mcp__demo__echo", text="from the eval"),)),
        Reply(tool_calls=(call("submit", summary="nothing to change"),)),
    )
    with_mcp = tmp_path / "with"
    run = kcode(["eval", "run", *common(task, dataset, with_mcp, env_specs, env_cache)], tmp_path, openai_server)
    assert run.returncode == 0, run.stderr
    answer = openai_server.chat_requests[1].body["messages"][-1]
    assert answer["role"] == "tool" and "from the eval" in answer["content"]
    assert "mcp__demo__echo" in _offered(with_mcp)

    openai_server.add(Reply(tool_calls=(call("submit", summary="nothing to change"),)))
    without = tmp_path / "without"
    run = kcode(["eval", "run", "--no-mcp", *common(task, dataset, without, env_specs, env_cache)], tmp_path,
                openai_server)
    assert run.returncode == 0, run.stderr
    assert "mcp__" not in _offered(without)
    assert not any(t["function"]["name"].startswith("mcp__") for t in openai_server.chat_requests[-1].body["tools"])
