"""The backend for any OpenAI-compatible chat API (Moonshot, OpenAI, vLLM, `kcode serve`), via the official SDK.

Import this module only when a remote model is used: it imports `openai`, which `kcode --help` must not
pay for. The SDK's own retries are off, so the policy in `retry.py` is the only one, and every retry is
announced with a `Retrying` event before the wait. A completion always streams; tool-call arguments
arrive in pieces and are joined here, so the agent loop only sees whole calls.
"""

from __future__ import annotations

import http
import random as _random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai

from kcode.backends.base import Finish, Retrying, StreamEvent
from kcode.backends.chunks import ChunkAssembly, field
from kcode.backends.retry import Backoff, RetryPolicy, is_retryable_status, retry_after_s
from kcode.config import Settings
from kcode.errors import BackendError, ConfigError
from kcode.messages import Message
from kcode.profiles import DEFAULT_CONTEXT_WINDOW, Profile, Quirks

CONNECT_TIMEOUT_S = 10.0
_NO_KEY = "no-key"  # the SDK insists on a key; servers without authentication ignore this one
# The SDK adds OPENAI_ORG_ID and OPENAI_PROJECT_ID from the process environment to requests to any host;
# kcode's settings are its only configuration, so those headers are left out (Omit drops a header).
_WITHOUT_ENVIRONMENT_HEADERS: dict[str, Any] = {"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()}


class _RetryableFailure(Exception):
    """One try failed in a way another try may fix; `reason` is one line for the user.

    `refused`: the host refused the connection, so only the policy's quick retries are worth making.
    """

    def __init__(self, reason: str, retry_after_s: float | None = None, *, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.refused = refused


class RemoteBackend:
    """Streams chat completions from one model at one OpenAI-compatible base URL."""

    def __init__(self, *, base_url: str, model: str, api_key: str | None, api_key_env: str | None = None,
                 context_window: int = DEFAULT_CONTEXT_WINDOW, temperature: float | None = None,
                 max_tokens: int | None = None, quirks: Quirks = "none", retry: RetryPolicy | None = None,
                 request_timeout_s: float = 300.0, sleep: Callable[[float], None] = time.sleep,
                 random: Callable[[], float] = _random.random, clock: Callable[[], float] = time.time,
                 http_client: httpx2.Client | None = None) -> None:
        self.model = model
        self.context_window = context_window
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.quirks = quirks
        self.retry = retry or RetryPolicy()
        self._sleep, self._random, self._clock = sleep, random, clock
        self._send_stream_options = True
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or _NO_KEY, max_retries=0,
                                     timeout=httpx2.Timeout(request_timeout_s, connect=CONNECT_TIMEOUT_S),
                                     http_client=http_client, default_headers=_WITHOUT_ENVIRONMENT_HEADERS)
        self._request_timeout_s = request_timeout_s

    @classmethod
    def from_profile(cls, profile: Profile, **options: Any) -> RemoteBackend:
        """A backend for a remote profile; `options` go to the constructor (retry, sleep, timeouts)."""
        if profile.provider != "openai" or profile.base_url is None:
            raise ConfigError(f"profile {profile.name!r} runs model {profile.model!r} locally, not over HTTP")
        return cls(base_url=profile.base_url, model=profile.model, api_key=profile.api_key,
                   api_key_env=profile.api_key_env, context_window=profile.context_window,
                   temperature=profile.temperature, max_tokens=profile.max_tokens, quirks=profile.quirks, **options)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> RemoteBackend:
        """The backend a kcode run is configured for: its profile, its number of tries and its timeout."""
        return cls.from_profile(settings.profile, retry=RetryPolicy(max_attempts=settings.max_attempts),
                                request_timeout_s=settings.request_timeout_s, **options)

    def close(self) -> None:
        self._client.close()

    def stream(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = (), *,
               max_tokens: int | None = None) -> Iterator[StreamEvent]:
        """Stream one completion, retrying per the policy; after a `Retrying` event it starts over.

        Closing the iterator (or a KeyboardInterrupt while it waits for the server) closes the HTTP
        response at once.
        """
        body = self._request_body(messages, tools, max_tokens)
        backoff = Backoff(self.retry, self._random)
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                yield from self._attempt(body)
                return
            except _RetryableFailure as failure:
                tries = min(attempts, self.retry.refused_attempts) if failure.refused else attempts
                if attempt >= tries:
                    raise BackendError(f"{failure.reason} from {self._where()}; gave up after {attempt} "
                                       f"{'try' if attempt == 1 else 'tries'}") from None
                wait = failure.retry_after_s
                if wait is not None and wait > self.retry.max_retry_after_s:
                    raise BackendError(f"{failure.reason} from {self._where()}; the server asks to wait "
                                       f"{wait:.0f} s, more than kcode will") from None
                delay = self.retry.refused_delay_s if failure.refused else backoff.next_delay_s(wait)
                yield Retrying(attempt=attempt + 1, max_attempts=tries, delay_s=delay, reason=failure.reason)
                self._sleep(delay)

    def _request_body(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]],
                      max_tokens: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [m.to_openai() for m in messages]}
        if tools:
            if self.quirks == "moonshot":
                check_moonshot_tools(tools)
            body["tools"] = [dict(tool) for tool in tools]
        temperature = self.temperature
        if temperature is not None and self.quirks == "moonshot":
            temperature = min(max(temperature, 0.0), 1.0)  # Moonshot accepts [0, 1] only
        if temperature is not None:
            body["temperature"] = temperature
        limit = max_tokens if max_tokens is not None else self.max_tokens
        if limit is not None:
            body["max_tokens"] = limit
        return body

    def _attempt(self, body: Mapping[str, Any]) -> Iterator[StreamEvent]:
        """One try: open the stream, pass deltas on, join the tool calls; raise _RetryableFailure to retry."""
        chunks = self._open(body)
        assembly = ChunkAssembly()
        try:
            try:
                for chunk in chunks:
                    yield from assembly.feed(chunk)
            except openai.APIError as exc:
                if assembly.finish_reason is None:
                    raise self._failure(exc) from exc
                # The completion had finished; only its trailer (usage, the end marker) was lost.
        finally:
            chunks.close()
        if assembly.finish_reason is None:
            raise _RetryableFailure("the stream ended before the completion finished")
        if assembly.usage is not None:
            yield assembly.usage
        yield Finish(assembly.finish_reason)

    def _open(self, body: Mapping[str, Any]) -> openai.Stream[Any]:
        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if self._send_stream_options else {}
        try:
            stream: openai.Stream[Any] = self._client.chat.completions.create(**body, stream=True, **extra)
            return stream
        except openai.BadRequestError as exc:
            if extra and "stream_options" in str(exc.message).lower():
                self._send_stream_options = False  # an older server; usage may still come in the last choice
                return self._open(body)
            raise self._failure(exc) from exc
        except openai.APIError as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: openai.APIError) -> Exception:
        """The retryable failure or the final BackendError that an SDK error amounts to."""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            reason = f"{status} {_phrase(status)}"
            detail = _server_message(exc)
            if is_retryable_status(status, exc.response.headers):
                return _RetryableFailure(f"{reason} ({detail})" if detail else reason,
                                         retry_after_s(exc.response.headers, self._clock()))
            return BackendError(self._final_message(status, reason, detail))
        if isinstance(exc, openai.APITimeoutError):
            return _RetryableFailure(f"no response within {self._request_timeout_s:g} s")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else exc.message
            what = "could not connect" if isinstance(cause, httpx2.ConnectError) else "connection dropped"
            return _RetryableFailure(f"{what} ({_clip(detail)})", refused=_refused(exc))
        return _RetryableFailure(f"the server reported an error mid-stream ({_clip(exc.message)})")

    def _final_message(self, status: int, reason: str, detail: str) -> str:
        where = self._where()
        if status == 401:
            fix = f"check {self.api_key_env}" if self.api_key_env else "check the API key"
            return f"{reason} from {_public_url(self.base_url)}: {fix}" + (f" ({detail})" if detail else "")
        if status == 404:
            return f"{reason} from {where}: no such model or wrong base URL" + (f" ({detail})" if detail else "")
        return f"{reason} from {where}" + (f": {detail}" if detail else "")

    def _where(self) -> str:
        return f"{_public_url(self.base_url)} (model {self.model})"


def _refused(exc: BaseException) -> bool:
    """Whether the host refused the connection, somewhere down the chain of causes the SDK and httpx add."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = field(body, "message") if isinstance(body, Mapping) else body
    return _clip(str(message)) if message else ""


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _public_url(url: str) -> str:
    """The URL without any user:password part, fit for error messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def check_moonshot_tools(tools: Sequence[Mapping[str, Any]]) -> None:
    """Moonshot rejects a tool whose JSON-schema properties lack a `type`; say which one before sending.

    Guessing a type would change what the model may pass, so an untyped property is an error.
    """
    for tool in tools:
        function = tool.get("function") or {}
        for path in _untyped_properties(function.get("parameters") or {}, ""):
            raise BackendError(f"tool {function.get('name')!r}: property {path!r} has no JSON-schema 'type', "
                               "which Moonshot's API requires")


def _untyped_properties(schema: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for name, prop in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        if not isinstance(prop, Mapping) or "type" not in prop:
            yield path
            continue
        yield from _untyped_properties(prop, path + ".")
        items = prop.get("items")
        if isinstance(items, Mapping):
            yield from _untyped_properties(items, path + "[].")
