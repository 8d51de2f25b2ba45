"""Nested use: corepool called from inside a corepool task.

The rule (joblib's, written for corepool; docs/guide/backends.md says it for users):

- A task that runs in a worker process of its own (the process backend's workers, and
  daemonic processes such as Dask's workers, which may not start processes) is at
  *level 1*. A corepool call there that names no backend runs on the **thread**
  backend, with as many threads as the worker's thread budget (``blas_threads``; by
  default its share of the CPUs, the usable CPUs divided between the outer pool's
  workers), or 1 when it has none, unless the call gives ``workers=``. That budget is
  also the default size of any pool started there without one (:func:`default_workers`).
- A task that runs in a thread of the caller's process (the thread and serial
  backends), and any task deeper than level 1, runs a call that names no backend
  **serially**, in its own thread: more threads there would only add to the ones
  already running.
- A call that names a backend gets it (``backend="process"`` inside a worker starts
  worker processes of its own); ``COREPOOL_BACKEND`` sets the default of the top level
  only. ``Pool`` and ``Executor`` count as naming ``"process"`` only when given an
  option that only processes honour (``core.PROCESS_ONLY_OPTIONS``).

The level lives in two places: :func:`mark_worker_process` (called once when a worker
process starts) for the process, and a thread-local that :func:`running_task` sets while
a thread or serial backend runs a task.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .cpus import cpu_count

__all__ = [
    "THREAD_VARIABLES",
    "default_workers",
    "in_thread_task",
    "inner_default",
    "level",
    "mark_worker_process",
    "running_task",
]

# The environment variables that size the thread pools of BLAS and OpenMP libraries loaded later.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_local = threading.local()
_process_level = 0
_process_share: int | None = None


def mark_worker_process(threads: int | None = None) -> None:
    """This process is a corepool worker whose tasks may use ``threads`` threads (its
    BLAS/OpenMP budget, when known): its tasks are one level deeper than the process
    that started it."""
    global _process_level, _process_share
    _process_level += 1  # a forked worker starts from its parent's level
    _process_share = threads
    _local.__dict__.pop("level", None)  # forked from a serial task: not one here


def level() -> int:
    """How deep in corepool tasks the calling code runs: 0 in the program itself."""
    here: int | None = getattr(_local, "level", None)
    if here is not None:
        return here
    if _process_level:
        return _process_level
    return 1 if multiprocessing.current_process().daemon else 0


def in_thread_task() -> bool:
    """True while this thread runs a task of a thread or serial backend."""
    return getattr(_local, "level", None) is not None


@contextmanager
def running_task(task_level: int) -> Iterator[None]:
    """Mark this thread as running a task at ``task_level`` for the duration."""
    before = getattr(_local, "level", None)
    _local.level = task_level
    try:
        yield
    finally:
        _local.level = before


def default_workers() -> int:
    """The worker count when none is given: the usable CPUs, and inside a worker process
    that knows its thread budget, that budget (its share of the CPUs)."""
    if _process_share is not None and level() > 0:
        return _process_share
    return cpu_count()


def inner_default(workers: int | None) -> tuple[str, int | None] | None:
    """The backend and worker count for a call that names no backend, if the calling
    code is nested (None at the top level, where the usual default applies)."""
    depth = level()
    if depth == 0:
        return None
    if depth == 1 and not in_thread_task():
        return "thread", workers or _process_share or 1
    return "serial", 1
