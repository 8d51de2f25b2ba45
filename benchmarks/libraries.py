"""One small adapter per library, so that ``compare.py`` times every library the same way.

Every adapter uses the library's documented, default way of mapping a function over
inputs with two workers, and nothing else: no chunksize, batch size or start method is
set. The timing itself is done by the caller; an adapter only does the library calls:

* ``open()`` creates the pool and warms it with one tiny map (never timed);
* ``map(fn, items)`` returns the list of results on the open pool;
* ``imap(fn, items)`` returns the library's lazy iterator of results;
* ``abandon(results)`` stops an ``imap`` early and drops whatever work is left, so that
  nothing keeps running into the next measurement;
* ``close()`` shuts the pool down (safe to call twice);
* ``cold_start_code`` is a complete ``python -c`` program: import, one map of 2 tiny
  tasks, exit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from workloads import square

WORKERS = 2
WARM_UP = range(4)


class Library:
    """The interface; see the module docstring."""

    name = ""
    cold_start_code = ""

    def open(self) -> None:
        raise NotImplementedError

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        raise NotImplementedError

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def abandon(self, results: Iterator[Any]) -> None:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class Corepool(Library):
    """``corepool.map`` / ``corepool.imap`` on the default pool (reused across calls)."""

    name = "corepool"
    cold_start_code = (
        "import corepool, workloads\n"
        "corepool.map(workloads.square, range(2), workers=2)\n"
    )

    def open(self) -> None:
        import corepool

        self._corepool = corepool
        corepool.map(square, WARM_UP, workers=WORKERS)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return self._corepool.map(fn, items, workers=WORKERS)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return self._corepool.imap(fn, items, workers=WORKERS)

    def close(self) -> None:
        from corepool.api import shutdown_default_pool

        shutdown_default_pool()  # the next corepool.map starts a fresh one


class Multiprocessing(Library):
    """``multiprocessing.Pool(2)``: ``map`` and ``imap`` with their default chunksize."""

    name = "multiprocessing.Pool"
    cold_start_code = (
        "import multiprocessing, workloads\n"
        "with multiprocessing.get_context('fork').Pool(2) as pool:\n"
        "    pool.map(workloads.square, range(2))\n"
    )

    def open(self) -> None:
        import multiprocessing

        self._pool = multiprocessing.Pool(WORKERS)
        self._pool.map(square, WARM_UP)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return self._pool.map(fn, items)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return self._pool.imap(fn, items)

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


class ProcessPool(Library):
    """``concurrent.futures.ProcessPoolExecutor(2)``: ``map`` with its default chunksize=1."""

    name = "ProcessPoolExecutor"
    cold_start_code = (
        "import concurrent.futures, workloads\n"
        "with concurrent.futures.ProcessPoolExecutor(2) as ex:\n"
        "    list(ex.map(workloads.square, range(2)))\n"
    )

    def open(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self._executor = ProcessPoolExecutor(max_workers=WORKERS)
        list(self._executor.map(square, WARM_UP))

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return list(self._executor.map(fn, items))

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        # Executor.map submits every item as a future before it returns the iterator.
        return self._executor.map(fn, items)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class Joblib(Library):
    """``joblib.Parallel(n_jobs=2)`` with ``delayed``; its pool is loky's reusable executor."""

    name = "joblib"
    cold_start_code = (
        "import joblib, workloads\n"
        "joblib.Parallel(n_jobs=2)(joblib.delayed(workloads.square)(x) for x in range(2))\n"
    )

    def open(self) -> None:
        from joblib import Parallel, delayed

        self._parallel_class = Parallel
        self._delayed = delayed
        self._parallel = Parallel(n_jobs=WORKERS)
        self._parallel(delayed(square)(x) for x in WARM_UP)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        task = self._delayed(fn)
        return self._parallel(task(x) for x in items)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        task = self._delayed(fn)
        lazy = self._parallel_class(n_jobs=WORKERS, return_as="generator")
        return lazy(task(x) for x in items)

    def abandon(self, results: Iterator[Any]) -> None:
        # Closing joblib's generator cancels the rest and stops the workers; it warns
        # about the results that were computed but never read, which is the point here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            super().abandon(results)

    def close(self) -> None:
        # Nothing to do: loky's executor stays for the next Parallel call, as it would
        # in a program, and stops by itself when idle.
        pass


class Mpire(Library):
    """``mpire.WorkerPool(n_jobs=2)``: ``map`` and ``imap``, defaults (keep_alive=False)."""

    name = "mpire"
    cold_start_code = (
        "import mpire, workloads\n"
        "with mpire.WorkerPool(n_jobs=2) as pool:\n"
        "    pool.map(workloads.square, range(2))\n"
    )

    def open(self) -> None:
        from mpire import WorkerPool

        self._pool = WorkerPool(n_jobs=WORKERS)
        self._pool.map(square, WARM_UP)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return self._pool.map(fn, items)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return self._pool.imap(fn, items)

    def close(self) -> None:
        self._pool.terminate()


ALL: list[type[Library]] = [Corepool, Multiprocessing, ProcessPool, Joblib, Mpire]
BY_NAME: dict[str, type[Library]] = {cls.name: cls for cls in ALL}
