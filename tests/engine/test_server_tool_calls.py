"""Tool calls over HTTP: the real server and engine, with the model's tokens scripted inside the engine (a
random tiny model writes no calls of its own, and nothing in an HTTP body can script tokens), read back with
the official `openai` client, streamed and whole; a bare call header is recovered from the request's tools."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import openai
import pytest

from engine import LLM, SamplingParams, make_tiny
from engine.server import create_app
from engine.service import EngineService, Submission
from tests.engine.test_llm import _ids, forcing
from tests.engine.test_server import running

TOOLS: Any = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
USER: Any = [{"role": "user", "content": "Read a.py"}]


class ScriptedService(EngineService):
    """The engine service whose model writes `script` (marker names become their special ids)."""

    script: Sequence[str] = ()

    def chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
             params: SamplingParams) -> Submission:
        ids = _ids(self.llm.tokenizer, *self.script)
        return super().chat(messages, tools, replace(params, logits_processors=[forcing(ids)]))


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScriptedService, openai.OpenAI]]:
    root = make_tiny(tmp_path_factory.mktemp("serve") / "k2-tiny", dtype="fp32", seed=1)
    service = ScriptedService(LLM(root, dtype="float32", max_model_len=2048), model_name="k2-tiny")
    with running(create_app(service)) as url:
        yield service, openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def _call_script(header: str) -> list[str]:
    return ["Let me look.", "<|tool_calls_section_begin|>", "<|tool_call_begin|>", header,
            "<|tool_call_argument_begin|>", '{"path": "a.py"}', "<|tool_call_end|>",
            "<|tool_calls_section_end|>", "<|im_end|>"]


@pytest.mark.parametrize(("header", "call_id"), [("functions.read_file:0", "functions.read_file:0"),
                                                 ("call_3", "functions.read_file:3")])
def test_a_generated_call_reaches_the_client_as_tool_calls(
    scripted: tuple[ScriptedService, openai.OpenAI], header: str, call_id: str
) -> None:
    service, client = scripted
    service.script = _call_script(header)
    whole = client.chat.completions.create(model="k2-tiny", messages=USER, tools=TOOLS, max_tokens=64)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (call_id, "read_file", '{"path": "a.py"}')

    stream = client.chat.completions.create(model="k2-tiny", messages=USER, tools=TOOLS, max_tokens=64, stream=True)
    content, arguments, ids, reasons = "", "", [], []
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            ids += [piece.id] if piece.id else []
            arguments += piece.function.arguments or "" if piece.function else ""
        reasons += [chunk.choices[0].finish_reason] if chunk.choices[0].finish_reason else []
    assert (content, ids, arguments, reasons) == ("Let me look.", [call_id], '{"path": "a.py"}', ["tool_calls"])
