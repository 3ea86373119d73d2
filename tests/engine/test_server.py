"""`engine.server` over HTTP: a real uvicorn on 127.0.0.1, a real `EngineService` over a tiny checkpoint, and
the official `openai` client (raw HTTP where the wire format itself is the point).

A random tiny model writes gibberish, and over HTTP nothing can script its tokens, so answers are checked for
shape and for agreement between paths (streamed and whole, text and token-id prompts), not for content.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import uvicorn

from engine import LLM, SamplingParams, make_tiny
from engine.server import bind, create_app
from engine.service import EngineMetrics, EngineService

MODEL = "k2-tiny"
KEY = "test-key"
MAX_MODEL_LEN = 2048
USER: Any = [{"role": "user", "content": "List the files, please."}]
TOOLS: Any = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.",
                                           "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                          "required": ["path"]}}}]
ERROR_KEYS = {"message", "type", "param", "code"}


@dataclass(frozen=True)
class Served:
    url: str
    service: EngineService

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.url}{path}", content=content, headers=_auth(), **kw)


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = make_tiny(tmp_path_factory.mktemp("serve") / "k2-tiny", dtype="fp32", seed=1)
    service = EngineService(LLM(root, dtype="float32", max_model_len=MAX_MODEL_LEN), model_name=MODEL)
    with running(create_app(service, api_key=KEY, shutdown_timeout_s=5)) as url:
        yield Served(url, service)


@pytest.fixture(autouse=True)
def _idle_engine(served: Served) -> Iterator[None]:
    yield
    wait_until(lambda: served.service.metrics().running == 0, timeout_s=30)


class running:
    """uvicorn serving `app` on a free port in a thread, as a context manager yielding the base URL."""

    def __init__(self, app: Any) -> None:
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout_s=30)
        return self.url

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def wait_until(ready: Callable[[], bool], *, timeout_s: float) -> float:
    """Seconds it took `ready` to hold; fails the test after `timeout_s`."""
    start = time.monotonic()
    while not ready():
        assert time.monotonic() - start < timeout_s, "timed out waiting"
        time.sleep(0.02)
    return time.monotonic() - start


def sse_events(response: httpx.Response) -> list[Any]:
    """The `data:` payloads of a server-sent event stream, JSON-decoded, `[DONE]` kept as the string."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def well_formed_error(response: httpx.Response, status: int, param: str | None, code: str | None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    return str(error["message"])


# ---- models, health, metrics, auth -------------------------------------------------------------------------


