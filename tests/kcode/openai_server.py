"""A scripted OpenAI-compatible chat server on 127.0.0.1: the peer every kcode end-to-end test talks to.

It is real HTTP (stdlib `ThreadingHTTPServer`, HTTP/1.1, chunked SSE), so the real `openai` SDK, or kcode
run as a subprocess, can talk to it. Each `POST /v1/chat/completions` consumes the next item of a script;
`GET /v1/models` always lists the served model ids. Every request is recorded (method, path, headers,
JSON body) so tests can assert what the client sent. When the script runs out, the server answers 500
with `x-should-retry: false` and a body saying so, so a test fails loudly instead of hanging.

Script items (Python dataclasses below; JSON form in brackets):

- `Reply` [`{"reply": {...}}`]: a completion, streamed in small pieces when the request has
  `"stream": true`, else one JSON body. Fields: `text`, `reasoning` (sent as `reasoning_content`),
  `tool_calls` (a list of `{"name", "arguments", "id"?}`; `arguments` is raw text, so malformed JSON is
  just a reply with bad arguments; in JSON a non-string `arguments` is dumped for you), `finish_reason`
  (default `tool_calls` when there are calls, else `stop`), `prompt_tokens`, `completion_tokens`,
  `cached_tokens`, `chunk_chars` (characters per piece, default 3), `chunk_delay_s` (pause before each
  chunk), `tool_call_style` (`pieces`: id and name in the first piece only, arguments split across
  chunks; `whole`: each call in one chunk; `id_every_chunk`: like `pieces` with the id repeated;
  `no_index`: like `whole` without the `index` field, as some OpenAI-compatible gateways send calls),
  `usage_style` (`openai`: a final `choices: []` chunk, only when the request asks for it with
  `stream_options.include_usage`; `moonshot`: usage inside the last choice, always; `none`),
  `drop_after_chunks` (close the connection mid-stream after that many chunks, without the end marker),
  `truncate_after_chunks` (end the stream properly, `[DONE]` and all, after that many chunks, as a
  broken proxy might: the client sees a clean end with no finish reason) and `error_after_chunks` (send
  an in-stream `{"error": {...}}` event after that many chunks, then end the stream).
- `HttpError` [`{"error": {"status": 429, "message": "...", "headers": {"Retry-After": "2"}}}`]:
  an OpenAI-style error body with that status and headers.
- `Drop` [`{"drop": {}}`]: read the request, then close the connection without answering.
- `Hang` [`{"hang": {"seconds": 5}}`]: read the request, wait, then close without answering.

Standalone: `python -m tests.kcode.openai_server --script FILE.json --port-file PATH [--requests-file
PATH]` serves the JSON list of items in FILE.json, writes the port to PATH once listening, appends each
request as a JSON line to the requests file, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

ToolCallStyle = Literal["pieces", "whole", "id_every_chunk", "no_index"]
UsageStyle = Literal["openai", "moonshot", "none"]
MODEL_IDS = ("scripted-model",)


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call the scripted model makes; `arguments` is sent verbatim, valid JSON or not."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One completion, streamed in pieces of `chunk_chars` characters (see the module docstring)."""

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ScriptedCall, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0
    chunk_chars: int = 3
    chunk_delay_s: float = 0.0
    tool_call_style: ToolCallStyle = "pieces"
    usage_style: UsageStyle = "openai"
    drop_after_chunks: int | None = None
    truncate_after_chunks: int | None = None
    error_after_chunks: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_chars < 1:
            raise ValueError(f"chunk_chars must be at least 1, got {self.chunk_chars}")


@dataclass(frozen=True)
class HttpError:
    """An error response with an OpenAI-style `{"error": {...}}` body."""

    status: int
    message: str = "scripted error"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drop:
    """Close the connection after reading the request, without any response."""


@dataclass(frozen=True)
class Hang:
    """Wait `seconds` after reading the request, then close without answering (for client timeouts)."""

    seconds: float


ScriptItem = Reply | HttpError | Drop | Hang


