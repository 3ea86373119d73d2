"""`engine.openai_protocol`: OpenAI request bodies to engine inputs, and the 4xx each bad field gets.

Pure functions, so every case runs in microseconds; `test_server.py` checks that the same errors reach a
client over HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.metrics_text import prometheus_text
from engine.openai_protocol import (
    COMPLETION_DEFAULT_MAX_TOKENS,
    OpenAIRequestError,
    parse_chat_request,
    parse_completion_request,
    parse_json_object,
)
from engine.sampling import SamplingParams

MODEL = "k2-tiny"
USER = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]


def chat(**fields: Any) -> Any:
    return parse_chat_request({"model": MODEL, "messages": USER, **fields}, model_name=MODEL, max_model_len=4096)


def refused(parse: Any, **fields: Any) -> OpenAIRequestError:
    with pytest.raises(OpenAIRequestError) as caught:
        parse(**fields)
    return caught.value


def test_a_full_chat_body_becomes_messages_tools_and_sampling_params() -> None:
    request = chat(tools=TOOLS, tool_choice="auto", temperature=0, top_p=0.5, top_k=7, max_tokens=20, seed=3,
                   stop=["\n\n"], stop_token_ids=[5], ignore_eos=True, stream=True,
                   stream_options={"include_usage": True}, user="me", parallel_tool_calls=False, n=1,
                   frequency_penalty=0, logprobs=False, response_format={"type": "text"}, unknown_field=1)
    assert request.messages == USER and request.tools == TOOLS and request.stream and request.include_usage
    assert request.params == SamplingParams(temperature=0, top_p=0.5, top_k=7, max_tokens=20, seed=3,
                                            stop=("\n\n",), stop_token_ids=(5,), ignore_eos=True)


def test_chat_defaults_fill_the_context_and_tool_choice_none_hides_the_tools() -> None:
    request = chat()
    assert request.params == SamplingParams(max_tokens=4096) and not request.stream and not request.include_usage
    assert chat(tools=TOOLS, tool_choice="none").tools is None
    assert chat(max_completion_tokens=9).params.max_tokens == 9
    assert chat(top_k=-1).params.top_k == 0  # vLLM's "off"
    developer = parse_chat_request({"model": MODEL, "messages": [{"role": "developer", "content": "be brief"}]},
                                   model_name=MODEL, max_model_len=64)
    assert developer.messages == [{"role": "system", "content": "be brief"}]


@pytest.mark.parametrize(("fields", "param", "code", "words"), [
    ({"temperature": 2.5}, "temperature", "invalid_value", "between 0 and 2, got 2.5"),
    ({"temperature": "hot"}, "temperature", "invalid_type", "must be a number, got 'hot'"),
    ({"top_p": 0}, "top_p", "invalid_value", "(0, 1]"),
    ({"top_p": 1.5}, "top_p", "invalid_value", "between 0 and 1"),
    ({"top_k": -2}, "top_k", "invalid_value", "got -2"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value", "at least 1, got 0"),
    ({"max_tokens": "10"}, "max_tokens", "invalid_type", "must be an integer, got a string '10'"),
    ({"max_tokens": True}, "max_tokens", "invalid_type", "must be an integer, got a boolean"),
    ({"seed": -1}, "seed", "invalid_value", ">= 0"),
    ({"stop": ["a", 3]}, "stop", "invalid_type", "non-empty string"),
    ({"stop": ""}, "stop", "invalid_type", "non-empty string"),
    ({"stop_token_ids": [-1]}, "stop_token_ids", "invalid_type", "integers >= 0"),
    ({"n": 2}, "n", "unsupported_value", "n must be 1"),
    ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_parameter", "leave it at 0"),
    ({"frequency_penalty": 3}, "frequency_penalty", "invalid_value", "between -2 and 2"),
    ({"logprobs": True}, "logprobs", "unsupported_parameter", "not supported"),
    ({"logit_bias": {"5": 10}}, "logit_bias", "unsupported_parameter", "not supported"),
    ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_value", "only plain text"),
    ({"tool_choice": "required"}, "tool_choice", "unsupported_value", "'auto'"),
    ({"stream": "yes"}, "stream", "invalid_type", "true or false"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value", "only allowed when stream"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage", "invalid_type", ""),
    ({"messages": []}, "messages", "invalid_value", "at least one message"),
    ({"messages": "hi"}, "messages", "invalid_type", "must be an array, got a string"),
    ({"messages": ["hi"]}, "messages[0]", "invalid_type", "must be an object"),
    ({"messages": None}, "messages", "missing_required_parameter", "'messages'"),
    ({"tools": {"name": "x"}}, "tools", "invalid_type", "must be an array"),
    ({"model": None}, "model", "missing_required_parameter", "'model'"),
])
def test_each_bad_chat_field_is_refused_with_a_400_naming_it(fields: dict[str, Any], param: str, code: str,
                                                               words: str) -> None:
    error = refused(chat, **fields)
    assert (error.status, error.param, error.code) == (400, param, code)
    assert words in str(error)
    assert error.body() == {"error": {"message": str(error), "type": "invalid_request_error", "param": param,
                                      "code": code}}


def test_an_unknown_model_is_a_404_that_names_the_served_one() -> None:
    error = refused(chat, model="gpt-4o")
    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")
    assert "'gpt-4o' does not exist" in str(error) and f"'{MODEL}'" in str(error)


def test_completion_prompts_are_text_or_ids_one_at_a_time() -> None:
    def complete(**fields: Any) -> Any:
        return parse_completion_request({"model": MODEL, **fields}, model_name=MODEL)

    assert complete(prompt="def f():").prompt == "def f():"
    assert complete(prompt=["def f():"]).prompt == "def f():"
    assert complete(prompt=[1, 2, 3]).prompt == [1, 2, 3]
    assert complete(prompt=[[1, 2]]).prompt == [1, 2]
    request = complete(prompt="x", stream=True, stream_options={"include_usage": True}, max_tokens=5, echo=False)
    assert request.stream and request.include_usage and request.params.max_tokens == 5
    assert complete(prompt="x").params.max_tokens == COMPLETION_DEFAULT_MAX_TOKENS
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"prompt": ["a", "b"]}, "prompt", "unsupported_value"),
        ({"prompt": 5}, "prompt", "invalid_type"),
        ({"prompt": [1, "a"]}, "prompt", "invalid_type"),
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": "x", "echo": True}, "echo", "unsupported_parameter"),
        ({"prompt": "x", "best_of": 3}, "best_of", "unsupported_parameter"),
        ({"prompt": "x", "temperature": -1}, "temperature", "invalid_value"),
    ]
    for fields, param, code in cases:
        error = refused(complete, **fields)
        assert (error.status, error.param, error.code) == (400, param, code), fields


def test_only_a_json_object_is_a_body() -> None:
    assert parse_json_object(b'{"a": 1}') == {"a": 1}
    bodies = [(b"{not json", "could not parse the JSON body"), (b"[1, 2]", "must be a JSON object, got an array"),
              (b"\xff\xfe", "could not parse"), (b"", "could not parse")]
    for raw, words in bodies:
        error = refused(parse_json_object, raw=raw)
        assert error.status == 400 and error.code == "invalid_json" and words in str(error)


def test_metrics_render_as_prometheus_text_with_rates_derived() -> None:
    from engine.service import EngineMetrics

    metrics = EngineMetrics(running=2, waiting=1, cache_blocks_used=3, cache_blocks_total=12,
                            prefix_cache_queried_tokens=200, prefix_cache_hit_tokens=50, prompt_tokens_total=200,
                            generation_tokens_total=40, requests_finished_total=5, preemptions_total=1,
                            generation_tokens_per_s=12.5)
    text = prometheus_text(metrics, model_name='k2 "tiny"')
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    label = '{model_name="k2 \\"tiny\\""}'
    assert samples[f"kcode_engine_num_requests_running{label}"] == "2"
    assert samples[f"kcode_engine_num_requests_waiting{label}"] == "1"
    assert samples[f"kcode_engine_cache_usage_ratio{label}"] == "0.25"
    assert samples[f"kcode_engine_prefix_cache_hit_ratio{label}"] == "0.25"
    assert samples[f"kcode_engine_prefix_cache_hit_tokens_total{label}"] == "50"
    assert samples[f"kcode_engine_generation_tokens_per_second{label}"] == "12.5"
    assert samples[f"kcode_engine_preemptions_total{label}"] == "1"
    assert "# TYPE kcode_engine_generation_tokens_total counter" in text and text.endswith("\n")
    empty = prometheus_text(EngineMetrics(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0), model_name="m")
    assert 'kcode_engine_prefix_cache_hit_ratio{model_name="m"} 0.0' in empty
