"""The engine service on a real tiny checkpoint: 32 client threads streaming at once each get the answer they get
alone; cancelling frees the sequence; shutdown finishes or cancels what runs and refuses what comes after; an
engine failure ends the requests in flight, not the service."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.errors import RequestError
from engine.llm import LLM
from engine.sampling import SamplingParams
from engine.service import EngineService, RequestAborted, ServiceClosed
from engine.tiny import make_tiny

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
ENDLESS = SamplingParams(temperature=0, max_tokens=4000, ignore_eos=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "k2", dtype="fp32", seed=1)


@pytest.fixture
def service(checkpoint: Path) -> Iterator[EngineService]:
    service = EngineService(LLM(checkpoint, dtype="float32"), model_name="tiny")
    yield service
    service.shutdown(cancel=True, timeout=10)


def _conversation(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"request {i}: " + "tell me more " * (i % 7)}]


def _streamed_content(chunks: Sequence[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_32_concurrent_streams_each_get_their_answer_alone(checkpoint: Path, service: EngineService) -> None:
    streamed: dict[int, list[dict[str, Any]]] = {}

    def client(i: int) -> None:
        streamed[i] = list(service.chat(_conversation(i), None, GREEDY).chunks())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(streamed) == 32
    alone = LLM(checkpoint, dtype="float32", enable_prefix_caching=False)
    for i, chunks in streamed.items():
        expected = alone.chat(_conversation(i), None, GREEDY)
        assert _streamed_content(chunks) == expected["choices"][0]["message"]["content"]
        assert chunks[-1]["usage"] == expected["usage"] and chunks[-1]["model"] == "tiny"
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    metrics = service.metrics()
    assert (metrics.running, metrics.waiting, metrics.requests_finished_total) == (0, 0, 32)
    assert metrics.generation_tokens_total == 32 * 24 and metrics.generation_tokens_per_s > 0
    assert metrics.prefix_cache_hit_tokens > 0, "the 32 prompts share the system prompt's blocks"


def test_asyncio_readers_get_the_same_chunks_without_a_thread_each(service: EngineService) -> None:
    async def read_all() -> list[list[dict[str, Any]]]:
        async def read(i: int) -> list[dict[str, Any]]:
            return [chunk async for chunk in service.chat(_conversation(i), None, GREEDY).stream()]

        return await asyncio.gather(*(read(i) for i in range(4)))

    threads_before = threading.active_count()
    streamed = asyncio.run(read_all())
    assert threading.active_count() == threads_before
    for i, chunks in enumerate(streamed):
        whole = service.chat(_conversation(i), None, GREEDY).result()
        assert _streamed_content(chunks) == whole["choices"][0]["message"]["content"]
        assert chunks[-1]["usage"] == whole["usage"]
    completion = asyncio.run(service.complete("hi", GREEDY).wait_result())
    assert completion["object"] == "text_completion" and completion["usage"]["completion_tokens"] == 24


def test_a_cancelled_request_frees_its_sequence_and_reports_why(service: EngineService) -> None:
    submission = service.chat(_conversation(1), None, ENDLESS)
    chunks = submission.chunks()
    for _ in range(3):
        next(chunks)
    submission.cancel()
    rest = list(chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in rest if c["choices"]), "it just ends"
    _wait_for(lambda: service.metrics().running == 0)
    assert service.metrics().cache_blocks_used == 0
    with pytest.raises(RequestAborted, match="cancelled before it finished"):
        submission.result()
    submission.cancel()  # twice is harmless
    assert service.complete("hello", GREEDY).result()["choices"][0]["finish_reason"] == "length"


def test_bad_input_raises_in_the_callers_thread(service: EngineService) -> None:
    with pytest.raises(RequestError, match="the prompt has 9000 tokens; the context holds 8192"):
        service.complete([i % 1000 for i in range(9000)], GREEDY)
    assert service.metrics().waiting == 0


def test_shutdown_lets_running_requests_finish_then_refuses_new_ones(service: EngineService) -> None:
    running = service.complete("finish me", GREEDY)
    service.shutdown(cancel=False, timeout=60)
    assert running.result()["usage"]["completion_tokens"] == 24
    with pytest.raises(ServiceClosed, match="shutting down"):
        service.complete("too late", GREEDY)


def test_shutdown_with_cancel_ends_every_stream(service: EngineService) -> None:
    submissions = [service.complete(f"prompt {i}", ENDLESS) for i in range(3)]
    next(submissions[0].chunks())
    service.shutdown(cancel=True, timeout=30)
    for submission in submissions:
        with pytest.raises(RequestAborted, match=r"shut down|cancelled"):
            submission.result()


def test_an_engine_failure_ends_the_requests_in_flight_and_the_service_goes_on(service: EngineService) -> None:
    def explode(output: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("processor blew up")

    doomed = service.complete("a", SamplingParams(temperature=0, max_tokens=5, logits_processors=[explode]))
    with pytest.raises(RequestAborted, match="the engine failed: processor blew up"):
        doomed.result()
    assert service.complete("b", GREEDY).result()["usage"]["completion_tokens"] == 24
    assert service.metrics().cache_blocks_used == 0


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
