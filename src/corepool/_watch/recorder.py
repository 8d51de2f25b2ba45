"""What a watched pool has done: its jobs, their progress and rate, its failures.

:class:`Recorder` is fed by :class:`~corepool.core.PoolCore` while a watch is on
(``PoolCore.watcher``): when a job starts, as each piece of results is read, when the
job ends, and as each single call finishes. It keeps counters, not results, so
watching a job of millions of tasks costs a few additions per piece (a piece holds a
chunk of tasks). Failures are kept (the latest :data:`FAILURES_KEPT`) with their kind,
type, message, task index and a short summary of their input, cut short here.
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any

from .workers import describe

__all__ = ["FAILURES_KEPT", "JobRecord", "Recorder"]

FAILURES_KEPT = 200
JOBS_KEPT = 20  # finished jobs still listed
MESSAGE_CHARS = 2_000
TRACEBACK_CHARS = 20_000
RATE_WINDOW = 10.0  # seconds of recent progress the rate is measured on


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more)"


def failure_kind(error: BaseException) -> str:
    """``timeout``, ``crash``, ``serialization`` or ``exception``."""
    from ..errors import SerializationError, TaskTimeout, WorkerCrashed

    if isinstance(error, TaskTimeout):
        return "timeout"
    if isinstance(error, WorkerCrashed):
        return "crash"
    if isinstance(error, SerializationError):
        return "serialization"
    return "exception"


def _function_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__name__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def _shown(failure: dict[str, Any]) -> dict[str, Any]:
    trace = failure["traceback"]
    if isinstance(trace, BaseException):
        trace = "".join(traceback.format_exception(trace))
    return {**failure, "traceback": _cut(trace or "", TRACEBACK_CHARS)}


class JobRecord:
    """One job (a map, an imap, ...; or a pool's single calls, all in one record)."""

    def __init__(self, number: int, name: str, total: int | None, core: Any) -> None:
        self.number, self.name, self.total = number, name, total
        self.pool = id(core)
        self.done = self.failed = 0
        self.started = time.monotonic()
        self.ended: float | None = None
        self.samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def add(self, done: int, failed: int, now: float) -> None:
        """``done`` more tasks finished, ``failed`` of them failed."""
        self.done += done
        self.failed += failed
        if now - self.samples[-1][0] >= 0.25:
            self.samples.append((now, self.done))
            while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
                self.samples.popleft()

    def rate(self, now: float) -> float | None:
        """Tasks per second: over the last RATE_WINDOW seconds while it runs, over its
        whole life once it ended."""
        if self.ended is not None:
            span = self.ended - self.started
            return self.done / span if span > 0 and self.done else None
        first_time, first_done = self.samples[0]
        span = now - first_time
        return (self.done - first_done) / span if span > 0.2 else None

    def state(self) -> str:
        """``running``, ``ended``, or ``waiting`` (single calls, all answered)."""
        if self.ended is not None:
            return "ended"
        return "waiting" if self.total is not None and self.done >= self.total else "running"

    def as_dict(self, now: float) -> dict[str, Any]:
        """JSON-ready."""
        rate = self.rate(now)
        left = None if self.total is None else max(0, self.total - self.done)
        return {"job": self.number, "function": self.name, "pool": self.pool,
                "done": self.done, "failed": self.failed, "total": self.total,
                "elapsed": (self.ended or now) - self.started,
                "rate": rate, "state": self.state(),
                "eta": left / rate if rate and left is not None and self.ended is None
                else None}


class Recorder:
    """Jobs and failures of the pools being watched (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, JobRecord] = {}  # by the engine's job id
        self._calls: dict[int, JobRecord] = {}  # by pool
        self._ended: deque[JobRecord] = deque(maxlen=JOBS_KEPT)
        self._numbers = 0
        self.cores: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES_KEPT)
        self.failed_by_kind: dict[str, int] = {}
        self.done = self.failed = 0  # every task seen, also of jobs no longer listed
        self.started = time.time()

    def _new(self, name: str, total: int | None, core: Any) -> JobRecord:
        self._numbers += 1
        self.cores[id(core)] = core
        return JobRecord(self._numbers, name, total, core)

    # Called by PoolCore ----------------------------------------------------------
    def started_job(self, core: Any, job: Any, iterable: Iterable[Any]) -> None:
        """A stream job started on ``core``: its pieces are counted as they are
        delivered (as tasks finish, not as the caller reads them, which in input
        order may wait behind one slow task)."""
        try:
            total: int | None = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
        with self._lock:
            self._jobs[job.id] = self._new(_function_name(job.fn), total, core)
        # The job's own deliver, wrapped on this instance; through a weak reference,
        # so that the wrapper does not keep the job alive in a cycle.
        ref, deliver, job_id = weakref.ref(job), type(job).deliver, job.id

        def watched(piece: Any) -> None:
            target = ref()
            if target is None:
                return
            try:
                self.piece(job_id, target, piece)
            finally:
                deliver(target, piece)

        job.deliver = watched

    def piece(self, job_id: int, job: Any, piece: Any) -> None:
        """A piece of results of the job was delivered."""
        count = len(piece.values)
        if not count:
            return
        now = time.monotonic()
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                return
            record.add(count, len(piece.failures), now)
            self.done += count
            for pos, error in piece.failures.items():
                value = piece.inputs[pos] if piece.inputs is not None else None
                self._failed(record, piece.start + pos, error, job, value,
                             piece.inputs is not None)

    def ended_job(self, job: Any) -> None:
        """The job's results have all been read (or it was given up)."""
        with self._lock:
            record = self._jobs.pop(job.id, None)
            if record is not None:
                record.ended = time.monotonic()
                self._ended.append(record)

    def called(self, core: Any, job: Any, future: Any, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> None:
        """A single call (``submit``, ``apply_async``) was queued on ``core``."""
        with self._lock:
            record = self._calls.get(id(core))
            if record is None:
                record = self._calls[id(core)] = self._new("single calls", None, core)
            record.total = (record.total or 0) + 1

        def done(future: Any) -> None:
            error = None if future.cancelled() else future.exception()
            with self._lock:
                record.add(1, error is not None, time.monotonic())
                self.done += 1
                if error is not None:
                    self._failed(record, record.done - 1, error, job, (args, kwargs), True)

        future.add_done_callback(done)

    # Reading --------------------------------------------------------------------
    def _failed(self, record: JobRecord, index: int, error: BaseException, job: Any,
                value: Any, known: bool) -> None:
        kind = failure_kind(error)
        self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1
        self.failed += 1
        remote = getattr(error, "type_name", None)  # a TaskError's remote type
        # Formatted when shown: a job with many failures pays only for the kept ones.
        trace = getattr(error, "traceback_text", None) or error.__cause__
        self.failures.append({
            "job": record.number, "function": record.name, "task": index, "kind": kind,
            "type": str(remote or type(error).__name__),
            "message": _cut(str(error), MESSAGE_CHARS),
            "input": describe(job, value) if known else "?",
            "traceback": trace,
        })

    def view(self) -> dict[str, Any]:
        """Everything the page shows, JSON-ready."""
        now = time.monotonic()
        with self._lock:
            records = [*self._ended, *self._jobs.values(), *self._calls.values()]
            jobs = sorted((r.as_dict(now) for r in records), key=lambda j: j["job"])
            failures = [_shown(failure) for failure in self.failures]
            by_kind = dict(sorted(self.failed_by_kind.items()))
            done, failed = self.done, self.failed
        running = [j for j in jobs if j["state"] == "running"]
        return {
            "generated": time.time(),
            "elapsed": time.time() - self.started,
            "done": done,
            "failed": failed,
            "failed_by_kind": by_kind,
            "rate": sum(j["rate"] or 0 for j in running) if running else None,
            "running": len(running),
            "jobs": jobs,
            "failures": failures[::-1],  # the latest first
        }
