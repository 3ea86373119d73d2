"""The engine on its own thread, for servers: any thread submits requests and reads their chunks.

One thread owns the `LLM`'s core. Between steps it takes new requests and cancellations from an inbox, so a
request joins the running batch at the next step and a cancelled one (a client that went away) frees its
cache blocks before the next step. Each `Submission` has a queue its stream chunks go to: a thread blocks on
it, or an asyncio server awaits `stream`, which the engine thread wakes. Requests are rendered and checked
in the caller's thread, so bad input raises there, before anything is queued.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from engine.llm import LLM, Prompt
from engine.responses import Response
from engine.sampling import SamplingParams

THROUGHPUT_WINDOW_S = 10.0


class ServiceClosed(RuntimeError):
    """The service is shutting down and takes no new requests."""


class RequestAborted(RuntimeError):
    """A request ended without finishing: cancelled, cancelled by shutdown, or the engine failed."""


@dataclass(frozen=True)
class EngineMetrics:
    running: int
    waiting: int
    cache_blocks_used: int
    cache_blocks_total: int
    prefix_cache_queried_tokens: int
    prefix_cache_hit_tokens: int
    prompt_tokens_total: int
    generation_tokens_total: int
    requests_finished_total: int
    preemptions_total: int
    generation_tokens_per_s: float
    """Over the last `THROUGHPUT_WINDOW_S` seconds."""


_END = object()


class Submission:
    """One request in the service: read its chunks as they come, or wait for the whole answer."""

    def __init__(self, service: EngineService, response: Response) -> None:
        self.id = response.id
        self.response = response
        self.request_id: int | None = None
        """The core's id, set by the engine thread when the request starts."""
        self._service = service
        self._queue: queue.Queue[Any] = queue.Queue()
        self._failure: str | None = None
        self._wake: Callable[[], object] = lambda: None

    def chunks(self) -> Iterator[dict[str, Any]]:
        """The stream chunks, blocking for each; ends early (without raising) if the request is cancelled."""
        while (chunk := self._queue.get()) is not _END:
            yield chunk
        self._queue.put(_END)  # a second reader ends at once too

    def result(self) -> dict[str, Any]:
        """The whole `chat.completion` / `text_completion` body once the request finishes."""
        for _ in self.chunks():
            pass
        return self._completion()

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        """`chunks` for an asyncio server: no thread waits per reader; the engine thread wakes the loop once
        for each batch of chunks it queues."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        self._wake = lambda: loop.call_soon_threadsafe(ready.set)
        ready.set()  # chunks queued before the reader came
        while True:
            await ready.wait()
            ready.clear()
            while not self._queue.empty():
                chunk = self._queue.get_nowait()
                if chunk is _END:
                    self._queue.put(_END)
                    return
                yield chunk

    async def wait_result(self) -> dict[str, Any]:
        """`result` for an asyncio server."""
        async for _ in self.stream():
            pass
        return self._completion()

    def _completion(self) -> dict[str, Any]:
        if not self.response.finished:
            raise RequestAborted(self._failure or f"request {self.id} was cancelled before it finished")
        return self.response.completion()

    def cancel(self) -> None:
        """Stop generating and free the sequence at the next step boundary; safe to call twice."""
        self._service._post("cancel", self)

    def _push(self, chunks: list[dict[str, Any]]) -> None:
        for chunk in chunks:
            self._queue.put(chunk)
        if chunks:
            self._wake()

    def _end(self, failure: str | None = None) -> None:
        self._failure = failure
        self._queue.put(_END)
        self._wake()


_Command = Literal["start", "cancel", "cancel_all", "stop"]


class EngineService:
    def __init__(self, llm: LLM, *, model_name: str | None = None) -> None:
        self.llm = llm
        self.model_name = model_name or llm.model_name
        self.max_model_len = llm.max_model_len
        self._inbox: queue.Queue[tuple[_Command, Submission | None]] = queue.Queue()
        self._live: dict[int, Submission] = {}
        self._closed = False
        self._counts = {"prompt": 0, "generated": 0, "finished": 0}
        self._recent: deque[tuple[float, int]] = deque()
        self._metrics = self._snapshot()
        self._thread = threading.Thread(target=self._run, name="kcode-engine", daemon=True)
        self._thread.start()

    # ---- any thread ------------------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        params: SamplingParams,
    ) -> Submission:
        """Raises an `EngineError` now for input the model cannot take."""
        return self._submit(self.llm.chat_response(messages, tools, params, model_name=self.model_name))

    def complete(self, prompt: Prompt, params: SamplingParams) -> Submission:
        return self._submit(self.llm.completion_response(prompt, params, model_name=self.model_name))

    def metrics(self) -> EngineMetrics:
        return self._metrics

    def shutdown(self, *, cancel: bool, timeout: float | None = None) -> None:
        """Take no new requests; let the running ones finish (or cancel them), then stop the thread. A request
        still running when `timeout` passes is cancelled."""
        self._closed = True
        if cancel:
            self._post("cancel_all", None)
        self._post("stop", None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._post("cancel_all", None)
            self._thread.join()

    def _submit(self, response: Response) -> Submission:
        if self._closed:
            raise ServiceClosed("the server is shutting down")
        submission = Submission(self, response)
        self._post("start", submission)
        return submission

    def _post(self, command: _Command, submission: Submission | None) -> None:
        self._inbox.put((command, submission))

    # ---- the engine thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while True:
            idle = not self.llm.core.has_work
            if stopping and idle:
                return
            try:
                commands = [self._inbox.get(block=idle)]
            except queue.Empty:
                commands = []
            while not self._inbox.empty():
                commands.append(self._inbox.get_nowait())
            for command, submission in commands:
                stopping |= command == "stop"
                self._handle(command, submission)
            if self.llm.core.has_work:
                self._step()
            self._metrics = self._snapshot()

    def _handle(self, command: _Command, submission: Submission | None) -> None:
        if command == "start" and submission is not None:
            submission.request_id = self.llm.start(submission.response)
            self._live[submission.request_id] = submission
            self._counts["prompt"] += len(submission.response.request.prompt_token_ids)
            submission._push(submission.response.take_chunks())
        elif command == "cancel" and submission is not None and submission.request_id in self._live:
            self._drop(self._live[submission.request_id])
        elif command == "cancel_all":
            for live in list(self._live.values()):
                self._drop(live, "the server shut down before the request finished")

    def _step(self) -> None:
        try:
            generated = self.llm.step()
        except Exception as exc:  # the engine failed mid-step: end every request rather than the thread
            for live in list(self._live.values()):
                self._drop(live, f"the engine failed: {exc}")
            return
        self._counts["generated"] += generated
        self._recent.append((time.monotonic(), generated))
        for request_id, submission in list(self._live.items()):
            submission._push(submission.response.take_chunks())
            if submission.response.finished:
                del self._live[request_id]
                submission._end()
                self._counts["finished"] += 1

    def _drop(self, submission: Submission, failure: str | None = None) -> None:
        assert submission.request_id is not None, "only started submissions are live"
        self.llm.abort(submission.request_id)
        del self._live[submission.request_id]
        submission._end(failure)

    def _snapshot(self) -> EngineMetrics:
        stats, now = self.llm.stats(), time.monotonic()
        while self._recent and self._recent[0][0] < now - THROUGHPUT_WINDOW_S:
            self._recent.popleft()
        return EngineMetrics(
            running=stats.running,
            waiting=stats.waiting,
            cache_blocks_used=stats.cache_blocks_used,
            cache_blocks_total=stats.cache_blocks_total,
            prefix_cache_queried_tokens=stats.prefix_cache_queried_tokens,
            prefix_cache_hit_tokens=stats.prefix_cache_hit_tokens,
            prompt_tokens_total=self._counts["prompt"],
            generation_tokens_total=self._counts["generated"],
            requests_finished_total=self._counts["finished"],
            preemptions_total=stats.preemptions,
            generation_tokens_per_s=sum(n for _, n in self._recent) / THROUGHPUT_WINDOW_S,
        )
