"""Where the instances of a run or a grading go: threads on this machine, or tasks on a Ray cluster.

Both executors call the same per-instance function (`InstanceWork`) and yield its results as each finishes,
with at most `workers` instances at once. On Ray each instance is a task of one CPU on whichever node has one
free; the function builds (or finds) the environment in that node's cache and makes the testbed there, so the
paths of the mirrors and the cache must exist on every node. The progress events an instance emits (started,
each model call) travel back through a queue actor to the driver's sink as they happen. Leaving early (Ctrl-C)
stops the work in flight either way: locally the `Cancellation` tells it to stop; on Ray `ray.cancel` raises
KeyboardInterrupt in each task, which the task turns into a `Cancellation` of its own, so tests and the agent's
shell are killed as they are locally. Ray is an optional extra (`kcode[cluster]`), imported only when asked for.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from swe_harness.errors import HarnessError
from swe_harness.events import HarnessEvent, HarnessSink
from swe_harness.workers import Cancellation, map_unordered

Item = TypeVar("Item")
Result = TypeVar("Result")

ExecutorKind = Literal["local", "ray"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("local", "ray")

InstanceWork = Callable[[Item, HarnessSink, Cancellation], Result]
"""The per-instance function: its item, the sink for the progress events it emits, and the cancellation it
obeys. For Ray it must pickle: a module-level function, or a `functools.partial` of one."""

_POLL_S = 0.2
"""How often the Ray driver forwards progress events while it waits, and a task looks for its cancellation."""
_CONNECT_S = 10.0
"""How long the cluster's address may take to accept a connection."""
_STOP_S = 60.0
"""How long cancelled Ray tasks get to kill their tests and end before they are killed themselves."""


class Executor(Protocol):
    def map_unordered(self, work: InstanceWork[Item, Result], items: Sequence[Item], workers: int,
                      emit: HarnessSink, cancellation: Cancellation) -> Iterator[Result]:
        """Yield `work(item, ...)` for every item as each finishes, at most `workers` at once; when the consumer
        stops early, the work in flight is cancelled and waited for."""
        ...


class LocalExecutor:
    """Threads on this machine (`workers.map_unordered`); the work shares the caller's sink and cancellation."""

    def map_unordered(self, work: InstanceWork[Item, Result], items: Sequence[Item], workers: int,
                      emit: HarnessSink, cancellation: Cancellation) -> Iterator[Result]:
        return map_unordered(lambda item: work(item, emit, cancellation), items, workers, cancellation)


class RayExecutor:
    """One Ray task per item on the cluster this process is connected to; `workers` caps the tasks in flight."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray

    @classmethod
    def connect(cls, address: str | None) -> RayExecutor:
        """Join the cluster at `address` (`auto`, `ray://host:10001`, `host:6379`), or start a Ray instance on
        this machine when None; a process already connected (a test, a notebook) keeps its connection."""
        try:
            import ray
        except ImportError:
            raise HarnessError("--executor ray needs Ray: pip install 'kcode[cluster]'") from None
        if not ray.is_initialized():
            _require_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            except Exception as exc:  # Ray raises ConnectionError, ValueError or its own errors here
                where = f"at {address}" if address else "on this machine"
                raise HarnessError(f"cannot start or reach a Ray cluster {where}: {_first_line(exc)}") from None
        return cls(ray)

    def map_unordered(self, work: InstanceWork[Item, Result], items: Sequence[Item], workers: int,
                      emit: HarnessSink, cancellation: Cancellation) -> Iterator[Result]:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return self._map(work, items, workers, emit, cancellation)

    def _map(self, work: InstanceWork[Item, Result], items: Sequence[Item], workers: int, emit: HarnessSink,
             cancellation: Cancellation) -> Iterator[Result]:
        from ray.util.queue import Queue

        ray = self._ray
        events = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(num_cpus=1)(_run_task)
        waiting = list(reversed(items))
        running: list[Any] = []
        finished = False
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    running.append(task.remote(work, waiting.pop(), _QueueSink(events)))
                done, running = ray.wait(running, num_returns=1, timeout=_POLL_S)
                _forward(events, emit)
                for ref in done:
                    yield self._result(ref)
            finished = True
        finally:
            if not finished:
                cancellation.cancel()
                self._stop(running)
            ray.kill(events.actor)

    def _result(self, ref: Any) -> Any:
        """The task's result; a task Ray lost (its node or worker died, after Ray's retries) stops the run."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:
            raise HarnessError(f"a Ray task was lost ({_first_line(exc)}); finished instances are kept, rerun the same "
                               f"command to resume") from None

    def _stop(self, running: list[Any]) -> None:
        """Cancel the tasks in flight and wait for them to clean up; kill those that do not end in time."""
        if not running:
            return
        for ref in running:
            self._ray.cancel(ref)
        _, stuck = self._ray.wait(running, num_returns=len(running), timeout=_STOP_S)
        for ref in stuck:
            self._ray.cancel(ref, force=True)


def make_executor(kind: str, ray_address: str | None = None) -> Executor:
    """The executor `--executor kind [--ray-address ADDR]` asks for."""
    if kind == "local":
        if ray_address is not None:
            raise HarnessError("--ray-address needs --executor ray")
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor.connect(ray_address)
    raise HarnessError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTOR_KINDS)}")


@dataclass(frozen=True)
class _QueueSink:
    """The sink a Ray task emits into: each event goes to the driver's queue at once."""

    queue: Any

    def __call__(self, event: HarnessEvent) -> None:
        self.queue.put(event)


def _require_reachable(address: str | None) -> None:
    """Fail at once on a cluster address nothing listens at: Ray itself would keep retrying for minutes."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_S).close()
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot reach the Ray cluster at {address}: {exc}") from None


def _first_line(exc: Exception) -> str:
    """Ray's messages run to many lines; the CLI prints one."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _forward(events: Any, emit: HarnessSink) -> None:
    pending = events.qsize()
    if pending:
        for event in events.get_nowait_batch(pending):
            emit(event)


def _run_task(work: InstanceWork[Item, Result], item: Item, emit: HarnessSink) -> Result:
    """The body of a Ray task: `work` on a thread while this, the task's main thread, waits in short slices.

    `ray.cancel` raises KeyboardInterrupt in the main thread, and only between two bytecodes: a wait without a
    timeout would never see it. Caught, it cancels the work (killing its tests or the agent's shell), which is
    waited for, so no process of the instance outlives the task.
    """
    cancellation = Cancellation()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kcode-ray-task") as pool:
        future = pool.submit(work, item, emit, cancellation)
        try:
            while not future.done():
                wait([future], timeout=_POLL_S)
        except KeyboardInterrupt:
            cancellation.cancel()
            raise
        return future.result()
