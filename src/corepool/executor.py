"""``Executor``: the ``concurrent.futures`` face, a drop-in for ``ProcessPoolExecutor``."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any

from ._tasks.styles import CallStyle
from .core import PoolCore
from .cpus import blas_thread_limit
from .nesting import default_workers
from .options import DEFAULT_BACKEND, check_workers, explicit_backend
from .pool import IMapIterator
from .progress import PoolStats

__all__ = ["Executor"]

# Executors not shut down yet, and the cores of those shut down without waiting (or
# garbage-collected) that may still be finishing their work. When the main thread ends,
# before ``atexit`` handlers run, each finishes the work it was given and lets its
# workers go, as ``ProcessPoolExecutor`` does; a submit after that raises RuntimeError.
_live: weakref.WeakSet[Executor] = weakref.WeakSet()
_draining: set[PoolCore] = set()
_exiting = False
_hook_lock = threading.Lock()
_hook_registered = False


def _at_interpreter_exit() -> None:
    global _exiting
    _exiting = True
    cores = [executor._core for executor in list(_live)]
    with _hook_lock:
        cores += list(_draining)
    for core in cores:
        core.close()
    for core in cores:
        core.join()


def _drain(core: PoolCore) -> None:
    """``core`` was closed and nobody waits for it: the exit hook will (as it waits for
    the work of a ``ProcessPoolExecutor`` shut down with ``wait=False``)."""
    with _hook_lock:
        for done in [c for c in _draining if c.backend.join(0)]:
            _draining.discard(done)
        _draining.add(core)


def _register_exit_hook() -> None:
    """Registered with the first Executor (not at import): see ``_at_interpreter_exit``."""
    global _hook_registered
    with _hook_lock:
        if not _hook_registered:
            # The hook concurrent.futures uses: it runs as the main thread ends,
            # before atexit (which multiprocessing uses to join worker processes).
            try:
                threading._register_atexit(_at_interpreter_exit)  # type: ignore[attr-defined]
            except RuntimeError:  # created while the interpreter exits: nothing to wait for
                return
            _hook_registered = True


def _close_unreferenced(core: PoolCore) -> None:
    """An Executor was garbage-collected without shutdown: finish its work, then stop."""
    core.close()
    _drain(core)


class _Zipped:
    """``zip(*iterables)`` that has a ``len()`` when every iterable has one, as a list
    does: chunk sizing then caps chunks so that every worker gets several, and a fast
    task is not put in one chunk (its result held back) with a slow one after it."""

    def __init__(self, iterables: tuple[Iterable[Any], ...], length: int) -> None:
        self.iterables, self.length = iterables, length

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(*self.iterables, strict=False)

    def __len__(self) -> int:
        return self.length


def _zipped(iterables: tuple[Iterable[Any], ...]) -> Iterable[tuple[Any, ...]]:
    try:
        length = min(len(it) for it in iterables)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # one has no len() (read lazily), or there are none
        return zip(*iterables, strict=False)
    return _Zipped(iterables, length)


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` running on corepool's engine.

    Same constructor and errors as ``ProcessPoolExecutor``; leaving its ``with`` block
    waits for submitted work, as ``concurrent.futures`` does, and so does the end of a
    program that never shut it down. Beyond it: a crashed worker fails only its task
    (a ``WorkerCrashed``, also a ``BrokenProcessPool``; the executor goes on), ``task_timeout`` and
    ``retries``, lambdas as functions, ``map`` that reads its input lazily, and
    ``blas_threads`` as on :class:`corepool.Pool`. ``address`` / ``client`` (keyword
    only) name the cluster of ``backend="dask"`` or ``backend="ray"``, as for
    :class:`~corepool.Pool`.

    Examples:
        >>> import corepool
        >>> with corepool.Executor(max_workers=2) as ex:
        ...     ex.submit(pow, 2, 10).result()
        1024
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        backend: str | None = DEFAULT_BACKEND,
        address: str | None = None,
        client: Any = None,
        blas_threads: int | str | None = "auto",
    ) -> None:
        too_few = "max_workers must be greater than 0"
        max_workers = check_workers(max_workers, "max_workers", too_few) or default_workers()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        self._max_workers = max_workers
        self._shutdown = False
        self._core = PoolCore(
            max_workers,
            explicit_backend(backend),
            task_timeout=task_timeout,
            retries=retries,
            face="executor",
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_child=max_tasks_per_child,
            context=mp_context,
            address=address,
            client=client,
            thread_limit=blas_thread_limit(blas_threads, max_workers),
        )
        _register_exit_hook()
        _live.add(self)
        weakref.finalize(self, _close_unreferenced, self._core).atexit = False

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; a Future for its outcome."""
        self._check_open()
        return self._core.call(fn, args, kwargs)

    def run_on_workers(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> dict[Any, Any]:
        """Run ``fn(*args, **kwargs)`` once in every live worker; ``{pid: value}``.

        As :meth:`corepool.Pool.run_on_workers` (the way to collect state a worker
        keeps across tasks; see docs/guide/state.md).
        """
        self._check_open()
        return self._core.run_on_workers(fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[Any]:
        """Like ``concurrent.futures.Executor.map``, reading the inputs lazily.

        ``timeout`` counts from this call; a result not ready by then raises
        ``concurrent.futures.TimeoutError``. ``chunksize`` None sizes chunks from
        measured task durations. Tasks run ahead of the consumer by a bounded window.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self._core.stream_job(
            fn,
            _zipped(iterables),
            CallStyle.STAR,
            chunksize=chunksize,
            timeout=None,
            retries=None,
        )
        results = IMapIterator(self._core, job, True, timeout_error=concurrent.futures.TimeoutError)

        def generate() -> Iterator[Any]:
            try:
                while True:
                    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        yield results.next(remaining)
                    except StopIteration:
                        return
            finally:
                results.close()

        return generate()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; ``cancel_futures`` drops what has not started."""
        self._shutdown = True
        _live.discard(self)
        if cancel_futures:
            self._core.cancel_pending()
        self._core.close()
        if wait:
            self._core.join()
        else:
            self._core.backend.close()
            _drain(self._core)

    def terminate(self) -> None:
        """Stop now, running tasks included (even one hung in C code); not in
        ``concurrent.futures``: ``shutdown`` lets running tasks finish, as there."""
        self._shutdown = True
        _live.discard(self)
        self._core.terminate()

    def stats(self) -> PoolStats:
        """Tasks done and failed, busy and idle time per worker, and restarts."""
        return self._core.stats()

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return self._core.backend.pids()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._shutdown = True
            self._core.terminate()  # Ctrl-C must not wait for the remaining work
            return None
        self.shutdown(wait=True)
        return None
