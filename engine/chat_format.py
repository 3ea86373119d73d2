"""OpenAI-format messages and tools rendered into the Kimi-K2-Instruct-0905 prompt, as text or token ids.

Byte-level layout (DESIGN.md §2; checked by rendering the HF Kimi-K2-Instruct-0905 `chat_template.jinja`
with jinja2 the way transformers' `chat_template_utils` does: `trim_blocks`, `lstrip_blocks`, its own
`tojson`; llama.cpp's `models/templates/moonshotai-Kimi-K2.jinja` is the older 0711 template, whose
default system prompt and tool turns differ):

- tools, when given, come first: `<|im_system|>tool_declare<|im_middle|>` + "\\n  # Tools\\n  " +
  json.dumps(tools) + `<|im_end|>` (default separators, key order kept, non-ASCII kept: transformers'
  `tojson` filter is `json.dumps(ensure_ascii=False)`);
- if the first message is not a system message, `You are Kimi, an AI assistant created by Moonshot AI.`
  is inserted as one;
- each message is `<|im_{user|assistant|system}|>{name or role}<|im_middle|>{body}<|im_end|>`; tool
  results use `<|im_system|>` with `{name or "tool"}` and the body `## Return of {id}\\n    {content}`, where
  a content of None is printed `None` (the template writes `{{ message['content'] }}`, which jinja renders
  so) and a missing content prints nothing; elsewhere None content is empty;
- an assistant message with calls renders its text (if any), then `<|tool_calls_section_begin|>`, each
  call as `<|tool_call_begin|>{id}<|tool_call_argument_begin|>{arguments}<|tool_call_end|>`, then
  `<|tool_calls_section_end|>`;
- with a generation prompt, `<|im_assistant|>assistant<|im_middle|>` follows; without one the last
  message is left open (no `<|im_end|>`) so the model continues it, as the template does.

Two deliberate differences: call ids are renumbered (see `normalize_call_ids`), and content given as a list
of text parts is joined everywhere (the template prints the list's repr in tool and tool-call turns).

Token ids: markers become their special ids and each run of text between markers goes through
`Tokenizer.encode`, so marker text inside a message stays ordinary bytes. For benign text the ids equal
`encode_with_specials(render_text(...))`, which is what transformers produces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ChatFormatError
from engine.tokenizer import (
    IM_ASSISTANT,
    IM_END,
    IM_MIDDLE,
    IM_SYSTEM,
    IM_USER,
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALLS_SECTION_BEGIN,
    TOOL_CALLS_SECTION_END,
    Tokenizer,
)

DEFAULT_SYSTEM_PROMPT = "You are Kimi, an AI assistant created by Moonshot AI."
TOOLS_HEADER = "\n  # Tools\n  "
TOOL_RESULT_SEPARATOR = "\n    "

_ROLE_MARKERS = {"system": IM_SYSTEM, "user": IM_USER, "assistant": IM_ASSISTANT, "tool": IM_SYSTEM}

Message = Mapping[str, Any]


@dataclass(frozen=True)
class _Piece:
    text: str
    special: bool


def _marker(name: str) -> _Piece:
    return _Piece(name, special=True)


def _text(text: str) -> _Piece:
    return _Piece(text, special=False)


def k2_call_id(name: str, index: int) -> str:
    """K2's call id: the function name and a counter over every call in the conversation."""
    return f"functions.{name}:{index}"


