"""The scripted server itself: the wire format it streams, its faults, its JSON scripts and its process mode."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.kcode.openai_server import (
    Drop,
    Hang,
    HttpError,
    Reply,
    ScriptedCall,
    ScriptedServer,
    item_from_json,
    load_script,
)

ROOT = Path(__file__).parents[2]


def post(server: ScriptedServer, body: dict[str, Any]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    return connection.getresponse()


def sse_chunks(response: http.client.HTTPResponse) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of an SSE body, and whether it ended with `[DONE]`."""
    events = [line.removeprefix("data: ") for line in response.read().decode().split("\n\n") if line]
    done = events[-1] == "[DONE]"
    return [json.loads(event) for event in events if event != "[DONE]"], done


def test_streams_small_pieces_with_call_ids_and_names_only_in_the_first(openai_server: ScriptedServer) -> None:
    arguments = json.dumps({"command": "pytest -q tests/"})
    openai_server.add(Reply(text="Running the tests.", chunk_chars=4,
                            tool_calls=(ScriptedCall("bash", arguments, id="call_x"),)))
    response = post(openai_server, {"model": "k2", "stream": True, "stream_options": {"include_usage": True},
                                    "messages": [{"role": "user", "content": "test it"}]})
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    chunks, done = sse_chunks(response)
    assert done and all(chunk["model"] == "k2" for chunk in chunks)
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(t for t in texts if t) == "Running the tests."
    assert max(len(t) for t in texts if t) == 4
    pieces = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", ())]
    assert pieces[0]["id"] == "call_x" and pieces[0]["function"]["name"] == "bash"
    assert all("id" not in p and "name" not in p["function"] for p in pieces[1:])
    assert "".join(p["function"]["arguments"] for p in pieces) == arguments and len(pieces) > 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 15


def test_usage_chunk_only_when_asked_for(openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(text="hi"))
    chunks, _ = sse_chunks(post(openai_server, {"stream": True, "messages": []}))
    assert all("usage" not in chunk for chunk in chunks)


def test_non_streaming_requests_get_one_completion_through_the_sdk(openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(text="plain", reasoning="hmm", tool_calls=(ScriptedCall("view", '{"path": "x"}'),)))
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="sk-a", max_retries=0)
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    message = completion.choices[0].message
    assert message.content == "plain" and getattr(message, "reasoning_content", None) == "hmm"
    assert message.tool_calls is not None
    assert message.tool_calls[0].model_dump()["function"]["arguments"] == '{"path": "x"}'
    assert completion.choices[0].finish_reason == "tool_calls" and completion.usage is not None
    assert [model.id for model in client.models.list()] == ["scripted-model"]
    assert [r.path for r in openai_server.requests] == ["/v1/chat/completions", "/v1/models"]
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-a"
    client.close()


def test_errors_carry_status_headers_and_an_openai_error_body(openai_server: ScriptedServer) -> None:
    openai_server.add(HttpError(429, "slow down", headers={"Retry-After": "3"}))
    response = post(openai_server, {"stream": True, "messages": []})
    assert response.status == 429 and response.getheader("Retry-After") == "3"
    assert json.loads(response.read())["error"]["message"] == "slow down"


def test_an_exhausted_script_answers_500_saying_so(openai_server: ScriptedServer) -> None:
    response = post(openai_server, {"stream": True, "messages": []})
    assert response.status == 500 and response.getheader("x-should-retry") == "false"
    assert "the script ran out (request #1" in json.loads(response.read())["error"]["message"]


def test_drop_closes_without_an_answer_and_the_next_item_still_serves(openai_server: ScriptedServer) -> None:
    openai_server.add(Drop(), Reply(text="after"))
    with pytest.raises(http.client.RemoteDisconnected):
        post(openai_server, {"stream": False, "messages": []})
    response = post(openai_server, {"stream": False, "messages": []})
    assert json.loads(response.read())["choices"][0]["message"]["content"] == "after"


def test_a_mid_stream_drop_cuts_the_chunked_body(openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(text="abcdefghij", chunk_chars=2, drop_after_chunks=3))
    response = post(openai_server, {"stream": True, "messages": []})
    with pytest.raises(http.client.IncompleteRead):
        response.read()


def test_stopping_does_not_wait_for_a_hang() -> None:
    server = ScriptedServer([Hang(seconds=30)]).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("POST", "/v1/chat/completions", "{}")
    time.sleep(0.1)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(http.client.RemoteDisconnected):
        connection.getresponse()


def test_json_script_items() -> None:
    assert item_from_json({"reply": {"text": "hi", "tool_calls": [{"name": "bash", "arguments": {"command": "ls"}}]}}) \
        == Reply(text="hi", tool_calls=(ScriptedCall("bash", '{"command": "ls"}'),))
    assert item_from_json({"error": {"status": 500}}) == HttpError(500)
    assert item_from_json({"drop": {}}) == Drop()
    assert item_from_json({"hang": {"seconds": 2}}) == Hang(2)
    with pytest.raises(ValueError, match="unknown script item 'explode'"):
        item_from_json({"explode": {}})
    with pytest.raises(ValueError, match="exactly one key"):
        item_from_json({"reply": {}, "drop": {}})


def test_runs_as_a_standalone_process(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"error": {"status": 503}}, {"reply": {"text": "from a process"}}]))
    assert len(load_script(script)) == 2
    port_file, requests_file = tmp_path / "port", tmp_path / "requests.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "tests.kcode.openai_server", "--script", str(script),
                                "--port-file", str(port_file), "--requests-file", str(requests_file)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port_file.read_text()}/v1", api_key="k", max_retries=1)
        completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content == "from a process"
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    recorded = [json.loads(line) for line in requests_file.read_text().splitlines()]
    assert len(recorded) == 2 and recorded[1]["body"]["messages"] == [{"role": "user", "content": "hi"}]