@dataclass
class RecordedRequest:
    """What the client sent. `disconnected` is set when the client went away while being answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    disconnected: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers, "body": self.body,
                "disconnected": self.disconnected.is_set()}


def item_from_json(data: Mapping[str, Any]) -> ScriptItem:
    """One script item from its JSON form, e.g. `{"reply": {"text": "hi"}}`."""
    if len(data) != 1:
        raise ValueError(f"a script item has exactly one key (reply, error, drop, hang), got {sorted(data)}")
    kind, spec = next(iter(data.items()))
    if kind == "reply":
        calls = tuple(_call_from_json(call) for call in spec.get("tool_calls", ()))
        return Reply(**{**spec, "tool_calls": calls})
    if kind == "error":
        return HttpError(**spec)
    if kind == "drop":
        return Drop()
    if kind == "hang":
        return Hang(**spec)
    raise ValueError(f"unknown script item {kind!r}; expected reply, error, drop or hang")


def load_script(path: Path) -> list[ScriptItem]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: a script is a JSON list of items, got {type(data).__name__}")
    return [item_from_json(item) for item in data]


def _call_from_json(spec: Mapping[str, Any]) -> ScriptedCall:
    arguments = spec.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return ScriptedCall(name=spec["name"], arguments=arguments, id=spec.get("id"))


class ScriptedServer:
    """The server; use as a context manager, or `start()`/`stop()`. `add()` appends to the script."""

    def __init__(self, script: Iterable[ScriptItem] = (), *, requests_file: Path | None = None) -> None:
        self._script: list[ScriptItem] = list(script)
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests_file = requests_file
        self._httpd = _HTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def add(self, *items: ScriptItem) -> None:
        with self._lock:
            self._script.extend(items)

    def start(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            if self._requests_file is not None:
                with self._requests_file.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(request.to_json()) + "\n")

    def _next_item(self) -> ScriptItem | None:
        with self._lock:
            return self._script.pop(0) if self._script else None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up is part of the tests; anything else is a server bug and is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_class(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        scripted = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    scripted: ScriptedServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the tests assert on recorded requests, not on a log."""

    def do_GET(self) -> None:
        self._recorded(None)
        if self.path.rstrip("/").endswith("/models"):
            models = [{"id": name, "object": "model", "created": 0, "owned_by": "kcode-tests"} for name in MODEL_IDS]
            self._send_json(200, {"object": "list", "data": models})
        else:
            self._send_json(404, _error_body(f"no route GET {self.path}", "not_found"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", errors="replace")
        request = self._recorded(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, _error_body(f"no route POST {self.path}", "not_found"))
            return
        item = self.scripted._next_item()
        if item is None:
            count = len(self.scripted.chat_requests)
            message = f"scripted server: the script ran out (request #{count} has no scripted response)"
            self._send_json(500, _error_body(message, "script_exhausted"), {"x-should-retry": "false"})
        else:
            self._answer(item, request)

    def _recorded(self, body: Any) -> RecordedRequest:
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(method=self.command, path=self.path, headers=headers, body=body)
        self.scripted._record(request)
        return request

    def _answer(self, item: ScriptItem, request: RecordedRequest) -> None:
        if isinstance(item, HttpError):
            self._send_json(item.status, _error_body(item.message, "scripted_error"), item.headers)
        elif isinstance(item, Drop | Hang):
            if isinstance(item, Hang):
                self.scripted._stopping.wait(item.seconds)
            self._hang_up()
        elif isinstance(request.body, Mapping) and request.body.get("stream"):
            self._stream(item, request)
        else:
            self._send_json(200, _completion(item, _model_of(request)))

    def _stream(self, reply: Reply, request: RecordedRequest) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        chunks = list(_chunks(reply, _model_of(request), include_usage))[:reply.truncate_after_chunks]
        if reply.error_after_chunks is not None:
            chunks[reply.error_after_chunks:] = [_error_body("scripted mid-stream error", "server_error")]
        try:
            for index, chunk in enumerate(chunks):
                if reply.drop_after_chunks is not None and index >= reply.drop_after_chunks:
                    self._hang_up()
                    return
                if reply.chunk_delay_s:
                    time.sleep(reply.chunk_delay_s)
                self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            request.disconnected.set()
            self.close_connection = True

    def _write_chunk(self, payload: bytes) -> None:
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _hang_up(self) -> None:
        """Close the socket at once, as a crashed proxy or a dropped network would."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


def _error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": kind}}


def _model_of(request: RecordedRequest) -> str:
    body = request.body if isinstance(request.body, Mapping) else {}
    return str(body.get("model") or MODEL_IDS[0])


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def _finish_reason(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _call_id(reply: Reply, index: int) -> str:
    return reply.tool_calls[index].id or f"call_{index}"


def _usage(reply: Reply, style: UsageStyle) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                             "total_tokens": reply.prompt_tokens + reply.completion_tokens}
    if style == "moonshot":
        usage["cached_tokens"] = reply.cached_tokens
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
    return usage


def _chunks(reply: Reply, model: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The chunk objects of one streamed reply, in the order an OpenAI-compatible server sends them."""
    head = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **choice_extra: Any) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice_extra}]}

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(reply.reasoning, reply.chunk_chars):
        yield chunk({"reasoning_content": piece})
    for piece in _pieces(reply.text, reply.chunk_chars):
        yield chunk({"content": piece})
    for index, call in enumerate(reply.tool_calls):
        for delta in _call_deltas(reply, index, call):
            yield chunk({"tool_calls": [delta]})
    if reply.usage_style == "moonshot":
        yield chunk({}, _finish_reason(reply), usage=_usage(reply, "moonshot"))
        return
    yield chunk({}, _finish_reason(reply))
    if reply.usage_style == "openai" and include_usage:
        yield {**head, "choices": [], "usage": _usage(reply, "openai")}


def _call_deltas(reply: Reply, index: int, call: ScriptedCall) -> Iterator[dict[str, Any]]:
    call_id = _call_id(reply, index)
    if reply.tool_call_style in ("whole", "no_index"):
        whole = {"index": index, "id": call_id, "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
        if reply.tool_call_style == "no_index":
            del whole["index"]
        yield whole
        return
    yield {"index": index, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    for piece in _pieces(call.arguments, reply.chunk_chars):
        delta: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
        if reply.tool_call_style == "id_every_chunk":
            delta["id"] = call_id
        yield delta


def _completion(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [{"id": _call_id(reply, i), "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}
                                 for i, call in enumerate(reply.tool_calls)]
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(reply)}],
            "usage": _usage(reply, "openai")}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible chat API on 127.0.0.1.")
    parser.add_argument("--script", type=Path, required=True, help="JSON list of script items")
    parser.add_argument("--port-file", type=Path, required=True, help="written with the port once listening")
    parser.add_argument("--requests-file", type=Path, help="each request is appended here as a JSON line")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with ScriptedServer(load_script(args.script), requests_file=args.requests_file) as server:
        partial = args.port_file.with_name(args.port_file.name + ".tmp")
        partial.write_text(str(server.port), encoding="utf-8")
        partial.replace(args.port_file)  # atomic: a reader never sees an empty port file
        while not stop.wait(0.1):
            pass


if __name__ == "__main__":
    main()
