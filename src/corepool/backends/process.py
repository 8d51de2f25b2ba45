"""The process backend: corepool's own engine of worker processes (the default).

The only door into ``_engine/``: the faces and the CLI that need its start method
(``corepool.get_context``, ``corepool info``: start method and transport) import it
from here.
"""

from __future__ import annotations

from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from .._engine.engine import ProcessEngine, default_start_method, resolve_context
from .._engine.transport import describe as describe_transport
from .._tasks.job import CallJob, Job, StreamJob
from ..progress import PoolStats
from .base import Backend

__all__ = ["ProcessBackend", "default_start_method", "describe_transport", "resolve_context"]


class ProcessBackend(Backend):
    """Worker processes with per-worker channels, crash recovery and real timeouts."""

    name: ClassVar[str] = "process"
    stops_timed_out_tasks: ClassVar[bool] = True
    survives_crashes: ClassVar[bool] = True
    pickles: ClassVar[bool] = True

    def __init__(
        self,
        workers: int,
        *,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        context: BaseContext | None = None,
        start_method: str | None = None,
        thread_limit: int | None = None,
        memory_limit: int | None = None,
        **_: Any,
    ) -> None:
        self.workers = workers
        self.engine = ProcessEngine(
            workers,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            context=context,
            start_method=start_method,
            thread_limit=thread_limit,
            memory_limit=memory_limit,
        )

    def run_stream(self, job: StreamJob) -> None:
        self.engine.run_stream(job)

    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.engine.run_call(job, args, kwargs)

    def run_on_workers(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
    ) -> dict[Any, Any]:
        from .._engine.collect import run_on_workers  # (rare: not imported at start)

        return run_on_workers(self.engine, fn, args, kwargs, timeout)

    def release(self, job: Job) -> None:
        self.engine.release(job)

    def settle(self) -> None:
        self.engine.settle()

    def stop_job(self, job: Job) -> None:
        self.engine.stop_job(job)

    def close(self) -> None:
        self.engine.close()

    def terminate(self) -> None:
        self.engine.terminate()

    def join(self, timeout: float | None = None) -> bool:
        return self.engine.join(timeout)

    def pids(self) -> list[int]:
        return self.engine.pids()

    def stats(self) -> PoolStats:
        return self.engine.stats(self.name)
