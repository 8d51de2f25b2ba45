"""The serial backend: every task runs in the calling thread, when its result is wanted.

For debugging: plain tracebacks, ``pdb`` and print statements work as in a loop, and
``COREPOOL_BACKEND=serial`` switches a whole program to it without editing code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._engine.job import CallJob, StreamJob
from .base import Backend, run_inline


class SerialBackend(Backend):
    """Runs tasks inline, lazily: ``imap`` computes each result as it is consumed."""

    name: ClassVar[str] = "serial"

    def __init__(self, workers: int = 1, **_: Any) -> None:
        self.workers = 1

    def run_stream(self, job: StreamJob) -> None:
        def pump() -> bool:
            got = job.next_chunk()
            if got is None:
                return False
            job.deliver(run_inline(job, *got))
            return True

        job.pump = pump

    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        job.deliver(run_inline(job, 0, 0, [(args, kwargs)]))

    def close(self) -> None:
        return None

    def terminate(self) -> None:
        return None

    def join(self, timeout: float | None = None) -> bool:
        return True
