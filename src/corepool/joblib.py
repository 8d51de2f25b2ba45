"""A joblib parallel backend named ``"corepool"``: scikit-learn on corepool's workers.

>>> import joblib, corepool.joblib
>>> corepool.joblib.register()
>>> with joblib.parallel_config(backend="corepool", n_jobs=2):
...     joblib.Parallel()(joblib.delayed(abs)(x) for x in [-1, -2])
[1, 2]
>>> corepool.joblib.shutdown()  # optional: the pool is also stopped at exit

Keyword arguments of ``parallel_config`` reach the pool: ``task_timeout`` (seconds per
joblib task; the worker running an overdue task is stopped and replaced), ``retries``
and ``retry_on``, ``blas_threads`` (``inner_max_num_threads`` says the same),
``pool_backend`` (``"process"``, ``"thread"``...), ``max_tasks_per_child`` and
``initializer`` / ``initargs``. A worker that dies fails only the batch it ran, with
:class:`WorkerCrashed` (which is also loky's ``TerminatedWorkerError``, the type joblib
users catch), and the pool carries on. Large numpy arrays inside a batch travel through
corepool's shared memory, as a task's arguments do.

The backend keeps one warm pool between ``Parallel`` calls, as loky keeps its
executor, and stops it when the program exits (or when the options change).

This module imports joblib; ``import corepool`` does not import this module.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

try:
    import joblib as _joblib
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        SequentialBackend,
        ThreadingBackend,
    )
    from joblib.externals.loky.process_executor import TerminatedWorkerError
except ImportError as exc:  # pragma: no cover - joblib is installed wherever tests run
    raise ImportError(f"corepool.joblib needs joblib: pip install joblib ({exc})") from exc

from corepool.core import PoolCore
from corepool.cpus import blas_thread_limit, cpu_count
from corepool.errors import WorkerCrashed
from corepool.serialize import add_note, describe_input

__all__ = ["CorepoolBackend", "JoblibWorkerCrashed", "register", "shutdown"]

NAME = "corepool"

_lock = threading.Lock()
_warm: tuple[tuple[Any, ...], PoolCore] | None = None


def register(name: str = NAME, *, make_default: bool = False) -> None:
    """Register the backend with joblib as ``name`` (``"corepool"``).

    Then ``joblib.parallel_config(backend="corepool", n_jobs=...)`` runs joblib code,
    and scikit-learn's ``n_jobs``, on corepool's workers; ``make_default=True`` makes
    it joblib's default backend.
    """
    _joblib.register_parallel_backend(name, CorepoolBackend, make_default=make_default)


def _pool(key: tuple[Any, ...]) -> PoolCore:
    """The warm pool for these options, started (or restarted) if needed."""
    global _warm
    stale = None
    with _lock:
        if _warm is not None and _warm[0] == key and not _warm[1].closed:
            return _warm[1]
        if _warm is not None:
            stale = _warm[1]
        workers, backend, blas, initializer, initargs, max_tasks, retry_on = key
        core = PoolCore(
            workers,
            backend,
            retry_on=retry_on,
            thread_limit=blas_thread_limit(blas, workers),
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks,
        )
        _warm = (key, core)
    if stale is not None:
        stale.terminate()
    return core


def _drop(core: PoolCore) -> None:
    """Stop ``core`` and forget it if it is the warm pool."""
    global _warm
    with _lock:
        if _warm is not None and _warm[1] is core:
            _warm = None
    core.terminate()


@atexit.register
def shutdown() -> None:
    """Stop the warm pool the backend keeps between ``Parallel`` calls (it restarts
    on the next call); it is also stopped when the program exits."""
    with _lock:
        warm = _warm[1] if _warm is not None else None
    if warm is not None:
        _drop(warm)


def _run_batch(batch: Callable[[], Any]) -> Any:
    # The batch travels as an argument, not as the function: arguments are packed
    # with their large buffers in shared memory, a function is pickled inline.
    return batch()


class _Batch:
    """A joblib batch as the pool runs it. Its repr, which a failure's note shows as
    the call's input, names the batch's calls rather than ``<BatchedCalls object>``."""

    __slots__ = ("calls",)

    def __init__(self, calls: Callable[[], Any]) -> None:
        self.calls = calls

    def __call__(self) -> Any:
        return self.calls()

    def __reduce__(self) -> tuple[type[_Batch], tuple[Callable[[], Any]]]:
        return _Batch, (self.calls,)

    def __repr__(self) -> str:
        items = getattr(self.calls, "items", None)
        if not items:
            return "joblib batch"
        fn, args, kwargs = items[0]
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        shown = [describe_input(a) for a in args]
        shown += [f"{k}={describe_input(v)}" for k, v in kwargs.items()]
        more = f" and {len(items) - 1} more call(s)" if len(items) > 1 else ""
        return f"joblib batch: {name}({', '.join(shown)}){more}"


class JoblibWorkerCrashed(WorkerCrashed, TerminatedWorkerError):  # type: ignore[misc]
    """:class:`corepool.WorkerCrashed`, also loky's ``TerminatedWorkerError``."""


class CorepoolBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's backend interface on a corepool pool (see the module docstring)."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    supports_sharedmem = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        blas_threads: int | str | None = "auto",
        pool_backend: str | None = "process",
        max_tasks_per_child: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        **backend_kwargs: Any,
    ) -> None:
        super().__init__(
            nesting_level=nesting_level,
            inner_max_num_threads=inner_max_num_threads,
            **backend_kwargs,
        )
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(f"task_timeout must be a positive number, got {task_timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        self.task_timeout = task_timeout
        self.retries = retries
        self.retry_on = tuple(retry_on)
        self.blas_threads = blas_threads if inner_max_num_threads is None else inner_max_num_threads
        self.pool_backend = pool_backend
        self.max_tasks_per_child = max_tasks_per_child
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self._core: PoolCore | None = None
        self._lock = threading.Lock()
        self._pending: set[Future[Any]] = set()  # batches submitted and not done
        self._n_jobs = 1
        self.parallel: Any = None

    # Sizing ---------------------------------------------------------------------------
    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """Workers for ``n_jobs``: None is 1, -1 every CPU, -2 all but one, as in joblib."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(cpu_count() + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Pick (or start) the pool for this ``Parallel`` call; the number of workers."""
        n_jobs = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        if n_jobs == 1:
            # joblib runs one job in the calling process whatever the backend.
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self._n_jobs = n_jobs
        self._core = _pool(
            (
                n_jobs,
                self.pool_backend,
                self.blas_threads,
                self.initializer,
                self.initargs,
                self.max_tasks_per_child,
                self.retry_on,
            )
        )
        return n_jobs

    def compute_batch_size(self) -> int:
        """joblib's automatic batching; one task per batch when a timeout is set,
        so the timeout is each task's own."""
        if self.task_timeout is not None:
            return 1
        size: int = super().compute_batch_size()
        return size

    # Running --------------------------------------------------------------------------
    def submit(self, func: Callable[[], Any], callback: Any = None) -> Future[Any]:
        """Run one joblib batch on the pool; ``callback`` runs when it is done."""
        if self._core is None:
            raise RuntimeError("the corepool joblib backend is not configured")
        timeout = self.task_timeout
        if timeout is not None:
            try:
                timeout *= max(1, len(func))  # type: ignore[arg-type]
            except TypeError:
                pass
        future = self._core.call(_run_batch, (_Batch(func),), {}, timeout=timeout,
                                 retries=self.retries)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._settled)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def _settled(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        """The batch's results; a crashed worker is :class:`JoblibWorkerCrashed`."""
        try:
            return future.result()
        except WorkerCrashed as crash:
            error = JoblibWorkerCrashed(crash.message, crash.exitcode, crash.reason)
            for note in getattr(crash, "__notes__", ()):
                add_note(error, note)
            raise error.with_traceback(crash.__traceback__) from None

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Drop the batches not started; if some still run, stop them with their pool
        (a new one starts), else the pool stays warm."""
        with self._lock:
            pending = list(self._pending)
        running = [future for future in pending if not future.cancel()]
        if self._core is not None and any(not future.done() for future in running):
            _drop(self._core)
            self._core = None
        if ensure_ready and self._core is None:
            self.configure(n_jobs=self._n_jobs, parallel=self.parallel)

    def terminate(self) -> None:
        """End of a ``Parallel`` call: the pool stays warm for the next one."""
        self._core = None
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[Any, int | None]:
        """joblib inside a task runs on threads (one level), then sequentially."""
        level = (self.nesting_level or 0) + 1
        if level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), None
