"""The thread backend: a pool of threads in this process, for I/O-bound work.

Threads share memory, so nothing is pickled, and they release the GIL while they wait
on I/O; CPU-bound pure-Python code does not run in parallel here (use processes).
A thread cannot be stopped from outside: a task past its timeout fails for the caller
with :class:`~corepool.errors.TaskTimeout` at once, a fresh thread takes its place, and
the overrunning thread finishes its task in the background and then exits; its result
is dropped. Nothing waits for such a thread, nor for one still running a task when the
pool is terminated: not ``join``, not Ctrl-C, not the program's exit (daemon threads).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from .._engine.job import CallJob, Job, Piece, StreamJob, start_feeder
from ..errors import BrokenPool, CorepoolError, TaskTimeout
from ..nesting import level
from ..progress import PoolStats, WorkerStats
from .base import Backend, initialize, run_inline

_STOP = object()


class _Watchdog:
    """One thread that fires callbacks at deadlines; a task that finishes first wins."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, list[Any]]] = []
        self._ids = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corepool-watchdog", daemon=True)
        self._thread.start()

    def watch(self, deadline: float, on_expire: Callable[[], None]) -> list[Any]:
        token: list[Any] = ["running", on_expire]
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._ids), token))
            self._cond.notify()
        return token

    def finish(self, token: list[Any]) -> bool:
        """Mark the task finished; False if its deadline already fired."""
        with self._cond:
            if token[0] == "running":
                token[0] = "done"
                return True
            return False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            expired: list[Callable[[], None]] = []
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    while self._heap and (
                        self._heap[0][2][0] != "running" or self._heap[0][0] <= now
                    ):
                        _, _, token = heapq.heappop(self._heap)
                        if token[0] == "running":
                            token[0] = "expired"
                            expired.append(token[1])
                    if expired:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._closed and not expired:
                    return
            for callback in expired:
                callback()


