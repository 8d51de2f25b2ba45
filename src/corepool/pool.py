"""``Pool``: the ``multiprocessing.Pool``-compatible face, and the core the other faces share.

:class:`PoolCore` turns calls into jobs on a backend and results back into values:
input order or completion order, ``on_error``, progress, Ctrl-C. :class:`Pool` puts the
``multiprocessing.Pool`` API on it; :class:`~corepool.executor.Executor` puts the
``concurrent.futures`` one; :func:`corepool.map` uses a reusable default ``Pool``.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any

from ._engine import protocol as p
from ._engine.dispatch import ChunkSizer, window_size
from ._engine.job import TIMED_OUT, CallJob, Job, Piece, StreamJob
from .backends import Backend, create_backend, resolve_backend_name
from .cpus import cpu_count
from .progress import PoolStats, make_progress

__all__ = ["AsyncResult", "IMapIterator", "Pool", "PoolCore"]

ON_ERROR_CHOICES = ("raise", "return", "skip")


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


class PoolCore:
    """A backend plus the bookkeeping every face needs: options, open jobs, shutdown."""

    def __init__(
        self,
        workers: int,
        backend: str | None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        **backend_options: Any,
    ) -> None:
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(
                f"task_timeout must be a positive number of seconds, got {task_timeout!r}"
            )
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        self.workers = workers
        self.backend_name = resolve_backend_name(backend)
        self.task_timeout = task_timeout
        self.retries = retries
        self.retry_on = retry_on
        self._lock = threading.Lock()
        self._open_jobs: set[Job] = set()
        self._call_sizers: dict[Callable[..., Any], ChunkSizer] = {}
        self.closed = False
        self.terminated = False
        self.backend: Backend = create_backend(self.backend_name, workers, **backend_options)

    # Jobs ---------------------------------------------------------------------------
    def _opened(self, job: Job) -> None:
        with self._lock:
            self._open_jobs.add(job)

    def _finished(self, job: Job) -> None:
        with self._lock:
            self._open_jobs.discard(job)
        if job.cache_function or job.cancelled:
            # Workers keep a stream's function; a cancelled call may still be queued.
            self.backend.release(job)

    def stream_job(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        style: int,
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
        job = StreamJob(
            fn,
            iterable,
            style,
            window=window_size(self.workers),
            timeout=self.task_timeout if timeout is None else timeout,
            retries=self.retries if retries is None else retries,
            retry_on=self.retry_on if retry_on is None else retry_on,
            sizer=ChunkSizer(self.workers, chunksize, _length(iterable)),
        )
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
    ) -> Iterator[Piece]:
        """The job's pieces, annotated, with progress; Ctrl-C stops the pool."""
        bar = make_progress(progress, iterable) if progress else None
        try:
            for piece in job.pieces(ordered, keeps_all):
                if piece.failures:
                    job.annotate(piece)
                if bar is not None:
                    bar.update(len(piece.values))
                yield piece
        except KeyboardInterrupt:
            self.terminate()
            raise
        finally:
            if bar is not None:
                bar.close()
            self._finished(job)

    def values(self, pieces: Iterator[Piece], on_error: str) -> Iterator[Any]:
        """Flatten pieces into values, applying ``on_error``."""
        for piece in pieces:
            if not piece.failures:
                if piece is TIMED_OUT:
                    yield TIMED_OUT
                yield from piece.values
                continue
            for pos, value in enumerate(piece.values):
                error = piece.failures.get(pos)
                if error is None:
                    yield value
                elif on_error == "raise":
                    raise error
                elif on_error == "return":
                    yield error

    def collect(self, pieces: Iterator[Piece], on_error: str) -> list[Any]:
        """All values in a list; a piece without failures is copied in one go."""
        out: list[Any] = []
        for piece in pieces:
            if piece.failures:
                out.extend(self.values(iter([piece]), on_error))
            else:
                out.extend(piece.values)
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
        """Run one call; its outcome in a ``concurrent.futures.Future``."""
        if not callable(fn):
            raise TypeError(f"the function to run must be callable, got {type(fn).__name__}")
        future: Future[Any] = Future()
        job = CallJob(
            fn,
            future,
            timeout=self.task_timeout if timeout is None else timeout,
            retries=self.retries if retries is None else retries,
            retry_on=self.retry_on,
            sizer=self._call_sizer(fn),
        )
        self._opened(job)
        future.add_done_callback(lambda f: self._call_done(job))
        try:
            self.backend.run_call(job, tuple(args), dict(kwargs))
        except BaseException:
            future.cancel()
            self._finished(job)
            raise
        return future

    def _call_sizer(self, fn: Callable[..., Any]) -> ChunkSizer:
        """One duration estimate per function, shared by its calls: once its calls are
        known to be short, a worker may hold the next one behind the running one."""
        try:
            sizer = self._call_sizers.get(fn)
        except TypeError:  # an unhashable callable
            return ChunkSizer(1)
        if sizer is None:
            if len(self._call_sizers) > 256:
                self._call_sizers.clear()
            sizer = self._call_sizers[fn] = ChunkSizer(1)
        return sizer

    def _call_done(self, job: CallJob) -> None:
        if job.future.cancelled():
            job.cancel()
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
        """Cancel calls not yet started and stop pulling input for streams."""
        with self._lock:
            jobs = list(self._open_jobs)
        for job in jobs:
            if isinstance(job, CallJob):
                job.future.cancel()
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
        for job in jobs:
            job.cancel()
        self.backend.terminate()
        self.backend.join(5.0)

    def stats(self) -> PoolStats:
        """Per-worker counters of the backend."""
        return self.backend.stats()


