"""The `--trajectory` writer: one JSON line per event of a real run, readable after every event."""

from __future__ import annotations

import json
from pathlib import Path

from kcode.agent.events import AssistantDelta, Event, ToolCallFinished
from kcode.agent.loop import Agent
from kcode.agent.trajectory import TrajectoryWriter, event_type, to_json
from kcode.messages import ToolCall, user
from tests.kcode.scripted import FakeClock, ScriptedBackend, answer, calls, create, make_toolset
from tools.base import ToolResult

CALL = ToolCall("c1", "bash", "{}")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_is_written_event_by_event(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    clock = FakeClock()
    path = tmp_path / "out" / "run.jsonl"
    writer = TrajectoryWriter(path, {"instance_id": "demo-1", "workspace": root}, clock=clock)
    seen: list[int] = []

    def sink(event: Event) -> None:
        clock.advance(0.25)
        writer(event)
        seen.append(len(read(path)))

    backend = ScriptedBackend([calls(create("a.txt", "a")), answer("Done.")])
    Agent(backend, make_toolset(root), sink).run_turn(user("write a"))

    records = read(path)
    assert records[0]["type"] == "trajectory" and records[0]["instance_id"] == "demo-1"
    assert records[0]["workspace"] == str(root)
    types = [r["type"] for r in records[1:]]
    assert "assistant_delta" not in types  # the whole message comes in message_added
    assert types[0] == "message_added" and types[-1] == "turn_ended"
    assert records[-1]["reason"] == "answered"
    finished = next(r for r in records if r["type"] == "tool_call_finished")
    assert finished["call"]["function"]["name"] == "editor"
    assert finished["result"]["is_error"] is False and "a.txt" in finished["result"]["output"]
    added = [r["message"] for r in records if r["type"] == "message_added"]
    assert added[0] == {"role": "user", "content": "write a"}
    assert added[2]["role"] == "tool" and added[2]["tool_call_id"] == added[1]["tool_calls"][0]["id"]
    assert records[1]["time_s"] == 0.25 and records[2]["time_s"] == 0.5
    assert seen == sorted(seen) and seen[-1] == len(records)  # the file grew as events arrived


def test_deltas_can_be_kept_and_odd_values_never_fail_to_write(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TrajectoryWriter(path, include_deltas=True)
    writer(AssistantDelta("hi", reasoning=True))
    result = ToolResult("ok", data={"path": tmp_path, "ids": {3}})
    writer(ToolCallFinished(CALL, result))

    records = read(path)
    assert records[1] == {"type": "assistant_delta", "time_s": records[1]["time_s"], "text": "hi", "reasoning": True}
    assert records[2]["result"]["data"] == {"path": str(tmp_path), "ids": "{3}"}


def test_event_type_and_to_json() -> None:
    assert event_type(ToolCallFinished(CALL, ToolResult("x"))) == "tool_call_finished"
    assert to_json((1, "a", None, [2.5])) == [1, "a", None, [2.5]]
