"""`kcode serve`'s HTTP layer: an OpenAI-compatible API over an `EngineService`.

Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (each streaming as server-sent
events or not), `GET /health` and Prometheus' `GET /metrics`. Bodies are checked by `openai_protocol`; each
refusal, ours or the framework's (unknown route, wrong method), leaves as OpenAI's error body. With an API key
every route but `/health` needs `Authorization: Bearer KEY`, so a load balancer can probe without it.

Submitting renders and checks the request, which blocks, so it runs in a worker thread; answers are read
with the service's asyncio stream, which the engine thread wakes once per step. A client that goes
away cancels its submission at once, streaming or not, which frees its sequence for the others. On SIGTERM
`serve` stops accepting connections and lets in-flight requests finish for `shutdown_timeout_s`, then
cancels the rest: their streams end with an error event rather than a cut connection.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from engine.errors import ContextLengthError, EngineError
from engine.metrics_text import CONTENT_TYPE, prometheus_text
from engine.openai_protocol import (
    OpenAIRequestError,
    error_body,
    parse_chat_request,
    parse_completion_request,
    parse_json_object,
)
from engine.service import EngineService, RequestAborted, ServiceClosed, Submission

WORKER_THREADS = 64
"""Threads for the service's blocking calls (rendering and checking a request); reading answers needs none."""


class _Unauthorized(Exception):
    """No bearer token, or the wrong one."""


def create_app(service: EngineService, *, api_key: str | None = None, shutdown_timeout_s: float = 30.0) -> FastAPI:
    """The API over `service`, which the app shuts down when the server stops (cancelling what is left)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        yield
        await anyio.to_thread.run_sync(lambda: service.shutdown(cancel=True, timeout=shutdown_timeout_s))

    app = FastAPI(title="kcode serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())

    def authorized(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise _Unauthorized

    guarded = [Depends(authorized)]

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> Response:
        text = prometheus_text(service.metrics(), model_name=service.model_name)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(service, started)]}

    @app.get("/v1/models/{model:path}", dependencies=guarded)
    async def model(model: str) -> dict[str, Any]:
        if model != service.model_name:
            raise OpenAIRequestError(f"the model '{model}' does not exist; this server serves "
                                     f"'{service.model_name}'", param="model", code="model_not_found", status=404)
        return _model_card(service, started)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(request: Request) -> Response:
        body = parse_json_object(await request.body())
        chat = parse_chat_request(body, model_name=service.model_name, max_model_len=service.max_model_len)
        submission = await _submit(lambda: service.chat(chat.messages, chat.tools, chat.params), "messages")
        if chat.stream:
            return _event_stream(submission, include_usage=chat.include_usage)
        return await _whole_result(request, submission)

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(request: Request) -> Response:
        body = parse_json_object(await request.body())
        completion = parse_completion_request(body, model_name=service.model_name)
        submission = await _submit(lambda: service.complete(completion.prompt, completion.params), "prompt")
        if completion.stream:
            return _event_stream(submission, include_usage=completion.include_usage)
        return await _whole_result(request, submission)

    _add_error_handlers(app)
    return app


def _model_card(service: EngineService, created: int) -> dict[str, Any]:
    return {"id": service.model_name, "object": "model", "created": created, "owned_by": "kcode",
            "max_model_len": service.max_model_len}


async def _submit(start: Callable[[], Submission], param: str) -> Submission:
    """Start a request; the engine's eager input errors (template, prompt length) become 400s naming `param`."""
    try:
        return await anyio.to_thread.run_sync(start)
    except EngineError as exc:
        code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else None
        raise OpenAIRequestError(str(exc), param=param, code=code) from None


def _event_stream(submission: Submission, *, include_usage: bool) -> StreamingResponse:
    return StreamingResponse(_events(submission, include_usage), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(submission: Submission, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of the submission's chunks, then `[DONE]`. The usage chunk (`choices: []`) goes
    out only when asked for, and then every other chunk says `usage: null`, as OpenAI's stream does.
    However the stream ends early (disconnect, shutdown), the submission is cancelled."""
    finished = ended = False
    try:
        async for chunk in submission.stream():
            if not chunk["choices"] and "usage" in chunk:
                if include_usage:
                    yield _event(chunk)
                continue
            finished |= chunk["choices"][0].get("finish_reason") is not None
            yield _event({**chunk, "usage": None} if include_usage else chunk)
        ended = True
        if finished:
            yield "data: [DONE]\n\n"
        else:  # the status line is long gone: say so in the stream, as OpenAI does, and send no [DONE]
            yield _event(error_body("the request ended before it finished (the server is shutting down, or the "
                                    "engine failed)", kind="server_error"))
    finally:
        if not ended:
            submission.cancel()


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _whole_result(request: Request, submission: Submission) -> Response:
    """The finished body; should the client disconnect first, the submission is cancelled at once."""
    outcome: dict[str, Any] | RequestAborted | None = None

    async def wait_for_result() -> None:
        nonlocal outcome
        try:
            outcome = await submission.wait_result()
        except RequestAborted as exc:
            outcome = exc
        group.cancel_scope.cancel()

    async def cancel_on_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        group.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_result)
            group.start_soon(cancel_on_disconnect)
    finally:
        if outcome is None:  # the client left, or the server cancelled this handler
            submission.cancel()
    if isinstance(outcome, RequestAborted):
        raise outcome
    return JSONResponse(outcome) if outcome is not None else Response(status_code=499)


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure leaves as OpenAI's error body."""

    @app.exception_handler(OpenAIRequestError)
    async def refused(_: Request, exc: OpenAIRequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, __: _Unauthorized) -> JSONResponse:
        body = error_body("a valid API key is needed: send the header 'Authorization: Bearer KEY' with the key "
                          "given to kcode serve --api-key", code="invalid_api_key")
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ServiceClosed)
    async def closed(_: Request, exc: ServiceClosed) -> JSONResponse:
        return JSONResponse(error_body(f"the server is shutting down ({exc})", kind="server_error"), status_code=503)

    @app.exception_handler(RequestAborted)
    async def aborted(_: Request, exc: RequestAborted) -> JSONResponse:
        return JSONResponse(error_body(str(exc), kind="server_error"), status_code=500)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"the server failed: {type(exc).__name__}: {exc}", kind="server_error"),
                            status_code=500)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        return JSONResponse(error_body(str(message)), status_code=exc.status_code, headers=exc.headers)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` (port 0 picks a free one), IPv4 or IPv6 as the host is."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(service: EngineService, sock: socket.socket, *, api_key: str | None = None,
          shutdown_timeout_s: float = 30.0, log_level: str = "info") -> None:
    """Serve `service` on the bound `sock` until SIGINT or SIGTERM, then shut down gracefully: no new
    connections, `shutdown_timeout_s` for the requests in flight, then the rest are cancelled, each stream
    ending with an error event and each waiting client with a 500, and the service stops."""

    def cancel_the_rest() -> None:
        service.shutdown(cancel=True, timeout=shutdown_timeout_s)

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(shutdown_timeout_s, lambda: loop.run_in_executor(None, cancel_the_rest))
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()

    app = create_app(service, api_key=api_key, shutdown_timeout_s=shutdown_timeout_s)
    backstop_s = math.ceil(shutdown_timeout_s) + 10  # uvicorn's own: should a cancelled request still hang
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=backstop_s, access_log=False)
    GracefulServer(config).run(sockets=[sock])
