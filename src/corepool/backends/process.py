"""The process backend: corepool's own engine of worker processes (the default)."""

from __future__ import annotations

import time
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from .._engine.collect import run_on_workers
from .._engine.engine import ProcessEngine
from .._engine.job import CallJob, Job, StreamJob
from ..progress import PoolStats, WorkerStats
from .base import Backend


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
        state = self.engine.state
        now = time.monotonic()
        rows = [(w, True) for w in list(state.workers.values())]
        rows += [(w, False) for w in list(state.retired)]
        if state.retired_earlier.tasks:
            rows.append((state.retired_earlier, False))
        workers = [
            WorkerStats(
                w.wid,
                w.pid,
                alive,
                w.tasks,
                w.failed,
                w.busy,
                (now if w.ended_at is None else w.ended_at) - w.started_at,
                w.retried,
            )
            for w, alive in sorted(rows, key=lambda r: r[0].wid)
        ]
        return PoolStats(self.name, workers, state.restarts)