def test_models_health_metrics_and_the_api_key(served: Served) -> None:
    client = served.client()
    listed = client.models.list().data
    assert [m.id for m in listed] == [MODEL] and listed[0].owned_by == "kcode"
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    assert httpx.get(f"{served.url}/health").status_code == 200  # probes need no key
    metrics = httpx.get(f"{served.url}/metrics", headers=_auth())
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert f'kcode_engine_num_requests_running{{model_name="{MODEL}"}} 0' in metrics.text
    for headers in ({}, _auth("wrong"), {"Authorization": KEY}):
        for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/chat/completions"),
                             ("POST", "/v1/completions")):
            response = httpx.request(method, f"{served.url}{path}", headers=headers, content=b"{}")
            assert well_formed_error(response, 401, None, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        served.client("wrong").chat.completions.create(model=MODEL, messages=USER)


# ---- chat ---------------------------------------------------------------------------------------------------


def test_chat_streamed_and_whole_answers_agree_and_usage_comes_when_asked(served: Served) -> None:
    client = served.client()
    ask: dict[str, Any] = {"model": MODEL, "messages": USER, "temperature": 0, "max_tokens": 12,
                           "extra_body": {"ignore_eos": True}}
    whole = client.chat.completions.create(**ask)
    choice = whole.choices[0]
    assert whole.object == "chat.completion" and whole.model == MODEL and whole.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length" and whole.usage is not None
    assert whole.usage.completion_tokens == 12 and whole.usage.total_tokens == whole.usage.prompt_tokens + 12

    chunks = list(client.chat.completions.create(**ask, stream=True))
    assert all(c.choices for c in chunks), "no usage chunk unless stream_options.include_usage"
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content

    with httpx.stream("POST", f"{served.url}/v1/chat/completions", headers=_auth(), timeout=60,
                      json={**{k: v for k, v in ask.items() if k != "extra_body"}, "ignore_eos": True,
                            "stream": True, "stream_options": {"include_usage": True}}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    *answer, usage = events[:-1]
    assert usage["choices"] == [] and usage["usage"] == whole.usage.model_dump(exclude_none=True)
    assert all(e["usage"] is None and len(e["choices"]) == 1 for e in answer)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in answer) == choice.message.content


def test_chat_with_tools_is_well_formed_whatever_the_model_writes(served: Served) -> None:
    client = served.client()
    history: Any = [*USER, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "functions.read_file:0", "type": "function",
         "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]},
        {"role": "tool", "tool_call_id": "functions.read_file:0", "content": "print('hi')"}]
    for seed in range(3):
        ask: dict[str, Any] = {"model": MODEL, "messages": history, "tools": TOOLS, "tool_choice": "auto",
                               "temperature": 1.0, "seed": seed, "max_tokens": 24}
        whole = client.chat.completions.create(**ask)
        calls, finish = whole.choices[0].message.tool_calls or [], whole.choices[0].finish_reason
        assert finish == "length" or (finish == "tool_calls") == bool(calls)
        for call in calls:
            assert call.type == "function" and call.id and call.function.name
            assert isinstance(call.function.arguments, str)
        streamed = list(client.chat.completions.create(**ask, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in streamed)
        assert text == (whole.choices[0].message.content or "")
        assert streamed[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    refused = client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS,
                                             tool_choice="none", max_tokens=4)
    assert refused.choices[0].message.role == "assistant"


# ---- completions -------------------------------------------------------------------------------------------


def test_completions_text_and_token_prompts_streamed_and_whole(served: Served) -> None:
    client = served.client()
    ask: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_tokens": 10, "extra_body": {"ignore_eos": True}}
    whole = client.completions.create(prompt="def add(a, b):", **ask)
    assert whole.object == "text_completion" and whole.model == MODEL
    assert whole.choices[0].finish_reason == "length" and whole.usage is not None
    assert whole.usage.completion_tokens == 10
    streamed = list(client.completions.create(prompt="def add(a, b):", stream=True, **ask))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "length"
    ids = served.service.llm.tokenizer.encode("def add(a, b):")
    by_ids = client.completions.create(prompt=ids, **ask)
    assert by_ids.choices[0].text == whole.choices[0].text
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(ids)
    default = client.completions.create(model=MODEL, prompt="x", extra_body={"ignore_eos": True})
    assert default.usage is not None and default.usage.completion_tokens == 16  # OpenAI's default for completions


# ---- errors ------------------------------------------------------------------------------------------------


def test_bad_requests_get_openai_errors(served: Served) -> None:
    chat = {"model": MODEL, "messages": USER}
    assert "could not parse the JSON body" in well_formed_error(
        served.post("/v1/chat/completions", b'{"model": '), 400, None, "invalid_json")
    assert "'gpt-4o' does not exist" in well_formed_error(
        served.post("/v1/chat/completions", {**chat, "model": "gpt-4o"}), 404, "model", "model_not_found")
    well_formed_error(served.post("/v1/chat/completions", {**chat, "temperature": "hot"}), 400, "temperature",
                      "invalid_type")
    well_formed_error(served.post("/v1/chat/completions", {**chat, "top_p": 7}), 400, "top_p", "invalid_value")
    well_formed_error(served.post("/v1/chat/completions", {**chat, "n": 3}), 400, "n", "unsupported_value")
    well_formed_error(served.post("/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}), 400, "prompt",
                      "unsupported_value")
    bad_role = served.post("/v1/chat/completions", {**chat, "messages": [{"role": "wizard", "content": "x"}]})
    assert "role 'wizard'" in well_formed_error(bad_role, 400, "messages", None)
    long_text = "word " * (MAX_MODEL_LEN + 100)
    too_long = served.post("/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": long_text}]})
    assert str(MAX_MODEL_LEN) in well_formed_error(too_long, 400, "messages", "context_length_exceeded")
    well_formed_error(served.post("/v1/completions", {"model": MODEL, "prompt": long_text}), 400, "prompt",
                      "context_length_exceeded")
    assert "token ids are integers" in well_formed_error(
        served.post("/v1/completions", {"model": MODEL, "prompt": [5, 10**9]}), 400, "prompt", None)
    assert "no route" in well_formed_error(httpx.get(f"{served.url}/v1/nowhere", headers=_auth()), 404, None, None)
    well_formed_error(httpx.get(f"{served.url}/v1/chat/completions", headers=_auth()), 405, None, None)
    with pytest.raises(openai.BadRequestError, match="max_tokens must be at least 1"):
        served.client().chat.completions.create(model=MODEL, messages=USER, max_tokens=0)
    assert served.service.metrics().running == 0


