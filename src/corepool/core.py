"""``PoolCore``: jobs on a backend, and their results back, for every public face.

It turns calls into jobs, starts them on the backend, and turns pieces of results back
into values: input order or completion order, ``on_error``, progress, Ctrl-C (which
stops the workers). It keeps the open jobs so that ``close`` / ``join`` and
``shutdown`` can wait for them. :class:`~corepool.pool.Pool`,
:class:`~corepool.executor.Executor` and ``corepool.map`` are thin faces over it.
"""

from __future__ import annotations

import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from ._tasks.job import CallJob, Job, Piece, StreamJob, WaitExpired
from ._tasks.sizing import ChunkSizer, window_size
from ._tasks.styles import CallStyle
from .backends import Backend, create_backend, resolve_backend_name
from .cpus import cpu_count
from .errors import CorepoolError, stdlib_compatible
from .nesting import default_workers, inner_default
from .options import (
    ON_ERROR_CHOICES,
    check_retries,
    check_timeout,
    check_workers,
    warn_many_processes,
)
from .progress import PoolStats, make_progress
from .streams import Batches, Pieces, ResultBatch, batches_of

__all__ = [
    "ON_ERROR_CHOICES",
    "PROCESS_ONLY_OPTIONS",
    "Pieces",
    "PoolCore",
    "ResultBatch",
    "Values",
    "WaitExpired",
    "parse_memory",
]

#: Options that only worker processes can honour: a pool given one of them keeps the
#: process backend even inside a task (see :mod:`corepool.nesting`).
PROCESS_ONLY_OPTIONS = (
    "context",
    "start_method",
    "max_tasks_per_child",
    "memory_limit",
)


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def parse_memory(limit: int | str | None) -> int | None:
    """Bytes from ``1_000_000``, ``"512MB"``, ``"2GB"``, ``"1.5GiB"``; None stays None."""
    if limit is None:
        return None
    if isinstance(limit, int):
        if limit <= 0:
            raise ValueError(f"worker_memory_limit must be positive, got {limit}")
        return limit
    text = str(limit).strip().upper().replace(" ", "")
    units = {
        "KIB": 1024,
        "MIB": 1024**2,
        "GIB": 1024**3,
        "TIB": 1024**4,
        "KB": 1000,
        "MB": 1000**2,
        "GB": 1000**3,
        "TB": 1000**4,
        "K": 1024,
        "M": 1024**2,
        "G": 1024**3,
        "B": 1,
    }
    number, factor = text, 1
    for unit, unit_factor in units.items():
        if text.endswith(unit):
            number, factor = text[: -len(unit)], unit_factor
            break
    try:
        value = float(number)
    except ValueError:
        raise ValueError(
            f"worker_memory_limit {limit!r} is not a size: use bytes or a string like '2GB'"
        ) from None
    if value <= 0:
        raise ValueError(f"worker_memory_limit must be positive, got {limit!r}")
    return int(value * factor)


class _FaceCallJob(CallJob):
    """A call whose failures reach its Future as the face's stdlib counterpart raises them.

    ``finished`` (the pool's bookkeeping) is called once its Future is settled, or once
    the call is dropped because its Future was cancelled: called by the job rather than
    as a done-callback of the Future, which cost a weak method, a closure and a lock
    per call.
    """

    face: str | None = None
    finished: Callable[[CallJob], None] | None = None

    def deliver(self, piece: Piece) -> None:
        if piece.failures:
            piece.failures = {
                pos: stdlib_compatible(error, self.face) for pos, error in piece.failures.items()
            }
        super().deliver(piece)
        self._settled()

    def fail(self, exc: BaseException) -> None:
        super().fail(stdlib_compatible(exc, self.face))
        self._settled()

    def claim(self) -> bool:
        if super().claim():
            return True
        self._settled()  # cancelled while queued: dropped here
        return False

    def _settled(self) -> None:
        finished, self.finished = self.finished, None
        if finished is not None:
            finished(self)


