"""The remote backend against the scripted server: real HTTP, the real `openai` SDK, injected sleeps."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from email.utils import formatdate
from typing import Any

import pytest

from kcode.backends.base import Finish, ReasoningDelta, Retrying, StreamEvent, TextDelta, ToolCallReady, Usage
from kcode.backends.remote import RemoteBackend, check_moonshot_tools
from kcode.backends.retry import Backoff, RetryPolicy, is_retryable_status, retry_after_s
from kcode.config import Overrides, load_settings
from kcode.errors import BackendError, ConfigError
from kcode.messages import Message, ToolCall, system, user
from kcode.profiles import Profile
from tests.kcode.openai_server import Drop, Hang, HttpError, Reply, ScriptedCall, ScriptedServer

BASH_TOOL = {"type": "function", "function": {
    "name": "bash", "description": "Run a command.",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}


class Sleeps(list[float]):
    """An injected sleep that records what it was asked for and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_backend(openai_server: ScriptedServer, sleeps: Sleeps) -> Iterator[Any]:
    made: list[RemoteBackend] = []

    def make(**options: Any) -> RemoteBackend:
        settings: dict[str, Any] = {"base_url": openai_server.base_url, "model": "scripted-model",
                                    "api_key": "sk-test-key", "sleep": sleeps, "random": lambda: 0.5,
                                    "retry": RetryPolicy(max_attempts=4)}
        backend = RemoteBackend(**{**settings, **options})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def run(backend: RemoteBackend, messages: Sequence[Message] = (user("hi"),), **kwargs: Any) -> list[StreamEvent]:
    return list(backend.stream(messages, **kwargs))


def final_text(events: Sequence[StreamEvent]) -> str:
    """The text of the last try: whatever came before a Retrying event is void."""
    last_retry = max((i for i, e in enumerate(events) if isinstance(e, Retrying)), default=-1)
    return "".join(e.text for e in events[last_retry + 1:] if isinstance(e, TextDelta))


def test_text_streamed_in_small_pieces_is_passed_on_piece_by_piece(openai_server: ScriptedServer,
                                                                   make_backend: Any) -> None:
    text = "Hello! Here is a longer answer, streamed three characters at a time."
    openai_server.add(Reply(text=text, chunk_chars=3))
    events = run(make_backend())
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == text
    assert len(deltas) == len(range(0, len(text), 3))
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"


@pytest.mark.parametrize("style", ["pieces", "whole", "id_every_chunk", "no_index"])
def test_tool_calls_split_across_chunks_assemble_into_the_exact_json(openai_server: ScriptedServer,
                                                                     make_backend: Any, style: str) -> None:
    first = json.dumps({"command": "grep -rn 'def main' src/ | head -20", "timeout": 30})
    second = json.dumps({"path": "src/app.py", "view_range": [1, 40]})
    openai_server.add(Reply(text="Let me look.", chunk_chars=2, tool_call_style=style,  # type: ignore[arg-type]
                            tool_calls=(ScriptedCall("bash", first, id="call_a"),
                                        ScriptedCall("view", second, id="call_b"))))
    events = run(make_backend(), tools=[BASH_TOOL])
    calls = [e.call for e in events if isinstance(e, ToolCallReady)]
    assert calls == [ToolCall("call_a", "bash", first), ToolCall("call_b", "view", second)]
    assert [type(e) for e in events[-4:]] == [ToolCallReady, ToolCallReady, Usage, Finish]
    assert events[-1] == Finish("tool_calls")


def test_malformed_arguments_arrive_verbatim_for_the_loop_to_report(openai_server: ScriptedServer,
                                                                    make_backend: Any) -> None:
    openai_server.add(Reply(tool_calls=(ScriptedCall("bash", '{"command": "ls'),)))
    calls = [e.call for e in run(make_backend()) if isinstance(e, ToolCallReady)]
    assert calls == [ToolCall("call_0", "bash", '{"command": "ls')]


def test_reasoning_content_becomes_reasoning_deltas(openai_server: ScriptedServer, make_backend: Any) -> None:
    openai_server.add(Reply(reasoning="The user greets me; greet back.", text="Hi!"))
    events = run(make_backend())
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "The user greets me; greet back."
    assert final_text(events) == "Hi!"
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ReasoningDelta) for e in events[:first_text])