# ---- disconnects -------------------------------------------------------------------------------------------


def _generated(served: Served) -> int:
    return served.service.metrics().generation_tokens_total


def test_a_client_that_disconnects_frees_its_sequence_at_once(served: Served) -> None:
    """Each request would run ~1,500 tokens (seconds on CPU); the client leaves after a few and the engine
    drops the sequence within a step or two, streaming or not."""
    long = {"model": MODEL, "messages": USER, "max_tokens": 1500, "ignore_eos": True, "temperature": 0}
    before = _generated(served)
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", headers=_auth(), timeout=60,
                      json={**long, "stream": True}) as response:
        lines = response.iter_lines()
        while not next(lines).startswith('data: {"id"') or _generated(served) == before:
            pass
    freed_in_s = wait_until(lambda: served.service.metrics().running == 0, timeout_s=5)
    assert freed_in_s < 2 and _generated(served) - before < 500

    before = _generated(served)
    with pytest.raises(httpx.ReadTimeout):
        served.post("/v1/chat/completions", long, timeout=httpx.Timeout(60, read=0.5))
    freed_in_s = wait_until(lambda: served.service.metrics().running == 0, timeout_s=5)
    assert freed_in_s < 2 and _generated(served) - before < 500
    metrics: EngineMetrics = served.service.metrics()
    assert metrics.running == 0 and metrics.waiting == 0
    again = served.client().chat.completions.create(model=MODEL, messages=USER, max_tokens=3)
    assert again.usage is not None and again.usage.completion_tokens <= 3


def test_the_app_shuts_its_service_down_with_the_server(tmp_path: Path) -> None:
    root = make_tiny(tmp_path / "k2-tiny", dtype="fp32", seed=1)
    service = EngineService(LLM(root, dtype="float32", max_model_len=256), model_name=MODEL)
    with running(create_app(service)) as url:
        answer = openai.OpenAI(base_url=f"{url}/v1", api_key="none").completions.create(model=MODEL, prompt="x",
                                                                                        max_tokens=2)
        assert answer.choices[0].text is not None  # no --api-key: no key needed
    with pytest.raises(RuntimeError, match="shutting down"):
        service.complete("x", SamplingParams(max_tokens=1))


def test_the_readme_client_example_runs_against_the_server(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Serving the engine"):]
    example = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index(
        "```python"))]
    assert 'base_url="http://127.0.0.1:8000/v1"' in example and 'model="k2"' in example
    exec(example.replace("http://127.0.0.1:8000/v1", f"{served.url}/v1").replace("my-key", KEY)
         .replace('model="k2"', f'model="{MODEL}"'), {})
    assert capsys.readouterr().out.endswith("\n")  # it printed the reply (the random model may say nothing)


def test_32_concurrent_streams_each_get_the_answer_they_get_alone(served: Served) -> None:
    prompts = [f"Question {i}: what is {i} + {i}?" for i in range(32)]

    def ask(prompt: str) -> str:
        stream = served.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=16, stream=True,
            extra_body={"ignore_eos": True})
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    alone = [ask(p) for p in prompts]
    results: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ask(prompts[i]))) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[i] for i in range(32)] == alone
