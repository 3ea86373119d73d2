"""OpenAI request bodies checked and turned into what the engine takes, and OpenAI's error body for the rest.

`kcode serve` answers clients written for the OpenAI API, so a bad request gets the error OpenAI would give:
status 400 (404 for an unknown model) and `{"error": {"message", "type", "param", "code"}}`, the message
naming the field, the value and what is allowed. Fields we cannot honour (n > 1, logprobs, penalties, forced
tool choice) are refused rather than silently ignored, so a client never gets an answer to a question it did
not ask; fields with no effect on the answer (`user`, `metadata`, `parallel_tool_calls`) and unknown fields
are ignored, as vLLM does. Messages and tools are checked by the chat template when the request is rendered.

Sampling fields follow vLLM's OpenAI server, extensions included (`top_k`, `seed`, `stop_token_ids`,
`ignore_eos`, `skip_special_tokens`). Without `max_tokens` a chat answer may fill the rest of the context,
as OpenAI's does, and a completion stops after 16 tokens, OpenAI's default for that endpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError
from engine.sampling import SamplingParams

COMPLETION_DEFAULT_MAX_TOKENS = 16
MAX_TEMPERATURE = 2.0
"""OpenAI's upper bound; the engine itself would take any finite temperature."""


class OpenAIRequestError(EngineError):
    """A request the server refuses; carries the HTTP status and OpenAI's `param` and `code` for the body."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status

    def body(self) -> dict[str, Any]:
        return error_body(str(self), param=self.param, code=self.code)


def error_body(message: str, *, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's error object: `kind` is its `type` (invalid_request_error, authentication_error, ...)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class ChatRequest:
    """A `POST /v1/chat/completions` body, checked."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    """None when the request has none or turned them off with `tool_choice: "none"`."""
    params: SamplingParams
    stream: bool
    include_usage: bool
    """`stream_options.include_usage`: end the stream with a usage chunk."""


@dataclass(frozen=True)
class CompletionRequest:
    """A `POST /v1/completions` body, checked: one prompt, as text or token ids."""

    prompt: str | list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 400 naming what was wrong with it."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OpenAIRequestError(
            f"could not parse the JSON body of the request ({exc}); send a JSON object with "
            "Content-Type: application/json", code="invalid_json") from None
    if not isinstance(body, dict):
        raise OpenAIRequestError(f"the request body must be a JSON object, got {_json_type(body)}",
                                 code="invalid_json")
    return body


def parse_chat_request(body: Mapping[str, Any], *, model_name: str, max_model_len: int) -> ChatRequest:
    """A chat body for the model served as `model_name`; `max_model_len` is the default for `max_tokens`."""
    _check_model(body, model_name)
    messages = _required(body, "messages", list, "an array")
    if not messages:
        raise OpenAIRequestError("'messages' must hold at least one message", param="messages", code="invalid_value")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise OpenAIRequestError(f"messages[{index}] must be an object, got {_json_type(message)}",
                                     param=f"messages[{index}]", code="invalid_type")
    tools = _optional(body, "tools", list, "an array")
    tool_choice = body.get("tool_choice")
    if tool_choice not in (None, "auto", "none"):
        raise OpenAIRequestError(f"tool_choice {tool_choice!r} is not supported: use 'auto' (the model decides) "
                                 "or 'none'", param="tool_choice", code="unsupported_value")
    stream, include_usage = _stream_fields(body)
    return ChatRequest(
        messages=[_with_system_role(m) for m in messages],
        tools=tools if tools and tool_choice != "none" else None,
        params=_sampling_params(body, max_model_len),
        stream=stream,
        include_usage=include_usage,
    )


def parse_completion_request(body: Mapping[str, Any], *, model_name: str) -> CompletionRequest:
    """A completions body for the model served as `model_name`."""
    _check_model(body, model_name)
    if "prompt" not in body:
        raise OpenAIRequestError("missing required parameter: 'prompt'", param="prompt",
                                 code="missing_required_parameter")
    for name, allowed in (("echo", False), ("suffix", None), ("best_of", 1)):
        if body.get(name) not in (None, allowed):
            raise OpenAIRequestError(f"{name}={body[name]!r} is not supported", param=name,
                                     code="unsupported_parameter")
    stream, include_usage = _stream_fields(body)
    return CompletionRequest(_one_prompt(body["prompt"]), _sampling_params(body, COMPLETION_DEFAULT_MAX_TOKENS),
                             stream, include_usage)


# ---- fields -----------------------------------------------------------------------------------------------


def _check_model(body: Mapping[str, Any], model_name: str) -> None:
    model = _required(body, "model", str, "a string")
    if model != model_name:
        raise OpenAIRequestError(f"the model '{model}' does not exist; this server serves '{model_name}'",
                                 param="model", code="model_not_found", status=404)


def _stream_fields(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = bool(_optional(body, "stream", bool, "true or false"))
    options = _optional(body, "stream_options", dict, "an object")
    if options is not None and not stream:
        raise OpenAIRequestError("stream_options is only allowed when stream is true", param="stream_options",
                                 code="invalid_value")
    include_usage = (options or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise OpenAIRequestError(f"stream_options.include_usage must be true or false, got {include_usage!r}",
                                 param="stream_options.include_usage", code="invalid_type")
    return stream, include_usage


def _sampling_params(body: Mapping[str, Any], default_max_tokens: int) -> SamplingParams:
    _refuse_unsupported(body)
    temperature = _number(body, "temperature", 1.0, 0.0, MAX_TEMPERATURE)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise OpenAIRequestError("top_p must be in (0, 1], got 0", param="top_p", code="invalid_value")
    top_k = _optional(body, "top_k", int, "an integer") or 0
    if top_k < -1:
        raise OpenAIRequestError(f"top_k must be -1 or 0 (off) or a positive integer, got {top_k}", param="top_k",
                                 code="invalid_value")
    max_tokens = _max_tokens(body, default_max_tokens)
    seed = _optional(body, "seed", int, "an integer")
    if seed is not None and seed < 0:
        raise OpenAIRequestError(f"seed must be >= 0, got {seed}", param="seed", code="invalid_value")
    return SamplingParams(
        temperature=temperature, top_p=top_p, top_k=max(top_k, 0), seed=seed, max_tokens=max_tokens,
        stop=_stops(body.get("stop")), stop_token_ids=_token_ids(body, "stop_token_ids"),
        ignore_eos=bool(_optional(body, "ignore_eos", bool, "true or false")),
        skip_special_tokens=_optional(body, "skip_special_tokens", bool, "true or false") is not False,
    )


def _max_tokens(body: Mapping[str, Any], default: int) -> int:
    """`max_completion_tokens` (OpenAI's newer name) or `max_tokens`; the engine cuts it to what the context
    leaves after the prompt."""
    for name in ("max_completion_tokens", "max_tokens"):
        limit = _optional(body, name, int, "an integer")
        if limit is not None:
            if limit < 1:
                raise OpenAIRequestError(f"{name} must be at least 1, got {limit}", param=name, code="invalid_value")
            return int(limit)
    return default


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """Fields whose non-default values would change the answer in ways this engine does not implement."""
    n = body.get("n")
    if n not in (None, 1):
        raise OpenAIRequestError(f"n must be 1 (one choice per request), got {n!r}", param="n",
                                 code="unsupported_value")
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0:
            raise OpenAIRequestError(f"{name} is not supported; leave it at 0", param=name,
                                     code="unsupported_parameter")
    neutral: dict[str, tuple[Any, ...]] = {"logprobs": (None, False, 0), "top_logprobs": (None, 0),
                                           "logit_bias": (None, {}), "repetition_penalty": (None, 1, 1.0)}
    for name, allowed in neutral.items():
        if body.get(name, None) not in allowed:
            raise OpenAIRequestError(f"{name}={body[name]!r} is not supported", param=name,
                                     code="unsupported_parameter")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise OpenAIRequestError(f"response_format {response_format!r} is not supported; only plain text",
                                 param="response_format", code="unsupported_value")


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OpenAIRequestError(f"{name} must be a number, got {value!r}", param=name, code="invalid_type")
    if not low <= value <= high:
        raise OpenAIRequestError(f"{name} must be between {low:g} and {high:g}, got {value!r}", param=name,
                                 code="invalid_value")
    return float(value)


def _stops(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise OpenAIRequestError(f"stop must be a non-empty string or an array of them, got {stop!r}", param="stop",
                                 code="invalid_type")
    return tuple(stops)


def _token_ids(body: Mapping[str, Any], name: str) -> list[int]:
    ids = _optional(body, name, list, "an array of token ids") or []
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise OpenAIRequestError(f"{name} must hold integers >= 0, got {ids!r}", param=name, code="invalid_type")
    return ids


def _one_prompt(prompt: object) -> str | list[int]:
    """Text or token ids; a batch of one is unwrapped, a larger batch refused (one prompt per request)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str | list) for p in prompt):
        raise OpenAIRequestError(f"send one prompt per request; got a batch of {len(prompt)}", param="prompt",
                                 code="unsupported_value")
    raise OpenAIRequestError(f"prompt must be a string or an array of token ids, got {_json_type(prompt)}",
                             param="prompt", code="invalid_type")


def _with_system_role(message: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's newer `developer` role is the template's `system`."""
    return {**message, "role": "system"} if message.get("role") == "developer" else message


def _required(body: Mapping[str, Any], name: str, kind: type, described: str) -> Any:
    if body.get(name) is None:
        raise OpenAIRequestError(f"missing required parameter: '{name}'", param=name,
                                 code="missing_required_parameter")
    return _optional(body, name, kind, described)


def _optional(body: Mapping[str, Any], name: str, kind: type, described: str) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise OpenAIRequestError(f"{name} must be {described}, got {_json_type(value)} {value!r}", param=name,
                                 code="invalid_type")
    return value


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