@pytest.mark.parametrize("usage_style", ["openai", "moonshot"])
def test_usage_is_reported_in_either_providers_shape(openai_server: ScriptedServer, make_backend: Any,
                                                      usage_style: str) -> None:
    openai_server.add(Reply(text="ok", prompt_tokens=1234, completion_tokens=56, cached_tokens=1000,
                            usage_style=usage_style))  # type: ignore[arg-type]
    events = run(make_backend())
    assert [e for e in events if isinstance(e, Usage)] == [Usage(1234, 56, 1000)]
    assert openai_server.chat_requests[0].body["stream_options"] == {"include_usage": True}


def test_429_waits_at_least_what_retry_after_asks_then_succeeds(openai_server: ScriptedServer, make_backend: Any,
                                                                sleeps: Sleeps) -> None:
    openai_server.add(HttpError(429, "rate limited", headers={"Retry-After": "7"}), Reply(text="done"))
    events = run(make_backend())
    retries = [e for e in events if isinstance(e, Retrying)]
    assert len(retries) == 1 and retries[0].attempt == 2 and retries[0].max_attempts == 4
    assert "429" in retries[0].reason and "rate limited" in retries[0].reason
    assert sleeps == [retries[0].delay_s] and sleeps[0] >= 7.0
    assert final_text(events) == "done"


def test_retry_after_ms_and_http_dates_are_honoured(openai_server: ScriptedServer, make_backend: Any,
                                                    sleeps: Sleeps) -> None:
    now = 1_700_000_000.0
    openai_server.add(HttpError(503, headers={"retry-after-ms": "4500"}),
                      HttpError(429, headers={"Retry-After": formatdate(now + 20, usegmt=True)}),
                      Reply(text="ok"))
    events = run(make_backend(clock=lambda: now))
    assert final_text(events) == "ok"
    assert sleeps[0] >= 4.5
    assert sleeps[1] == pytest.approx(20.0, abs=1.0)


def test_500_then_success(openai_server: ScriptedServer, make_backend: Any, sleeps: Sleeps) -> None:
    openai_server.add(HttpError(500, "upstream overloaded"), Reply(text="recovered"))
    events = run(make_backend())
    assert [e.reason for e in events if isinstance(e, Retrying)] == ["500 Internal Server Error (upstream overloaded)"]
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 30.0
    assert final_text(events) == "recovered"


def test_dropped_connections_before_and_during_the_stream_are_retried(openai_server: ScriptedServer,
                                                                      make_backend: Any) -> None:
    openai_server.add(Drop(), Reply(text="partial answer that breaks", drop_after_chunks=4), Reply(text="whole"))
    events = run(make_backend())
    kinds = [type(e) for e in events]
    first_retry, second_retry = (i for i, kind in enumerate(kinds) if kind is Retrying)
    assert first_retry == 0 and "connection dropped" in events[0].reason  # type: ignore[union-attr]
    partial = "".join(e.text for e in events[first_retry:second_retry] if isinstance(e, TextDelta))
    assert partial and "partial answer that breaks".startswith(partial) and partial != "partial answer that breaks"
    assert final_text(events) == "whole"
    assert len(openai_server.chat_requests) == 3


def test_a_stream_that_ends_without_a_finish_reason_is_retried(openai_server: ScriptedServer,
                                                               make_backend: Any) -> None:
    openai_server.add(Reply(text="abcdef", truncate_after_chunks=2), Reply(text="complete"))
    events = run(make_backend())
    assert [e.reason for e in events if isinstance(e, Retrying)] == ["the stream ended before the completion finished"]
    assert final_text(events) == "complete"


def test_an_error_event_inside_the_stream_is_retried(openai_server: ScriptedServer, make_backend: Any) -> None:
    openai_server.add(Reply(text="abcdef", error_after_chunks=2), Reply(text="second"))
    events = run(make_backend())
    assert [e.reason for e in events if isinstance(e, Retrying)] == [
        "the server reported an error mid-stream (scripted mid-stream error)"]
    assert final_text(events) == "second"


def test_a_drop_after_the_finish_reason_keeps_the_finished_completion(openai_server: ScriptedServer,
                                                                      make_backend: Any) -> None:
    # chunks: role, "ok", finish, usage; the connection breaks before the usage chunk
    openai_server.add(Reply(text="ok", drop_after_chunks=3))
    events = run(make_backend())
    assert events == [TextDelta("ok"), Finish("stop")]


