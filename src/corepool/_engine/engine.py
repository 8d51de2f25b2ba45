"""The process engine as the rest of corepool sees it: start, run jobs, stop."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from .._tasks.job import CallJob, Job, StreamJob, input_failure_piece, start_feeder
from ..errors import CorepoolError
from ..progress import PoolStats
from ..segments import SegmentPool
from ..serialize import dumps_code, find_unpicklable
from ..sharedmem import code_with_segments, pack
from .calls import function_bytes, queue_calls
from .exits import ExitExplainer
from .model import Action, Chunk
from .startup import (
    check_not_bootstrapping,
    default_start_method,
    fork_first,
    resolve_context,
)
from .state import PoolState, SlotReader
from .supervisor import Supervisor
from .transport import pool_starting

__all__ = ["ProcessEngine", "default_start_method", "function_name", "resolve_context"]

def initializer_blob(initializer: Callable[..., Any], initargs: tuple[Any, ...]) -> Any:
    """The initializer and its arguments as they travel to each worker.

    Pickled together with cloudpickle when possible. Synchronisation objects (a
    ``Lock``, a ``Value``, a ``Queue`` from :func:`corepool.get_context`) pickle only
    while a process is being started, so then the arguments are left to
    multiprocessing, which passes them to each new worker as it starts.
    """
    try:
        return dumps_code((initializer, initargs), "the initializer")
    except Exception:
        return dumps_code(initializer, "the initializer"), initargs


def function_name(fn: Callable[..., Any]) -> str:
    """'the function module.name' for error messages."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"the function {module}.{name}" if module else f"the function {name}"


T = TypeVar("T")