class PoolCore:
    """A backend plus the bookkeeping every face needs: options, open jobs, shutdown.

    ``face`` (``"pool"``, ``"executor"`` or None) says whose stdlib errors the failures
    must also be (see :func:`corepool.errors.stdlib_compatible`).
    """

    #: The recorder of a :func:`corepool.watch` (see ``corepool._watch``): set on one
    #: core, or here on the class for every core; None, one test per job, when off.
    watcher: Any = None

    def __init__(
        self,
        workers: int,
        backend: str | None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        face: str | None = None,
        **backend_options: Any,
    ) -> None:
        workers = check_workers(workers) or default_workers()
        if backend is None and not any(backend_options.get(o) for o in PROCESS_ONLY_OPTIONS):
            nested = inner_default(workers)  # Pool() / Executor() inside a task
            if nested is not None:
                backend, workers = nested[0], nested[1] or workers
        self.workers = workers
        self.backend_name = resolve_backend_name(backend)
        if self.backend_name == "process":
            warn_many_processes(workers, cpu_count())
        self.task_timeout = check_timeout(task_timeout, "task_timeout")
        self.retries = check_retries(retries)
        self.retry_on = retry_on
        self._lock = threading.Lock()
        self._open_jobs: set[Job] = set()
        self.face = face
        # Weak keys: a finished call must not keep its function (a bound method keeps
        # its object) alive.
        self._call_sizers: weakref.WeakKeyDictionary[Any, ChunkSizer] = (
            weakref.WeakKeyDictionary()
        )
        self._builtin_sizers: dict[Any, ChunkSizer] = {}
        self._last_sizer: tuple[weakref.ref[Any], ChunkSizer] | None = None
        self.closed = False
        self.terminated = False
        self.backend: Backend = create_backend(self.backend_name, workers, **backend_options)

    # Jobs ---------------------------------------------------------------------------
    # (No lock around adding and discarding: each is one atomic set operation, and
    # readers copy the set with list(), also atomic; a lock here cost two per call.)
    def _opened(self, job: Job) -> None:
        self._open_jobs.add(job)

    def _finished(self, job: Job) -> None:
        self._open_jobs.discard(job)
        if job.cache_function or job.cancelled:
            # Workers keep a stream's function; a cancelled call may still be queued.
            self.backend.release(job)

    def stream_job(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        style: CallStyle,
        *,
        chunksize: int | None,
        timeout: float | None,
        retries: int | None,
        retry_on: tuple[type[BaseException], ...] | None = None,
    ) -> StreamJob:
        """Create and start a stream job on the backend."""
        if not callable(fn):
            raise TypeError(f"the function to run must be callable, got {type(fn).__name__}")
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be a positive integer or None, got {chunksize!r}")
        slots = self.backend.capacity()  # a cluster's size, not this machine's
        job = StreamJob(
            fn,
            iterable,
            style,
            window=window_size(slots),
            timeout=self._timeout(timeout),
            retries=self.retries if retries is None else check_retries(retries),
            retry_on=self.retry_on if retry_on is None else retry_on,
            sizer=ChunkSizer(slots, chunksize, _length(iterable)),
        )
        if self.watcher is not None:  # before the first piece can be delivered
            self.watcher.started_job(self, job, iterable)
        self._opened(job)
        try:
            self.backend.run_stream(job)
        except BaseException:
            job.cancel()
            self._finished(job)
            raise
        if self.closed:
            job.unbound()
        return job

    def pieces(
        self,
        job: StreamJob,
        *,
        ordered: bool,
        progress: Any = None,
        iterable: Any = None,
        keeps_all: bool = False,
    ) -> Pieces:
        """The job's pieces, annotated, with progress; Ctrl-C stops the pool."""
        bar = make_progress(progress, iterable) if progress else None
        return Pieces(self, job.pieces(ordered, keeps_all), bar)

    def batches(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        wake: float,
        timeout: float | None = None,
        retries: int | None = None,
        most: int = 8192,
    ) -> Batches:
        """Run ``fn`` over ``iterable`` and give the outcomes in batches, as they finish.

        Each batch holds the tasks that finished since the last one (up to about
        ``most``), by input index; a batch with no outcomes at all (``woke``) comes when
        nothing finished for ``wake`` seconds, so the caller gets a turn to do its own
        work while slow tasks run. The job starts here: an argument that cannot be sent
        raises at once. Closing the iterator (or Ctrl-C) stops the job; what had come
        back by then is :meth:`~corepool.streams.Batches.arrived`.
        """
        job = self.stream_job(fn, iterable, CallStyle.SINGLE, chunksize=None, timeout=timeout,
                              retries=retries)
        return Batches(job, batches_of(self.pieces(job, ordered=False), wake, most))

    def values(self, pieces: Iterator[Piece], on_error: str) -> Iterator[Any]:
        """Flatten pieces into values, applying ``on_error``.

        With ``"raise"``, a failed task raises its error in its place, and the next
        ``next()`` goes on with the tasks after it, as ``multiprocessing``'s ``imap``
        does: one failure does not end the iteration. A value handed out is no longer
        referenced here, so the caller decides how long it lives.
        """
        return Values(pieces, on_error, self.face)

    def collect(self, pieces: Iterator[Piece], on_error: str) -> list[Any]:
        """All values in a list; a piece without failures is copied in one go."""
        out: list[Any] = []
        try:
            for piece in pieces:
                if piece.failures:
                    out.extend(Values(iter([piece]), on_error, self.face))
                else:
                    out.extend(piece.values)
                    piece.values.clear()
        except BaseException:
            # Stop the job now: the error's traceback keeps the pieces alive (in a
            # cycle, through the failed piece), and with them the job's feeder thread.
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            raise
        return out

    def call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Future[Any]:
        """Run one call; its outcome in a ``concurrent.futures.Future``. ``args`` and
        ``kwargs`` are kept as they are: the faces pass objects of their own."""
        if not callable(fn):
            raise TypeError(f"the function to run must be callable, got {type(fn).__name__}")
        future: Future[Any] = Future()
        job = _FaceCallJob(
            fn,
            future,
            timeout=self._timeout(timeout),
            retries=self.retries if retries is None else check_retries(retries),
            retry_on=self.retry_on,
            sizer=self._call_sizer(fn),
        )
        job.face = self.face
        job.finished = self._call_done
        self._opened(job)
        if self.watcher is not None:
            self.watcher.called(self, job, future, args, kwargs)
        try:
            self.backend.run_call(job, args, kwargs)
        except BaseException:
            future.cancel()
            self._finished(job)
            raise
        return future

    def run_on_workers(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[Any, Any]:
        """``fn(*args, **kwargs)`` once on every live worker; its value per worker."""
        if not callable(fn):
            raise TypeError(f"the function to run must be callable, got {type(fn).__name__}")
        return self.backend.run_on_workers(fn, args, kwargs)

    def _timeout(self, timeout: Any) -> float | None:
        """A call's own timeout if it gives one, else the pool's ``task_timeout``."""
        return self.task_timeout if timeout is None else check_timeout(timeout)

    def _call_sizer(self, fn: Callable[..., Any]) -> ChunkSizer:
        """One duration estimate per function, shared by its calls: once its calls are
        known to be short, a worker may hold the next one behind the running one."""
        last = self._last_sizer
        if last is not None and last[0]() is fn:  # the same function as the call before
            return last[1]
        key = fn.__func__ if isinstance(fn, types.MethodType) else fn
        # A builtin holds no user object, and cannot be weakly referenced.
        table: Any = self._builtin_sizers if isinstance(key, types.BuiltinFunctionType) else (
            self._call_sizers
        )
        try:
            sizer: ChunkSizer | None = table.get(key)
            if sizer is None:
                sizer = table[key] = ChunkSizer(1)
        except TypeError:  # unhashable, or no weak references: no sharing
            return ChunkSizer(1)
        if key is fn and table is self._call_sizers:
            self._last_sizer = (weakref.ref(fn), sizer)
        return sizer

    def _call_done(self, job: CallJob) -> None:
        # (A call with an outcome set ``computed`` first: no lock taken to ask its Future.)
        if not job.computed.is_set() and job.future.cancelled():
            job.cancel()
            # It will never reach a worker: tell the waiters (as_completed, wait) now,
            # as an executor does when it takes a cancelled Future off its queue.
            try:
                job.future.set_running_or_notify_cancel()
            except RuntimeError:
                pass  # (the supervisor did, as it dropped the call)
        self._finished(job)

    # Shutdown -----------------------------------------------------------------------
    def close(self) -> None:
        """No new work; what was submitted still runs (streams no longer wait for consumers)."""
        with self._lock:
            self.closed = True
            jobs = list(self._open_jobs)
        for job in jobs:
            job.unbound()

    def cancel_pending(self) -> None:
        """Cancel calls not yet started and stop pulling input for streams.

        What was submitted before had its chance to start first (as in
        ``concurrent.futures``, where up to a worker's share is already running).
        """
        self.backend.settle()
        with self._lock:
            jobs = list(self._open_jobs)
        for job in jobs:
            if isinstance(job, CallJob):
                if job.future.cancel() and isinstance(job, _FaceCallJob):
                    job._settled()
            else:
                job.cancel()
                self.backend.release(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every task of every open job has a result (read or not)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            jobs = list(self._open_jobs)
        for job in jobs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.computed.wait(remaining):
                return False
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for open jobs, then for the backend to stop."""
        if not self.terminated:
            self.wait_idle(timeout)
        self.backend.close()
        return self.backend.join(timeout)

    def terminate(self) -> None:
        """Stop the backend now; open jobs fail."""
        with self._lock:
            if self.terminated:
                return
            self.closed = self.terminated = True
            jobs = list(self._open_jobs)
            self._open_jobs.clear()
        error = CorepoolError("the pool was terminated before this task finished")
        for job in jobs:
            unfinished = not job.computed.is_set()
            job.cancel()
            if unfinished:
                # Also a job with no task in the backend (its feeder waiting for the
                # consumer): nothing else would ever wake a caller waiting for it.
                job.fail(error)
        self.backend.terminate()
        self.backend.join(5.0)

    def stats(self) -> PoolStats:
        """Per-worker counters of the backend."""
        return self.backend.stats()

    def pids(self) -> list[int]:
        """Process ids of the backend's live worker processes (none for threads)."""
        return self.backend.pids()

class Values:
    """The values of a job's pieces, one at a time; a raised failure does not end it.

    (A generator cannot do this: once it raised, it is finished, and the job with it.)
    Values are popped from their piece as they are handed out, so none stays referenced
    here once the caller has it.
    """

    __slots__ = ("_face", "_on_error", "_piece", "_pieces", "_pos")

    def __init__(self, pieces: Iterator[Piece], on_error: str, face: str | None = None) -> None:
        self._pieces = pieces
        self._on_error = on_error
        self._face = face
        self._piece: Piece | None = None  # the piece being read, from position _pos
        self._pos = 0

    def __iter__(self) -> Values:
        return self

    def __next__(self) -> Any:
        while True:
            piece = self._piece
            if piece is None:
                piece = next(self._pieces)  # WaitExpired leaves this iterator as it was
                piece.values.reverse()  # read by popping from the end
                self._piece, self._pos = piece, 0
            values = piece.values
            if not values:
                self._piece = None
                continue
            pos = self._pos
            self._pos = pos + 1
            value = values.pop()
            if not piece.failures:
                return value
            error = piece.failures.pop(pos, None)
            if error is None:
                return value
            error = stdlib_compatible(error, self._face)
            if self._on_error == "raise":
                raise error
            if self._on_error == "return":
                return error

    def close(self) -> None:
        """Stop: the job's pieces are not wanted any more."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