def test_a_hung_server_times_out_and_is_retried(openai_server: ScriptedServer, make_backend: Any) -> None:
    openai_server.add(Hang(seconds=10), Reply(text="awake"))
    started = time.monotonic()
    events = run(make_backend(request_timeout_s=0.3))
    assert time.monotonic() - started < 5
    assert [e.reason for e in events if isinstance(e, Retrying)] == ["no response within 0.3 s"]
    assert final_text(events) == "awake"


def test_persistent_500_gives_up_after_the_last_try_with_one_clear_line(openai_server: ScriptedServer,
                                                                        make_backend: Any, sleeps: Sleeps) -> None:
    openai_server.add(*[HttpError(500, "boom")] * 3)
    backend = make_backend(retry=RetryPolicy(max_attempts=3))
    events: list[StreamEvent] = []
    with pytest.raises(BackendError) as caught:
        events.extend(backend.stream([user("hi")]))
    message = str(caught.value)
    assert message == (f"500 Internal Server Error (boom) from {openai_server.base_url} (model scripted-model); "
                       "gave up after 3 tries")
    assert "\n" not in message and "sk-test-key" not in message
    assert [e.attempt for e in events if isinstance(e, Retrying)] == [2, 3]
    assert len(sleeps) == 2 and len(openai_server.chat_requests) == 3


def test_a_refused_connection_gets_one_quick_retry_not_the_whole_backoff(make_backend: Any,
                                                                          sleeps: Sleeps) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    events: list[StreamEvent] = []
    with pytest.raises(BackendError) as caught:
        events.extend(make_backend(base_url=url, retry=RetryPolicy(max_attempts=6)).stream([user("hi")]))
    assert str(caught.value) == (f"could not connect (ConnectError: [Errno 111] Connection refused) from {url} "
                                 "(model scripted-model); gave up after 2 tries")
    assert [(e.attempt, e.max_attempts, e.delay_s) for e in events if isinstance(e, Retrying)] == [(2, 2, 0.5)]
    assert sleeps == [0.5]


def test_backoff_grows_with_jitter_up_to_the_cap(openai_server: ScriptedServer, make_backend: Any,
                                                 sleeps: Sleeps) -> None:
    openai_server.add(*[HttpError(502)] * 5, Reply(text="ok"))
    run(make_backend(retry=RetryPolicy(max_attempts=6, base_delay_s=1.0, max_delay_s=10.0), random=lambda: 1.0))
    assert sleeps == [3.0, 9.0, 10.0, 10.0, 10.0]


def test_401_fails_at_once_naming_the_key_variable(openai_server: ScriptedServer, make_backend: Any,
                                                   sleeps: Sleeps) -> None:
    openai_server.add(HttpError(401, "Invalid Authentication"))
    with pytest.raises(BackendError) as caught:
        run(make_backend(api_key_env="MOONSHOT_API_KEY"))
    assert str(caught.value) == (f"401 Unauthorized from {openai_server.base_url}: check MOONSHOT_API_KEY "
                                 "(Invalid Authentication)")
    assert sleeps == [] and len(openai_server.chat_requests) == 1


@pytest.mark.parametrize(("status", "expected"), [
    (404, "404 Not Found from {url} (model scripted-model): no such model or wrong base URL (no model)"),
    (400, "400 Bad Request from {url} (model scripted-model): no model"),
    (403, "403 Forbidden from {url} (model scripted-model): no model"),
])
def test_other_client_errors_fail_at_once(openai_server: ScriptedServer, make_backend: Any, sleeps: Sleeps,
                                          status: int, expected: str) -> None:
    openai_server.add(HttpError(status, "no model"))
    with pytest.raises(BackendError) as caught:
        run(make_backend())
    assert str(caught.value) == expected.format(url=openai_server.base_url)
    assert sleeps == []


def test_an_exhausted_script_fails_loudly_without_retrying(openai_server: ScriptedServer, make_backend: Any,
                                                           sleeps: Sleeps) -> None:
    with pytest.raises(BackendError, match="the script ran out"):
        run(make_backend())
    assert sleeps == []


def test_a_retry_after_beyond_the_limit_fails_now(openai_server: ScriptedServer, make_backend: Any,
                                                  sleeps: Sleeps) -> None:
    openai_server.add(HttpError(429, "quota exhausted", headers={"Retry-After": "3600"}))
    with pytest.raises(BackendError, match="asks to wait 3600 s"):
        run(make_backend())
    assert sleeps == []


