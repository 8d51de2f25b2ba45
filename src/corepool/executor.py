"""``Executor``: the ``concurrent.futures`` face, a drop-in for ``ProcessPoolExecutor``."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from multiprocessing.context import BaseContext
from typing import Any

from ._engine import protocol as p
from .core import PoolCore
from .cpus import blas_thread_limit
from .nesting import default_workers
from .options import check_workers
from .pool import IMapIterator
from .progress import PoolStats

__all__ = ["Executor"]


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` running on corepool's engine.

    Same constructor and errors as ``ProcessPoolExecutor``; leaving its ``with`` block
    waits for submitted work, as ``concurrent.futures`` does. Beyond it: a crashed
    worker fails only its task (no ``BrokenProcessPool``), ``task_timeout`` and
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
        backend: str | None = "process",
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
            None if backend == "process" else backend,
            task_timeout=task_timeout,
            retries=retries,
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_child=max_tasks_per_child,
            context=mp_context,
            address=address,
            client=client,
            thread_limit=blas_thread_limit(blas_threads, max_workers),
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; a Future for its outcome."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return self._core.call(fn, args, kwargs)

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
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self._core.stream_job(
            fn,
            zip(*iterables, strict=False),
            p.STAR,
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
        if cancel_futures:
            self._core.cancel_pending()
        self._core.close()
        if wait:
            self._core.join()
        else:
            self._core.backend.close()

    def terminate(self) -> None:
        """Stop now, running tasks included (even one hung in C code); not in
        ``concurrent.futures``: ``shutdown`` lets running tasks finish, as there."""
        self._shutdown = True
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
