"""The thread backend: a pool of threads in this process, for I/O-bound work.

Threads share memory, so nothing is pickled, and they release the GIL while they wait
on I/O; CPU-bound pure-Python code does not run in parallel here (use processes).
A thread cannot be stopped from outside: a task past its timeout fails for the caller
with :class:`~corepool.errors.TaskTimeout` at once (or, while its ``retries`` allow, runs
again, as on every backend), a fresh thread takes its place, and the overrunning thread
finishes its task in the background and then exits; its result is dropped. A job
stopped while it runs (an ``amap`` cancelled: :meth:`ThreadBackend.stop_job`) leaves
its running threads the same way. Nothing
waits for such a thread, nor for one still running a task when the pool is
terminated: not ``join``, not Ctrl-C, not the program's exit (daemon threads).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from .._tasks.job import CallJob, Job, Piece, StreamJob, start_feeder
from .._tasks.rules import may_retry
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
        self._running: dict[int, Job] = {}  # threads running a task: whose
        self._terminated = False
        self._counters: dict[int, list[float]] = {}
        self._ids = itertools.count()
        self._restarts = 0
        self._closed = False
        self._watchdog: _Watchdog | None = None
        self._started = time.monotonic()
        for _thread in range(workers):
            self._spawn()

    def _spawn(self, first: Any = None) -> None:
        """Start a thread; ``first``: a unit it runs before it takes any from the queue
        (a task retried after its timeout: it runs even when the pool is closing)."""
        tid = next(self._ids)
        with self._lock:  # so that close() counts it, and join() sees it started
            if self._closed and first is None:
                return
            counted = not self._closed  # close() queues a _STOP for it
            thread = threading.Thread(
                target=self._loop,
                args=(tid, first, counted),
                name=f"corepool-thread-{tid}",
                daemon=True,
            )
            self._counters[tid] = [0, 0, 0.0, 0]  # tasks, failed, busy seconds, retried
            self._threads[tid] = thread
            thread.start()

    def _loop(self, tid: int, first: Any, counted: bool) -> None:
        if self._initializer is not None:
            self._initialize()
        while True:
            unit, first = (self._units.get(), None) if first is None else (first, None)
            if unit is _STOP:
                return
            job, origin, start, items, attempt = unit
            with self._lock:
                stopped = self._terminated
                failure = self._broken
                run = not (stopped or failure or job.cancelled)
                if run:
                    self._running[tid] = job
            if stopped:
                job.fail(CorepoolError("the pool was terminated before this task ran"))
            elif failure is not None:
                job.fail(failure)
            if run:
                try:
                    on_time = self._run_unit(tid, job, origin, start, items, attempt)
                finally:
                    with self._lock:
                        self._running.pop(tid, None)
                        left_behind = tid not in self._threads
                if left_behind or not on_time:
                    return  # timed out, stopped or terminated while running: replaced
            if not counted:
                return  # started for one retry after close(): no _STOP comes for it
            del unit, job, items  # wait for the next task holding nothing of this one

    def _initialize(self) -> None:
        """Run the initializer in this thread; if it raises, no task can run here."""
        assert self._initializer is not None
        error = initialize(self._initializer, self._initargs)
        if error is not None:
            with self._lock:
                self._broken = self._broken or error

    def _run_unit(
        self, tid: int, job: Job, origin: int, start: int, items: list[Any], attempt: int
    ) -> bool:
        """Run a unit; False if a task of it overran its timeout (it was answered for)."""
        if job.timeout is not None:
            return self._run_watched(tid, job, origin, start, items, attempt)
        began = time.perf_counter()
        piece = run_inline(job, origin, start, items, level=self._level, catch=BaseException)
        self._count(tid, piece, time.perf_counter() - began)
        job.deliver(piece)
        return True

    def _run_watched(
        self, tid: int, job: Job, origin: int, start: int, items: list[Any], attempt: int
    ) -> bool:
        """Run each task under the watchdog, one attempt at a time: a task past its
        deadline is answered for by :meth:`_expire`, here a task that failed on time
        is retried under the same rules."""
        assert job.timeout is not None
        if self._watchdog is None:
            with self._lock:
                if self._watchdog is None:
                    self._watchdog = _Watchdog()
        for pos, item in enumerate(items):
            index = start + pos
            tries = attempt
            while True:
                expire = functools.partial(self._expire, tid, job, origin, index, [item], tries)
                token = self._watchdog.watch(time.monotonic() + job.timeout, expire)
                began = time.perf_counter()
                piece = run_inline(
                    job, origin, index, [item], level=self._level, catch=BaseException, retries=0
                )
                if not self._watchdog.finish(token):
                    return False  # _expire() answers for this task and replaces this thread
                failure = piece.failures.get(0)
                if failure is not None and may_retry(
                    failure, tries, job.retries, job.retry_on, job.cancelled
                ):
                    tries += 1
                    continue
                piece.retried = tries - attempt
                self._count(tid, piece, time.perf_counter() - began)
                job.deliver(piece)
                break
            attempt = 0
        return True

    def _expire(
        self, tid: int, job: Job, origin: int, index: int, items: list[Any], tries: int
    ) -> None:
        """Task ``index`` ran past its deadline: its thread is left to finish it in the
        background, a fresh one takes its place, and the task fails with
        :class:`TaskTimeout` or, while its retries allow, runs again on the fresh one."""
        assert job.timeout is not None
        error = TaskTimeout(
            f"task {index} ran longer than its {job.timeout:g} s timeout; the thread "
            "running it cannot be stopped and finishes in the background",
            job.timeout,
        )
        retry = may_retry(error, tries, job.retries, job.retry_on, job.cancelled)
        with self._lock:
            self._restarts += 1
            self._threads.pop(tid, None)
            self._counters[tid][3 if retry else 1] += 1
        if retry:
            self._spawn((job, origin, index, items, tries + 1))
            return
        job.deliver(Piece(index, [None], {0: error}, origin, items))
        self._spawn()

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
        start_feeder(
            job, lambda origin, start, items: self._units.put((job, origin, start, items, 0))
        )

    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._check_open()
        self._units.put((job, 0, 0, [(args, kwargs)], 0))

    def stop_job(self, job: Job) -> None:
        """Cancel ``job``: its units not started never run. A thread running one of its
        tasks cannot be stopped: as after a timeout, it is left to finish in the
        background (its results dropped) and a fresh thread takes its place."""
        job.cancel()
        with self._lock:
            behind = [tid for tid, running in self._running.items() if running is job]
            for tid in behind:
                self._threads.pop(tid, None)
                self._restarts += 1
        for _tid in behind:
            self._spawn()
        self.release(job)

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