def test_a_server_rejecting_stream_options_is_asked_again_without_them(openai_server: ScriptedServer,
                                                                       make_backend: Any, sleeps: Sleeps) -> None:
    openai_server.add(HttpError(400, "Unrecognized request argument supplied: stream_options"),
                      Reply(text="fine", usage_style="moonshot"), Reply(text="again"))
    backend = make_backend()
    events = run(backend)
    assert final_text(events) == "fine" and not any(isinstance(e, Retrying) for e in events)
    assert Usage(10, 5, 0) in events
    run(backend)
    bodies = [r.body for r in openai_server.chat_requests]
    assert "stream_options" in bodies[0] and "stream_options" not in bodies[1] and "stream_options" not in bodies[2]
    assert sleeps == []


def test_the_request_carries_model_messages_tools_and_key(openai_server: ScriptedServer, make_backend: Any) -> None:
    openai_server.add(Reply(text="ok"))
    history = [system("You are terse."), user("list files"),
               Message(role="assistant", tool_calls=(ToolCall("call_1", "bash", '{"command": "ls"}'),)),
               Message(role="tool", content="a.py\n", tool_call_id="call_1")]
    run(make_backend(temperature=0.3, max_tokens=512), history, tools=[BASH_TOOL])
    request = openai_server.chat_requests[0]
    assert request.headers["authorization"] == "Bearer sk-test-key"
    body = request.body
    assert body["model"] == "scripted-model" and body["stream"] is True
    assert body["temperature"] == 0.3 and body["max_tokens"] == 512
    assert body["tools"] == [BASH_TOOL]
    assert body["messages"] == [m.to_openai() for m in history]
    assert "content" not in body["messages"][2]
    assert "tool_choice" not in body


def test_max_tokens_per_call_beats_the_profile_and_unset_values_are_not_sent(openai_server: ScriptedServer,
                                                                             make_backend: Any) -> None:
    openai_server.add(Reply(text="a"), Reply(text="b"))
    run(make_backend(max_tokens=512), max_tokens=64)
    run(make_backend())
    first, second = (r.body for r in openai_server.chat_requests)
    assert first["max_tokens"] == 64
    assert "max_tokens" not in second and "temperature" not in second


def test_moonshot_quirks_clamp_the_temperature(openai_server: ScriptedServer, make_backend: Any) -> None:
    openai_server.add(Reply(text="a"), Reply(text="b"))
    run(make_backend(temperature=1.4, quirks="moonshot"))
    run(make_backend(temperature=1.4))
    clamped, plain = (r.body["temperature"] for r in openai_server.chat_requests)
    assert clamped == 1.0 and plain == 1.4


def test_moonshot_quirks_refuse_untyped_schema_properties_before_sending(openai_server: ScriptedServer,
                                                                         make_backend: Any) -> None:
    loose = {"type": "function", "function": {"name": "edit", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"},
                                         "edits": {"type": "array", "items": {"type": "object",
                                                                              "properties": {"old": {}}}}}}}}
    with pytest.raises(BackendError, match=r"tool 'edit': property 'edits\[\]\.old' has no JSON-schema 'type'"):
        run(make_backend(quirks="moonshot"), tools=[loose])
    assert openai_server.requests == []
    check_moonshot_tools([BASH_TOOL])


def test_closing_the_stream_early_closes_the_connection(openai_server: ScriptedServer, make_backend: Any) -> None:
    openai_server.add(Reply(text="x" * 600, chunk_chars=3, chunk_delay_s=0.02))
    stream = make_backend().stream([user("hi")])
    assert isinstance(next(stream), TextDelta)
    stream.close()
    assert openai_server.chat_requests[0].disconnected.wait(3.0)


