"""The serial backend: every task runs in the calling thread, when its result is wanted.

For debugging: plain tracebacks, ``pdb`` and print statements work as in a loop, and
``COREPOOL_BACKEND=serial`` switches a whole program to it without editing code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from .._tasks.job import CallJob, Piece, StreamJob
from ..nesting import level
from ..progress import PoolStats, WorkerStats
from .base import Backend, initialize, run_inline


class SerialBackend(Backend):
    """Runs tasks inline, lazily: ``imap`` computes each result as it is consumed."""

    name: ClassVar[str] = "serial"
    reports_timeouts_on_time: ClassVar[bool] = False

    def __init__(
        self,
        workers: int = 1,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        **_: Any,
    ) -> None:
        self.workers = 1
        self._broken = None if initializer is None else initialize(initializer, initargs)
        self._started = time.monotonic()
        self._tasks = self._failed = self._retried = 0
        self._busy = 0.0

    def _run(self, job: StreamJob | CallJob, origin: int, start: int, items: list[Any]) -> None:
        if self._broken is not None:
            job.fail(self._broken)
            return
        began = time.perf_counter()
        piece: Piece = run_inline(job, origin, start, items, level=level() + 1)
        self._busy += time.perf_counter() - began
        self._tasks += len(piece.values)
        self._failed += len(piece.failures)
        self._retried += piece.retried
        job.deliver(piece)

    def run_stream(self, job: StreamJob) -> None:
        def pump() -> bool:
            got = job.next_chunk()
            if got is None:
                return False
            self._run(job, *got)
            return True

        job.pump = pump
        job.computed.set()  # tasks run as they are read: there is nothing to wait for

    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._run(job, 0, 0, [(args, kwargs)])

    def stats(self) -> PoolStats:
        uptime = time.monotonic() - self._started
        row = WorkerStats(
            0, None, True, self._tasks, self._failed, self._busy, uptime, self._retried
        )
        return PoolStats(self.name, [row])

    def close(self) -> None:
        return None

    def terminate(self) -> None:
        return None

    def join(self, timeout: float | None = None) -> bool:
        return True
