"""One function run once on every live worker process, each answer collected.

This is how state kept in a worker across tasks comes back to the caller: the pool's
initializer builds it, tasks update it, and one call per worker returns it
(``Pool.run_on_workers``). Each worker is sent a chunk of its own, queued behind what
it holds already, so the function runs between two tasks, never during one, and sees
everything the tasks before it left. The answers are keyed by worker pid.

A worker that dies before its turn (an earlier task crashed it, or overran its
timeout) gives no answer, and what it held dies with it; its replacement is a fresh
process whose initializer ran again, so its state holds only what tasks did there
since. The pids say which workers answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .._tasks.job import Job, Piece
from .._tasks.styles import CallStyle
from ..errors import CorepoolError
from ..serialize import add_note, dumps_code
from ..sharedmem import code_with_segments, pack
from .model import Action, Chunk, Worker

__all__ = ["Collection", "run_on_workers"]


class Collection:
    """The answers of the workers asked, as they come (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[int] = set()  # worker ids still to answer
        self.values: dict[int, Any] = {}  # pid -> value
        self.errors: list[BaseException] = []
        self._asked = False
        self.done = threading.Event()

    def expect(self, wid: int) -> None:
        with self._lock:
            self._waiting.add(wid)

    def asked(self) -> None:
        """Every worker has been sent its call (there may be none)."""
        with self._lock:
            self._asked = True
            self._check()

    def answer(self, wid: int, pid: int | None, value: Any, error: BaseException | None) -> None:
        with self._lock:
            if wid not in self._waiting:
                return
            self._waiting.discard(wid)
            if error is not None:
                add_note(error, f"corepool: run_on_workers, in the worker with pid {pid}")
                self.errors.append(error)
            elif pid is not None:
                self.values[pid] = value
            self._check()

    def _check(self) -> None:
        if self._asked and not self._waiting:
            self.done.set()


class WorkerCall(Job):
    """``fn(*args, **kwargs)`` on worker ``wid`` only."""

    def __init__(self, fn: Callable[..., Any], collection: Collection, worker: Worker) -> None:
        super().__init__(fn, CallStyle.CALL)
        self.collection = collection
        self.wid = worker.wid
        self.pid = worker.pid
        self._sent = False

    def claim(self) -> bool:
        # The supervisor claims each chunk as it sends it. The first time, it goes to
        # its own worker (``PoolState.pin``); a second time, it was taken from the
        # shared queue after that worker died: it must not run on another one, and
        # that worker gives no answer.
        if not self._sent:
            self._sent = True
            return True
        self.collection.answer(self.wid, None, None, None)
        return False

    def deliver(self, piece: Piece) -> None:
        self.computed.set()
        self.collection.answer(self.wid, self.pid, piece.values[0], piece.failures.get(0))

    def fail(self, exc: BaseException) -> None:
        self.computed.set()
        self.collection.answer(self.wid, self.pid, None, exc)


def run_on_workers(
    engine: Any,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> dict[int, Any]:
    """Run ``fn(*args, **kwargs)`` once on each live worker of ``engine``; pid -> value.

    Raises the first error a worker's call ended with (a note names its pid), and
    ``TimeoutError`` if not every worker answered within ``timeout`` seconds.
    """
    from .engine import function_name

    fn_bytes, fn_segments = code_with_segments(lambda: dumps_code(fn, function_name(fn)))
    item = (tuple(args), dict(kwargs))
    payload = pack([item])
    collection = Collection()
    state = engine.state

    def make(worker: Worker) -> Chunk:
        job = WorkerCall(fn, collection, worker)
        job.fn_bytes, job.fn_segments = fn_bytes, fn_segments
        collection.expect(worker.wid)
        return Chunk(job, 0, 0, 1, payload, items=[item])

    def command(now: float) -> list[Action]:
        try:
            if state.broken is not None:
                collection.errors.append(state.broken)
                return []
            actions: list[Action] = state.pin(make, now)
            return actions
        finally:
            collection.asked()

    supervisor = engine.supervisor
    supervisor.call(command)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not collection.done.is_set():
        if not supervisor.thread.is_alive():
            raise CorepoolError("run_on_workers: the pool was stopped")
        left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError(
                f"run_on_workers: not every worker answered within {timeout:g} s "
                "(a worker runs the function once the task it is running ends)"
            )
        collection.done.wait(left)  # (a second at a time: the pool may be stopped)
    if collection.errors:
        raise collection.errors[0]
    return dict(sorted(collection.values.items()))
