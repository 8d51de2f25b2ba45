"""``Pool``: the ``multiprocessing.Pool``-compatible face over :class:`~corepool.core.PoolCore`."""

from __future__ import annotations

import multiprocessing
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as WaitTimeout
from multiprocessing.context import BaseContext
from typing import Any

from ._tasks.job import LazyEvent, StreamJob
from ._tasks.styles import CallStyle
from .core import PoolCore, WaitExpired, parse_memory
from .cpus import blas_thread_limit
from .nesting import default_workers
from .options import DEFAULT_BACKEND, check_on_error, check_workers, explicit_backend
from .progress import PoolStats

__all__ = ["AsyncResult", "IMapIterator", "Pool"]


class AsyncResult:
    """The result of ``apply_async`` / ``map_async``, as in ``multiprocessing.pool``.

    Examples:
        >>> import corepool
        >>> with corepool.Pool(2) as pool:
        ...     result = pool.apply_async(pow, (2, 8))
        ...     result.get(timeout=30)
        256
    """

    def __init__(
        self,
        future: Future[Any],
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self._future = future
        self._callback = callback
        self._error_callback = error_callback
        # With callbacks, ready means "the callback ran" (as in multiprocessing), so the
        # result waits for them; without, the Future itself is all there is to wait on.
        self._event: LazyEvent | None = None
        if callback is not None or error_callback is not None:
            self._event = LazyEvent()
            future.add_done_callback(self._done)

    def _done(self, future: Future[Any]) -> None:
        assert self._event is not None
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
        if self._event is None:
            return self._future.done()
        return self._event.is_set()

    def successful(self) -> bool:
        """True if it finished without raising; ValueError if it has not finished."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return not self._future.cancelled() and self._future.exception() is None

    def _outcome(self, timeout: float | None) -> BaseException | None:
        """Wait up to ``timeout``; the task's exception or None (WaitTimeout if not done).

        Not ``future.result(timeout)``: a task's TaskTimeout is a TimeoutError too, and
        must not be confused with this wait timing out.
        """
        if self._event is not None:
            if not self._event.wait(timeout):
                raise WaitTimeout
            return self._future.exception(0)
        return self._future.exception(timeout)  # raises WaitTimeout only for the wait

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready, or ``timeout`` seconds."""
        try:
            self._outcome(timeout)
        except (WaitTimeout, CancelledError):
            pass

    def get(self, timeout: float | None = None) -> Any:
        """The result; re-raises the task's exception; ``multiprocessing.TimeoutError``."""
        if self._event is None:
            try:
                return self._future.result(timeout)
            except WaitTimeout:
                if self._future.done():
                    raise  # the task's own TimeoutError (a TaskTimeout, say)
                raise multiprocessing.TimeoutError from None
        try:
            error = self._outcome(timeout)
        except WaitTimeout:
            raise multiprocessing.TimeoutError from None
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
        self._pieces.wait = timeout
        try:
            return next(self._values)
        except WaitExpired:
            raise self._timeout_error from None
        finally:
            self._pieces.wait = None

    def close(self) -> None:
        """Stop early: no more input is pulled, results not yet read are dropped."""
        self._values.close()  # type: ignore[attr-defined]
        self._pieces.close()

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

    ``address`` / ``client`` (keyword only) name the cluster of ``backend="dask"``
    (a scheduler address or a ``distributed.Client``) or ``backend="ray"`` (an
    address); ``processes`` then sizes only a cluster that corepool starts itself.
    Given to another backend they are a ValueError.

    Each worker process caps its BLAS/OpenMP thread pools (numpy, scipy, ...) at
    ``blas_threads``: by default the usable CPUs divided by the number of workers, so
    workers x threads does not oversubscribe the machine; ``blas_threads=None`` leaves
    the libraries alone. An ``OMP_NUM_THREADS`` (or similar) already set wins.

    Examples:
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
        backend: str | None = DEFAULT_BACKEND,
        start_method: str | None = None,
        worker_memory_limit: int | str | None = None,
        address: str | None = None,
        client: Any = None,
        blas_threads: int | str | None = "auto",
    ) -> None:
        too_few = "Number of processes must be at least 1"
        processes = check_workers(processes, "processes", too_few) or default_workers()
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
            explicit_backend(backend),
            task_timeout=task_timeout,
            retries=retries,
            face="pool",
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_child=maxtasksperchild,
            context=context,
            start_method=start_method,
            memory_limit=self._memory_limit,
            address=address,
            client=client,
            thread_limit=blas_thread_limit(blas_threads, processes),
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

    def run_on_workers(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> dict[Any, Any]:
        """Run ``fn(*args, **kwargs)`` once in every live worker; ``{pid: value}``.

        The way to collect state a worker keeps across tasks (the pool's initializer
        builds it, tasks update it): each worker runs ``fn`` between two tasks, after
        the tasks it holds, never during one. A worker that died before its turn gives
        no answer; its replacement is a fresh process (the initializer ran again), so
        its state holds only what tasks did there since. The keys say which workers
        answered. An exception raised by ``fn`` in a worker is raised here (a note
        names the pid). On the thread and serial backends ``fn`` runs once, in this
        process; on Dask, ``Client.run`` runs it on every worker (keys: addresses);
        Ray raises :class:`~corepool.errors.NotSupported`. See docs/guide/state.md.
        """
        self._check_running()
        return self._core.run_on_workers(fn, args, kwargs)

    # Many calls ---------------------------------------------------------------------
    def _start(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        style: CallStyle,
        chunksize: int | None,
        timeout: float | None = None,
    ) -> StreamJob:
        self._check_running()
        return self._core.stream_job(
            func, iterable, style, chunksize=chunksize, timeout=timeout, retries=None
        )

    def _all(self, job: StreamJob, progress: Any, iterable: Iterable[Any]) -> list[Any]:
        core = self._core
        pieces = core.pieces(
            job, ordered=True, keeps_all=True, progress=progress, iterable=iterable
        )
        return core.collect(pieces, "raise")

    def map(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = False,
    ) -> list[Any]:
        """``[func(x) for x in iterable]`` in parallel, in order; raises the first failure.

        ``progress`` (keyword only, as on every method here that runs many tasks): True
        for a tqdm bar on stderr, or a callable ``callback(done, total)``.
        """
        job = self._start(func, iterable, CallStyle.SINGLE, chunksize)
        return self._all(job, progress, iterable)

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: Any = False,
    ) -> list[Any]:
        """``[func(*args) for args in iterable]`` in parallel, in order."""
        job = self._start(func, iterable, CallStyle.STAR, chunksize)
        return self._all(job, progress, iterable)

    def _async(
        self,
        job: StreamJob,
        callback: Callable[[Any], Any] | None,
        error_callback: Callable[[BaseException], Any] | None,
        progress: Any,
        iterable: Iterable[Any],
    ) -> AsyncResult:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(self._all(job, progress, iterable))
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
        *,
        progress: Any = False,
    ) -> AsyncResult:
        """Start :meth:`map`; an :class:`AsyncResult` whose value is the list."""
        job = self._start(func, iterable, CallStyle.SINGLE, chunksize)
        return self._async(job, callback, error_callback, progress, iterable)

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        *,
        progress: Any = False,
    ) -> AsyncResult:
        """Start :meth:`starmap`; an :class:`AsyncResult` whose value is the list."""
        job = self._start(func, iterable, CallStyle.STAR, chunksize)
        return self._async(job, callback, error_callback, progress, iterable)

    def imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = False,
        on_error: str = "raise",
    ) -> IMapIterator:
        """Lazy ordered results; reads the input only as far as the window allows.

        ``on_error`` as in :func:`corepool.imap`; with ``"raise"``, a failed task
        raises in its place and the next ``next()`` goes on after it.
        """
        check_on_error(on_error)
        job = self._start(func, iterable, CallStyle.SINGLE, chunksize)
        return IMapIterator(self._core, job, True, on_error, progress or None, iterable)

    def imap_unordered(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = False,
        on_error: str = "raise",
    ) -> IMapIterator:
        """Lazy results in completion order. ``on_error`` as in :func:`corepool.imap`."""
        check_on_error(on_error)
        job = self._start(func, iterable, CallStyle.SINGLE, chunksize)
        return IMapIterator(self._core, job, False, on_error, progress or None, iterable)

    # asyncio: thin delegations to corepool.aio ---------------------------------------
    async def amap(self, func: Callable[..., Any], iterable: Iterable[Any], **options: Any) -> Any:
        """``await``-able :meth:`map`; the per-call options of :func:`corepool.amap`
        (``timeout`` and ``retries`` left out are the pool's)."""
        self._check_running()
        from .aio import core_amap

        return await core_amap(self._core, func, iterable, **options)

    def aimap(self, func: Callable[..., Any], iterable: Iterable[Any], **options: Any) -> Any:
        """``async for`` over :meth:`imap`; options as for :func:`corepool.aimap`."""
        self._check_running()
        from .aio import core_aimap

        return core_aimap(self._core, func, iterable, **options)

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