class ProcessEngine:
    """Worker processes, the supervisor thread, and feeder threads for streams."""

    def __init__(
        self,
        workers: int,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        context: BaseContext | None = None,
        start_method: str | None = None,
        thread_limit: int | None = None,
        memory_limit: int | None = None,
    ) -> None:
        check_not_bootstrapping()
        pool_starting()  # (ValueError for an unknown $COREPOOL_TRANSPORT)
        first_context = fork_first(context, start_method)
        self.context = resolve_context(context, start_method)
        init_blob: Any = None
        if initializer is not None:
            init_blob = initializer_blob(initializer, tuple(initargs))
        self.workers = workers
        # Shared memory of arguments the workers are done with, reused for the next ones.
        self.segments = SegmentPool()
        self.state = PoolState(
            workers,
            max_tasks_per_child=max_tasks_per_child,
            pickle_items=lambda items: pack(items, self.segments),
            exit_reason=ExitExplainer(),
        )
        self.supervisor = Supervisor(
            self.context,
            self.state,
            init_blob=init_blob,
            thread_limit=thread_limit,
            memory_limit=memory_limit,
        )
        # Submitted (with their arguments), not yet handed to the supervisor.
        self._calls: collections.deque[tuple[CallJob, Any]] = collections.deque()
        self._calls_pending = False  # a command to take them is queued
        # Like multiprocessing.Pool: the workers exist when the constructor returns.
        self.supervisor.launch(first_context)

    def _add(self, chunks: list[Chunk]) -> None:
        state = self.state
        self.supervisor.call(lambda now: state.add(chunks, now))

    def run_stream(self, job: StreamJob) -> None:
        """Start pulling, pickling and queueing the job's chunks (in a feeder thread)."""
        job.fn_bytes, job.fn_segments = code_with_segments(
            lambda: dumps_code(job.fn, function_name(job.fn))
        )
        self.supervisor.note_levels(job)

        def run_chunk(origin: int, start: int, items: list[Any]) -> None:
            try:
                payload = pack(items, self.segments)
            except Exception:
                self._add(self._split_unpicklable(job, origin, start, items))
                return
            job.sizer.observe_payload(len(items), len(payload))
            self._add([Chunk(job, origin, start, len(items), payload, items=items)])

        start_feeder(job, run_chunk)

    def _split_unpicklable(
        self, job: Job, origin: int, start: int, items: list[Any]
    ) -> list[Chunk]:
        bad = find_unpicklable(items, pack)  # (no pool: these payloads are dropped)
        chunks: list[Chunk] = []
        run_start = 0
        for pos in [*sorted(bad), len(items)]:
            if pos > run_start:
                part = items[run_start:pos]
                chunks.append(
                    Chunk(
                        job,
                        origin,
                        start + run_start,
                        len(part),
                        pack(part, self.segments),
                        items=part,
                    )
                )
            if pos < len(items):
                job.deliver(input_failure_piece(job, origin, start, pos, items[pos], bad[pos]))
            run_start = pos + 1
        return chunks

    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Queue one call. Its arguments are pickled when it goes to a worker, together
        with the calls queued behind it (``calls.py``); one that does not pickle fails
        only its own call."""
        job.fn_bytes, job.fn_segments = function_bytes(job.fn, function_name)
        self._calls.append((job, (args, kwargs)))
        if not self._calls_pending:  # one wake-up of the supervisor per burst of calls
            self._calls_pending = True
            self.supervisor.call(self._add_calls)

    def _add_calls(self, now: float) -> list[Action]:
        # The flag first, then the queue: a call appended after this drain finds the
        # flag down and schedules another (deque appends and pops are atomic).
        self._calls_pending = False
        calls = self._calls
        submitted = [calls.popleft() for _ in range(len(calls))]
        return self.state.add(queue_calls(submitted), now)

    def release(self, job: Job) -> None:
        """The job is over (or abandoned): drop its queued chunks, let workers forget it."""
        state = self.state

        def command(now: float) -> list[Action]:
            if job.cancelled:
                state.cancel(job)
            state.forget(job)
            return []

        self.supervisor.call(command)

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the supervisor has run every command queued before this call."""
        if not self.supervisor.thread.is_alive():
            return
        reached = threading.Event()

        def mark(now: float) -> list[Action]:
            reached.set()
            return []

        if self.supervisor.call(mark):
            reached.wait(timeout)

    def stop_job(self, job: Job) -> None:
        """Cancel ``job`` and stop (and replace) the workers running its tasks."""
        job.cancel()
        state = self.state
        self.supervisor.call(lambda now: state.stop_job(job, now))

    def close(self) -> None:
        """Finish queued work, then let the workers exit."""
        state = self.state
        self.supervisor.call(lambda now: state.close(now))
        self.supervisor.finish()
        self.segments.close()

    def terminate(self) -> None:
        """Stop every worker now; unfinished jobs fail."""
        state = self.state
        error = CorepoolError("the pool was terminated before this task finished")
        self.supervisor.call(lambda now: state.terminate(now, error))
        self.supervisor.finish()
        self.segments.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the supervisor (and so every worker) to end; True if it did."""
        thread = self.supervisor.thread
        thread.join(timeout)
        return not thread.is_alive()

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return self.supervisor.pids()

    def stats(self, backend: str) -> PoolStats:
        """A snapshot of the workers, taken on the supervisor thread (the state's owner)."""
        from .stats import snapshot  # (asked for rarely: not imported as a pool starts)

        return self.inspect(lambda state, now, read_slot: snapshot(state, now, read_slot, backend))

    def inspect(self, look: Callable[[PoolState, float, SlotReader], T]) -> T:
        """``look(state, now, read_slot)``, run on the supervisor thread (the state's
        owner), which waits meanwhile; ``look`` must only read."""
        supervisor = self.supervisor
        taken: list[T] = []
        reached = threading.Event()

        def take(now: float) -> list[Action]:
            taken.append(look(self.state, now, supervisor.read_slot))
            reached.set()
            return []

        if supervisor.call(take):
            # A command queued as the supervisor ends may never run: look again then.
            while not reached.wait(0.05) and supervisor.thread.is_alive():
                pass
        if taken:
            return taken[0]
        supervisor.thread.join()  # it ended: the state is nobody else's now
        return look(self.state, time.monotonic(), supervisor.read_slot)