def normalize_call_ids(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Copies of the messages with every call id in K2's form and each tool result pointing at its call.

    Every call is renumbered `functions.{name}:{n}`, n counting calls across the conversation: ids from
    another provider (`call_abc123`) take K2's form, ids are unique, and a history K2 produced itself comes
    out unchanged. A tool result takes the new id of the call that had its `tool_call_id` (the latest such
    call, in order when a turn repeats an id); an id that no call had is left as it is.
    """
    counter = 0
    new_ids: dict[str, list[str]] = {}
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatFormatError(f"message {index}: expected an object, got {type(message).__name__}")
        copy = dict(message)
        if message.get("role") == "assistant" and message.get("tool_calls"):
            turn: dict[str, list[str]] = {}
            calls = []
            for call in _tool_calls(index, message):
                new_id = k2_call_id(call["function"]["name"], counter)
                counter += 1
                if isinstance(call.get("id"), str) and call["id"]:
                    turn.setdefault(call["id"], []).append(new_id)
                calls.append({**call, "id": new_id})
            new_ids.update(turn)
            copy["tool_calls"] = calls
        elif message.get("role") == "tool":
            original = _tool_call_id(index, message)
            pending = new_ids.get(original)
            copy["tool_call_id"] = pending.pop(0) if pending else original
        out.append(copy)
    return out


def render_text(
    messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None, *, add_generation_prompt: bool = True
) -> str:
    """The prompt as a string, markers written out (for logs, tests and text-completion endpoints)."""
    return "".join(p.text for p in _pieces(messages, tools, add_generation_prompt))


def render_ids(
    tokenizer: Tokenizer,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
) -> list[int]:
    """The prompt as token ids: markers as special ids, all message text encoded as ordinary text."""
    ids: list[int] = []
    run: list[str] = []
    for piece in _pieces(messages, tools, add_generation_prompt):
        if piece.special:
            ids.extend(tokenizer.encode("".join(run)))
            run = []
            ids.append(tokenizer.special_id(piece.text))
        else:
            run.append(piece.text)
    ids.extend(tokenizer.encode("".join(run)))
    return ids


def _pieces(
    messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None, add_generation_prompt: bool
) -> list[_Piece]:
    normalized = normalize_call_ids(messages)
    out: list[_Piece] = []
    if tools:
        out += [_marker(IM_SYSTEM), _text("tool_declare"), _marker(IM_MIDDLE), _text(_declaration(tools))]
        out.append(_marker(IM_END))
    if normalized and normalized[0].get("role") != "system":
        out += [_marker(IM_SYSTEM), _text("system"), _marker(IM_MIDDLE), _text(DEFAULT_SYSTEM_PROMPT)]
        out.append(_marker(IM_END))
    for index, message in enumerate(normalized):
        out += _message_pieces(index, message)
        if add_generation_prompt or index < len(normalized) - 1:
            out.append(_marker(IM_END))
    if add_generation_prompt:
        out += [_marker(IM_ASSISTANT), _text("assistant"), _marker(IM_MIDDLE)]
    return out


def _declaration(tools: Sequence[Mapping[str, Any]]) -> str:
    if isinstance(tools, (str, bytes)) or not all(isinstance(tool, Mapping) for tool in tools):
        raise ChatFormatError("tools must be a list of objects")
    try:
        return TOOLS_HEADER + json.dumps(list(tools), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ChatFormatError(f"tools cannot be written as JSON: {exc}") from None


def _message_pieces(index: int, message: Message) -> list[_Piece]:
    """One message, ids already normalised, without its closing `<|im_end|>`."""
    role = message.get("role")
    if role not in _ROLE_MARKERS:
        raise ChatFormatError(f"message {index}: role {role!r} is not one of {sorted(_ROLE_MARKERS)}")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise ChatFormatError(f"message {index}: name must be a string, got {type(name).__name__}")
    out = [_marker(_ROLE_MARKERS[role]), _text(name or role), _marker(IM_MIDDLE)]
    content = _content_text(index, message.get("content"))
    if role == "tool":
        if "content" in message and message["content"] is None:
            content = "None"  # the template's `{{ message['content'] }}`; a missing content renders nothing
        out.append(_text(f"## Return of {message['tool_call_id']}{TOOL_RESULT_SEPARATOR}{content}"))
    elif role == "assistant" and message.get("tool_calls"):
        out += [_text(content), _marker(TOOL_CALLS_SECTION_BEGIN)]
        for call in message["tool_calls"]:
            out += [_marker(TOOL_CALL_BEGIN), _text(call["id"]), _marker(TOOL_CALL_ARGUMENT_BEGIN)]
            out += [_text(_arguments_text(call["function"].get("arguments", ""))), _marker(TOOL_CALL_END)]
        out.append(_marker(TOOL_CALLS_SECTION_END))
    else:
        out.append(_text(content))
    return out


def _arguments_text(arguments: Any) -> str:
    """Arguments as the model saw them: a string verbatim, anything else as the template's `tojson`."""
    if isinstance(arguments, str):
        return arguments
    try:
        return json.dumps(arguments, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ChatFormatError(f"tool call arguments cannot be written as JSON: {exc}") from None


def _content_text(index: int, content: Any) -> str:
    """Message content as one string: None is empty; a list of text parts is joined without separators."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ChatFormatError(f"message {index}: content must be a string or a list of parts")
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise ChatFormatError(f"message {index}: content part of type {kind!r} is not supported, only 'text'")
        texts.append(part["text"])
    return "".join(texts)


def _tool_call_id(index: int, message: Message) -> str:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise ChatFormatError(f"message {index}: a tool result needs a tool_call_id, got {call_id!r}")
    return call_id


def _tool_calls(index: int, message: Message) -> list[Mapping[str, Any]]:
    """The calls of an assistant message, each checked to have a function name."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        raise ChatFormatError(f"message {index}: tool_calls must be a list, got {type(calls).__name__}")
    for n, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ChatFormatError(f"message {index}: tool call {n} needs a function name, got {name!r}")
    return calls
