"""The one narrow interface every backend implements.

A backend receives jobs (:class:`~corepool._tasks.job.StreamJob` for map-like calls,
:class:`~corepool._tasks.job.CallJob` for one call) and hands their results back
through ``job.deliver``; ordering, ``on_error``, progress and the public faces live
above it and are the same for every backend. Capability flags say what a backend can
promise, so callers and tests can tell without knowing which backend it is.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from .._tasks.job import CallJob, Job, Piece, StreamJob
from .._tasks.run import Attempt, run_tasks
from ..errors import BrokenPool, TaskTimeout
from ..nesting import running_task
from ..progress import PoolStats
from ..sharedmem import live_handles, resolve


class Backend(ABC):
    """Runs jobs somewhere: worker processes, threads, the calling thread, a cluster."""

    name: ClassVar[str]
    #: A task past its timeout is really stopped (its worker is replaced).
    stops_timed_out_tasks: ClassVar[bool] = False
    #: A task that kills its worker fails alone, and the backend carries on.
    survives_crashes: ClassVar[bool] = False
    #: Functions, inputs and results are pickled (so they must be picklable).
    pickles: ClassVar[bool] = False
    #: A task past its timeout fails at its deadline, not only once it returns.
    reports_timeouts_on_time: ClassVar[bool] = True
    #: Takes ``address=`` / ``client=`` (a cluster to run on).
    remote: ClassVar[bool] = False

    workers: int

    @abstractmethod
    def run_stream(self, job: StreamJob) -> None:
        """Start running a stream job; results arrive through ``job.deliver``."""

    @abstractmethod
    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Start running one call; its outcome arrives through ``job.deliver``."""

    def run_on_workers(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
    ) -> dict[Any, Any]:
        """``fn(*args, **kwargs)`` once on every live worker; worker -> its value.

        In-process backends (threads, serial) have one process and no per-worker state
        of their own: the function runs once, here, keyed by this process's pid.
        """
        import os

        return {os.getpid(): fn(*args, **kwargs)}

    def capacity(self) -> int:
        """Tasks that run at once; chunk sizes and each job's window are sized on it."""
        return self.workers

    def release(self, job: Job) -> None:
        """The caller is done with ``job`` (finished or abandoned)."""
        return None

    def settle(self) -> None:
        """Return once the work handed over so far has reached the scheduler, so that
        what can start now has started (the process backend queues it in a thread)."""
        return None

    def stop_job(self, job: Job) -> None:
        """Cancel ``job``: what has not started never runs; backends that can also
        stop its running tasks (the process backend) do."""
        job.cancel()
        self.release(job)

    @abstractmethod
    def close(self) -> None:
        """Accept no new work; finish what is queued."""

    @abstractmethod
    def terminate(self) -> None:
        """Stop now; unfinished jobs fail."""

    @abstractmethod
    def join(self, timeout: float | None = None) -> bool:
        """Wait until everything has stopped after close/terminate; True if it has."""

    def stats(self) -> PoolStats:
        """A snapshot of per-worker counters."""
        return PoolStats(self.name)

    def pids(self) -> list[int]:
        """Process ids of live worker processes, if the backend has any."""
        return []


def initialize(
    initializer: Callable[..., Any], initargs: tuple[Any, ...]
) -> BrokenPool | None:
    """Run a pool's initializer in this thread (the serial and thread backends); the
    error that breaks the pool if it raises, as on the process backend."""
    try:
        initializer(*initargs)
    except BaseException as exc:
        error = BrokenPool(
            f"the worker initializer raised {type(exc).__name__}: {exc}; "
            "no task can run in this pool"
        )
        error.__cause__ = exc
        return error
    return None


def run_inline(
    job: Job,
    origin: int,
    start: int,
    items: list[Any],
    *,
    level: int,
    catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retries: int | None = None,
) -> Piece:
    """Run a chunk in this thread with the job's retries (or ``retries``); the serial
    and thread backends.

    A timeout cannot stop code running in this thread: a task that ran past it is
    reported as :class:`TaskTimeout` once it returns (and retried as any failure is),
    and its result is dropped. The tasks run at nesting ``level`` (what a corepool call
    inside them runs on).
    """
    attempt: Attempt | None = _resolving if live_handles() else None
    if job.timeout is not None:
        attempt = _timed(job.timeout, start, attempt)
    began = time.perf_counter()
    from ._inline import inline_task  # here: the process backend never runs inline

    with running_task(level), inline_task(start, items, job.describe_value) as task:
        values, failures, retried = run_tasks(
            job.fn,
            job.style,
            items,
            catch=catch,
            retries=job.retries if retries is None else retries,
            retry_on=job.retry_on,
            attempt=attempt,
            place=task.place,
        )
    job.sizer.observe(len(items), time.perf_counter() - began)
    return Piece(start, values, failures, origin, items if failures else None, retried)


def _resolving(call: Callable[[Any], Any], item: Any, _pos: int) -> Any:
    """One run of a task whose input may hold ``corepool.shared`` handles: the task gets
    their objects, as a worker process would."""
    return call(resolve(item))


def _timed(timeout: float, start: int, inner: Attempt | None) -> Attempt:
    def attempt(call: Callable[[Any], Any], item: Any, pos: int) -> Any:
        t0 = time.monotonic()
        value = call(item) if inner is None else inner(call, item, pos)
        if time.monotonic() - t0 > timeout:
            raise TaskTimeout(
                f"task {start + pos} ran longer than its {timeout:g} s timeout (this "
                "backend cannot stop a running task: it finished, and its result was "
                "dropped)",
                timeout,
            )
        return value

    return attempt