class ThreadBackend(Backend):
    """``workers`` threads taking units of work from one queue."""

    name: ClassVar[str] = "thread"

    def __init__(
        self,
        workers: int,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        **_: Any,
    ) -> None:
        self.workers = workers
        self._initializer = initializer  # run by each thread, as by ThreadPool's
        self._initargs = initargs
        self._broken: BrokenPool | None = None
        self._units: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._level = level() + 1  # of the tasks: a corepool call in them is nested
        # The threads that serve the queue; one whose task overran its timeout leaves
        # (it is nobody's to wait for: shutdown and Ctrl-C do not wait for it).
        self._threads: dict[int, threading.Thread] = {}
        self._running: set[int] = set()  # threads running a task
        self._terminated = False
        self._counters: dict[int, list[float]] = {}
        self._ids = itertools.count()
        self._restarts = 0
        self._closed = False
        self._watchdog: _Watchdog | None = None
        self._jobs: set[Job] = set()
        self._started = time.monotonic()
        for _thread in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        tid = next(self._ids)
        thread = threading.Thread(
            target=self._loop, args=(tid,), name=f"corepool-thread-{tid}", daemon=True
        )
        with self._lock:  # so that close() counts it, and join() sees it started
            if self._closed:
                return
            self._counters[tid] = [0, 0, 0.0, 0]  # tasks, failed, busy seconds, retried
            self._threads[tid] = thread
            thread.start()

    def _loop(self, tid: int) -> None:
        if self._initializer is not None:
            self._initialize()
        while True:
            unit = self._units.get()
            if unit is _STOP:
                return
            job, origin, start, items = unit
            with self._lock:
                stopped = self._terminated
                failure = self._broken
                run = not (stopped or failure or job.cancelled)
                if run:
                    self._running.add(tid)
            if stopped:
                job.fail(CorepoolError("the pool was terminated before this task ran"))
            elif failure is not None:
                job.fail(failure)
            if not run:
                continue
            try:
                on_time = self._run_unit(tid, job, origin, start, items)
            finally:
                with self._lock:
                    self._running.discard(tid)
                    left_behind = tid not in self._threads
            if left_behind or not on_time:
                return  # timed out, or terminated while running: replaced or not needed

    def _initialize(self) -> None:
        """Run the initializer in this thread; if it raises, no task can run here."""
        assert self._initializer is not None
        error = initialize(self._initializer, self._initargs)
        if error is not None:
            with self._lock:
                self._broken = self._broken or error

    def _run_unit(self, tid: int, job: Job, origin: int, start: int, items: list[Any]) -> bool:
        """Run a unit; False if a task of it overran its timeout (it was answered for)."""
        if job.timeout is not None:
            return self._run_watched(tid, job, origin, start, items)
        began = time.perf_counter()
        piece = run_inline(job, origin, start, items, level=self._level, catch=BaseException)
        self._count(tid, piece, time.perf_counter() - began)
        job.deliver(piece)
        return True

    def _run_watched(self, tid: int, job: Job, origin: int, start: int, items: list[Any]) -> bool:
        assert job.timeout is not None
        if self._watchdog is None:
            with self._lock:
                if self._watchdog is None:
                    self._watchdog = _Watchdog()
        for pos, item in enumerate(items):
            index = start + pos
            timeout = job.timeout

            def expire(index: int = index, item: Any = item, timeout: float = timeout) -> None:
                error = TaskTimeout(
                    f"task {index} ran longer than its {timeout:g} s timeout; the thread "
                    "running it cannot be stopped and finishes in the background",
                    timeout,
                )
                job.deliver(Piece(index, [None], {0: error}, origin, [item]))
                with self._lock:
                    self._restarts += 1
                    self._threads.pop(tid, None)
                self._spawn()

            token = self._watchdog.watch(time.monotonic() + timeout, expire)
            began = time.perf_counter()
            piece = run_inline(
                job, origin, index, [item], level=self._level, catch=BaseException
            )
            if not self._watchdog.finish(token):
                return False  # expire() answers for this task and replaces this thread
            self._count(tid, piece, time.perf_counter() - began)
            job.deliver(piece)
        return True

    def _count(self, tid: int, piece: Piece, busy: float) -> None:
        counters = self._counters[tid]
        counters[0] += len(piece.values)
        counters[1] += len(piece.failures)
        counters[2] += busy
        counters[3] += piece.retried

    def run_stream(self, job: StreamJob) -> None:
        self._check_open()
        if job.timeout is not None:
            job.sizer.fixed = 1
        start_feeder(job, lambda origin, start, items: self._units.put((job, origin, start, items)))

    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._check_open()
        self._units.put((job, 0, 0, [(args, kwargs)]))

    def _check_open(self) -> None:
        if self._closed:
            raise CorepoolError("the thread pool is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._units.put(_STOP)

    def terminate(self) -> None:
        # Threads cannot be killed: drop queued work, and leave the running tasks to
        # end in the background, as a timed-out one does (join does not wait for them).
        with self._lock:
            self._terminated = True
            for tid in self._running:
                self._threads.pop(tid, None)
        while True:
            try:
                unit = self._units.get_nowait()
            except queue.Empty:
                break
            if unit is not _STOP:
                unit[0].fail(CorepoolError("the pool was terminated before this task ran"))
        self.close()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        if self._watchdog is not None:
            self._watchdog.close()
        return not any(t.is_alive() for t in threads)

    def stats(self) -> PoolStats:
        now = time.monotonic()
        with self._lock:
            threads = dict(self._threads)
        workers = [
            WorkerStats(
                tid,
                None,
                tid in threads and threads[tid].is_alive(),
                int(c[0]),
                int(c[1]),
                c[2],
                now - self._started,
                int(c[3]),
            )
            for tid, c in sorted(self._counters.items())
        ]
        return PoolStats(self.name, workers, self._restarts)