class AsyncResult:
    """The result of ``apply_async`` / ``map_async``, as in ``multiprocessing.pool``."""

    def __init__(
        self,
        future: Future[Any],
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self._future = future
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        future.add_done_callback(self._done)

    def _done(self, future: Future[Any]) -> None:
        try:
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                if self._callback is not None:
                    self._callback(future.result())
            elif self._error_callback is not None:
                self._error_callback(error)
        finally:
            self._event.set()

    def ready(self) -> bool:
        """True once the call has finished (successfully or not)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """True if it finished without raising; ValueError if it has not finished."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return not self._future.cancelled() and self._future.exception() is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready, or ``timeout`` seconds."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result; re-raises the task's exception; ``multiprocessing.TimeoutError``."""
        if not self._event.wait(timeout):
            raise multiprocessing.TimeoutError
        # Not future.result(): a task's TaskTimeout is a TimeoutError too, and must not be
        # confused with this wait timing out.
        error = self._future.exception(0)
        if error is not None:
            raise error
        return self._future.result(0)


class IMapIterator:
    """The iterator of ``imap`` / ``imap_unordered``; ``next(timeout)`` as in multiprocessing."""

    def __init__(
        self,
        core: PoolCore,
        job: StreamJob,
        ordered: bool,
        on_error: str = "raise",
        progress: Any = None,
        iterable: Any = None,
        timeout_error: type[BaseException] = multiprocessing.TimeoutError,
    ) -> None:
        self._job = job
        self._timeout_error = timeout_error
        self._pieces = core.pieces(job, ordered=ordered, progress=progress, iterable=iterable)
        self._values = core.values(self._pieces, on_error)

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result, waiting at most ``timeout`` seconds (multiprocessing.TimeoutError)."""
        self._job.wait = timeout
        try:
            value = next(self._values)
        finally:
            self._job.wait = None
        if value is TIMED_OUT:
            raise self._timeout_error
        return value

    def close(self) -> None:
        """Stop early: no more input is pulled, results not yet read are dropped."""
        self._values.close()  # type: ignore[attr-defined]
        self._pieces.close()  # type: ignore[attr-defined]

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Pool:
    """A drop-in superset of ``multiprocessing.Pool``.

    Same constructor order and methods, same errors for misuse; leaving its ``with``
    block terminates it, as ``multiprocessing.Pool``'s does. Added: per-task timeouts
    and retries, crash recovery (a dead worker costs only its task), lambdas and
    closures as functions, ``submit`` returning a ``concurrent.futures.Future``,
    ``stats()``, and the thread / serial / dask / ray backends.

    >>> import corepool
    >>> with corepool.Pool(2) as pool:
    ...     pool.map(abs, [-1, -2, 3])
    [1, 2, 3]
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: BaseContext | None = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        backend: str | None = "process",
        start_method: str | None = None,
        worker_memory_limit: int | str | None = None,
    ) -> None:
        if processes is None:
            processes = cpu_count()
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        self._memory_limit = parse_memory(worker_memory_limit)
        self._core = PoolCore(
            processes,
            None if backend == "process" else backend,
            task_timeout=task_timeout,
            retries=retries,
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_child=maxtasksperchild,
            context=context,
            start_method=start_method,
            memory_limit=self._memory_limit,
        )
        self._finalizer = weakref.finalize(self, _finalize_pool, self._core)

    # State ----------------------------------------------------------------------------
    def _check_running(self) -> None:
        if self._core.closed:
            raise ValueError("Pool not running")

    @property
    def backend(self) -> str:
        """The name of the backend running the tasks."""
        return self._core.backend_name

    def __repr__(self) -> str:
        state = "TERMINATE" if self._core.terminated else "CLOSE" if self._core.closed else "RUN"
        return f"<corepool.Pool state={state} backend={self.backend} workers={self._processes}>"

    # One call -----------------------------------------------------------------------
    def apply(
        self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        """``func(*args, **kwds)`` in a worker; blocks for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> AsyncResult:
        """Start ``func(*args, **kwds)``; an :class:`AsyncResult` for it.

        ``timeout`` (keyword only) limits this task's run time like ``task_timeout``.
        """
        self._check_running()
        future = self._core.call(func, tuple(args), dict(kwds or {}), timeout=timeout)
        return AsyncResult(future, callback, error_callback)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """``fn(*args, **kwargs)`` in a worker, as a ``concurrent.futures.Future``."""
        self._check_running()
        return self._core.call(fn, args, kwargs)

    # Many calls ---------------------------------------------------------------------
    def _start(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        style: int,
        chunksize: int | None,
        timeout: float | None = None,
    ) -> StreamJob:
        self._check_running()
        return self._core.stream_job(
            func, iterable, style, chunksize=chunksize, timeout=timeout, retries=None
        )

    def map(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(x) for x in iterable]`` in parallel, in order; raises the first failure."""
        job = self._start(func, iterable, p.SINGLE, chunksize)
        return self._core.collect(self._core.pieces(job, ordered=True, keeps_all=True), "raise")

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
    ) -> list[Any]:
        """``[func(*args) for args in iterable]`` in parallel, in order."""
        job = self._start(func, iterable, p.STAR, chunksize)
        return self._core.collect(self._core.pieces(job, ordered=True, keeps_all=True), "raise")

    def _async(
        self,
        job: StreamJob,
        callback: Callable[[Any], Any] | None,
        error_callback: Callable[[BaseException], Any] | None,
    ) -> AsyncResult:
        future: Future[Any] = Future()
        core = self._core

        def run() -> None:
            try:
                future.set_result(
                    core.collect(core.pieces(job, ordered=True, keeps_all=True), "raise")
                )
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="corepool-map-async", daemon=True).start()
        return AsyncResult(future, callback, error_callback)

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """Start :meth:`map`; an :class:`AsyncResult` whose value is the list."""
        return self._async(
            self._start(func, iterable, p.SINGLE, chunksize), callback, error_callback
        )

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """Start :meth:`starmap`; an :class:`AsyncResult` whose value is the list."""
        return self._async(self._start(func, iterable, p.STAR, chunksize), callback, error_callback)

    def imap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapIterator:
        """Lazy ordered results; reads the input only as far as the window allows."""
        job = self._start(func, iterable, p.SINGLE, chunksize)
        return IMapIterator(self._core, job, True, "raise", None, iterable)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> IMapIterator:
        """Lazy results in completion order."""
        job = self._start(func, iterable, p.SINGLE, chunksize)
        return IMapIterator(self._core, job, False, "raise", None, iterable)

    # Lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Accept no more tasks; workers exit once the submitted ones are done."""
        self._core.close()

    def terminate(self) -> None:
        """Stop the workers now; unfinished tasks fail."""
        self._core.terminate()
        self._finalizer.detach()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the workers to exit; call :meth:`close` or :meth:`terminate` first."""
        if not self._core.closed:
            raise ValueError("Pool is still running")
        self._core.join(timeout)
        self._finalizer.detach()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def stats(self) -> PoolStats:
        """Tasks done and failed, busy and idle time per worker, and restarts."""
        return self._core.stats()

    def pids(self) -> list[int]:
        """Process ids of the live workers (empty for the thread and serial backends)."""
        return self._core.backend.pids()


def _finalize_pool(core: PoolCore) -> None:
    if not core.terminated:
        if not core.closed:
            warnings.warn(
                "unclosed corepool.Pool: it was garbage-collected while running; "
                "use it in a `with` block or call close() and join()",
                ResourceWarning,
                stacklevel=2,
            )
        core.terminate()