def test_ctrl_c_while_waiting_for_a_slow_stream_interrupts_it_and_hangs_up(openai_server: ScriptedServer,
                                                                           make_backend: Any) -> None:
    # 200 chunks 0.05 s apart: ten seconds of stream, interrupted by a real SIGINT at 0.4 s.
    openai_server.add(Reply(text="y" * 600, chunk_chars=3, chunk_delay_s=0.05))
    received: list[StreamEvent] = []
    timer = threading.Timer(0.4, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for event in make_backend().stream([user("hi")]):
                received.append(event)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.0
    assert 0 < len(received) < 200
    assert openai_server.chat_requests[0].disconnected.wait(3.0)


def test_ctrl_c_during_the_backoff_wait_propagates_without_another_request(openai_server: ScriptedServer,
                                                                           make_backend: Any) -> None:
    def interrupted_sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    openai_server.add(HttpError(500), Reply(text="never"))
    events: list[StreamEvent] = []
    with pytest.raises(KeyboardInterrupt):
        events.extend(make_backend(sleep=interrupted_sleep).stream([user("hi")]))
    assert len(openai_server.chat_requests) == 1 and openai_server.remaining == 1


def test_from_profile_takes_the_remote_settings_and_refuses_a_local_model(openai_server: ScriptedServer,
                                                                          sleeps: Sleeps) -> None:
    profile = Profile(name="work", provider="openai", model="scripted-model", base_url=openai_server.base_url + "/",
                      api_key="sk-work", api_key_env="WORK_KEY", temperature=0.2, context_window=32_768)
    backend = RemoteBackend.from_profile(profile, sleep=sleeps)
    openai_server.add(Reply(text="ok"))
    assert final_text(run(backend)) == "ok"
    backend.close()
    assert (backend.model, backend.context_window, backend.base_url) == ("scripted-model", 32_768,
                                                                         openai_server.base_url)
    assert openai_server.chat_requests[0].body["temperature"] == 0.2
    with pytest.raises(ConfigError, match="locally"):
        RemoteBackend.from_profile(Profile(name="custom", provider="local", model="local"))


def test_credentials_in_the_base_url_stay_out_of_error_messages(openai_server: ScriptedServer,
                                                                make_backend: Any) -> None:
    openai_server.add(HttpError(400, "bad"))
    url_with_secret = openai_server.base_url.replace("http://", "http://user:hunter2@")
    with pytest.raises(BackendError) as caught:
        run(make_backend(base_url=url_with_secret))
    assert "hunter2" not in str(caught.value) and openai_server.base_url in str(caught.value)


def test_openai_organisation_variables_never_reach_the_server(openai_server: ScriptedServer, make_backend: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-private")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-private")
    openai_server.add(Reply(text="ok"))
    run(make_backend())
    headers = openai_server.chat_requests[0].headers
    assert "openai-organization" not in headers and "openai-project" not in headers


def test_retry_after_parsing_edge_cases() -> None:
    assert retry_after_s({"retry-after": "soon"}, now_s=0.0) is None
    assert retry_after_s({"retry-after-ms": "x", "retry-after": "2.5"}, now_s=0.0) == 2.5
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now_s=2e9) == 0.0
    assert retry_after_s({}, now_s=0.0) is None


def test_which_statuses_are_retried() -> None:
    assert [is_retryable_status(s, {}) for s in (400, 401, 404, 408, 409, 429, 500, 503)] == [
        False, False, False, True, True, True, True, True]
    assert is_retryable_status(400, {"x-should-retry": "true"})
    assert not is_retryable_status(503, {"x-should-retry": "false"})


def test_backoff_never_waits_less_than_asked_and_policy_rejects_nonsense() -> None:
    backoff = Backoff(RetryPolicy(base_delay_s=1.0, max_delay_s=5.0), random=lambda: 0.0)
    assert backoff.next_delay_s() == 1.0 and backoff.next_delay_s(retry_after_s=12.0) == 12.0
    with pytest.raises(ValueError, match="max_attempts must be at least 1, got 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="base_delay_s <= max_delay_s"):
        RetryPolicy(base_delay_s=10.0, max_delay_s=1.0)


def test_from_settings_uses_the_configured_tries_and_timeout(openai_server: ScriptedServer, sleeps: Sleeps) -> None:
    settings = load_settings({"HOME": "/nonexistent", "KCODE_BASE_URL": openai_server.base_url,
                              "KCODE_MODEL": "scripted-model", "KCODE_MAX_ATTEMPTS": "2"},
                             Overrides(settings={"request_timeout_s": 0.3}))
    backend = RemoteBackend.from_settings(settings, sleep=sleeps)
    openai_server.add(Hang(seconds=10), Hang(seconds=10))
    with pytest.raises(BackendError, match=r"^no response within 0.3 s from .*gave up after 2 tries$"):
        run(backend)
    backend.close()
    assert openai_server.chat_requests[0].headers["authorization"] == "Bearer no-key"
