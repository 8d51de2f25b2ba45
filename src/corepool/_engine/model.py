"""What the pool's state machine works with: chunks, workers, and the actions it returns.

Plain records, kept apart from the rules in ``state.py``.
"""

from __future__ import annotations

import enum
import multiprocessing.pool
import signal
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from .._tasks.job import Job, Piece
from ..errors import BrokenPool, SerializationError, WorkerCrashed, also
from ..serialize import FailureInfo
from . import protocol as p
from .exits import describe_exit

__all__ = [
    "Action",
    "CancelJob",
    "Chunk",
    "Deliver",
    "FailJob",
    "Kill",
    "Measured",
    "Quit",
    "Send",
    "Start",
    "Worker",
    "WorkerPhase",
    "error_from_worker",
    "start_failure_error",
]


class Chunk:
    """Inputs ``start .. start + count - 1`` of ``job``, pickled as a list in ``payload``.

    ``items`` are the inputs themselves, kept while the chunk is out: retries and
    isolation re-pickle them one by one, and error notes describe them, so the parent
    never unpickles a task's input (which could run arbitrary reconstruction code).
    """

    __slots__ = ("attempt", "count", "items", "job", "origin", "payload", "seq", "start")

    def __init__(
        self,
        job: Job,
        origin: int,
        start: int,
        count: int,
        payload: Any,  # bytes, or a sharedmem.Packed (bytes with shared-memory segments)
        attempt: int = 0,  # failures already pinned on this (single) task
        *,
        items: list[Any] | None = None,
    ) -> None:
        self.job = job
        self.origin = origin
        self.start = start
        self.count = count
        self.payload = payload
        self.attempt = attempt
        self.seq = -1  # unique in the pool, set when it enters the queue
        self.items = items

    def __repr__(self) -> str:
        return f"Chunk(seq={self.seq}, start={self.start}, count={self.count})"

    def alone(self, pos: int, pickle_items: Callable[[list[Any]], Any], attempt: int = 0) -> Chunk:
        """Task ``pos`` as a chunk of its own (``attempt``: failures pinned on it)."""
        if self.count == 1:
            return Chunk(
                self.job, self.origin, self.start, 1, self.payload, attempt, items=self.items
            )
        assert self.items is not None, "a chunk of several tasks keeps its inputs"
        item = self.items[pos]
        payload = pickle_items([item])
        return Chunk(self.job, self.origin, self.start + pos, 1, payload, attempt, items=[item])

    def after(self, lo: int, pickle_items: Callable[[list[Any]], Any]) -> list[Chunk]:
        """Tasks ``lo ..`` (none of which started) as one chunk; [] if there are none."""
        if lo >= self.count:
            return []
        if lo == 0:
            return [
                Chunk(self.job, self.origin, self.start, self.count, self.payload, items=self.items)
            ]
        assert self.items is not None, "a chunk of several tasks keeps its inputs"
        items = self.items[lo:]
        payload = pickle_items(items)
        return [Chunk(self.job, self.origin, self.start + lo, len(items), payload, items=items)]

    def inputs(self, lo: int, hi: int) -> list[Any] | None:
        """The inputs of tasks ``lo .. hi - 1``, if kept."""
        return None if self.items is None else self.items[lo:hi]


class WorkerPhase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Worker:
    """What the state knows of one worker process."""

    def __init__(self, wid: int) -> None:
        self.wid = wid
        self.phase = WorkerPhase.STARTING
        self.pid: int | None = None
        self.queue: deque[Chunk] = deque()
        self.known_jobs: set[int] = set()
        self.to_forget: list[int] = []
        self.budget: int | None = None  # tasks it may still be sent (maxtasksperchild)
        self.quitting = False
        self.kill_at: float | None = None
        # Results of the running chunk's tasks sent on their own as they finished
        # (tracked jobs, results too large for the worker's result log): position ->
        # (value, failure or None).
        self.parts: dict[int, tuple[Any, Any]] = {}
        # When its last chunk finished: a lower bound for the next one's start.
        self.free_since = 0.0
        self.tasks = 0
        self.failed = 0  # attempts that ended with an error here (retried or not)
        self.retried = 0  # of those, the ones that were tried again
        self.busy = 0.0
        self.started_at = 0.0
        self.ended_at: float | None = None

    def absorb(self, old: Worker, now: float) -> None:
        """Add an ended worker's counters to this summary record (started at 0: its
        "end" is the summed lifetimes)."""
        self.tasks += old.tasks
        self.failed += old.failed
        self.retried += old.retried
        self.busy += old.busy
        lifetime = (old.ended_at or now) - old.started_at
        self.ended_at = (self.ended_at or 0.0) + lifetime


# Actions ----------------------------------------------------------------------------
# (Named tuples, not dataclasses: they are built per chunk, and dataclasses cost
# milliseconds of a short program's start-up.)
class Start(NamedTuple):
    wid: int


class Send(NamedTuple):
    """Claim the chunk for its job (``Job.claim``: a cancelled future refuses), then
    send it; a refused chunk goes back to the state as ``PoolState.on_refused``."""

    wid: int
    chunk: Chunk
    with_function: bool
    forget: tuple[int, ...]


class Quit(NamedTuple):
    wid: int


#: The signal that ends a worker at once (Windows has no SIGKILL: ``Process.kill()``
#: is TerminateProcess there, and the supervisor sends it that way everywhere).
KILL = int(getattr(signal, "SIGKILL", 9))


class Kill(NamedTuple):
    wid: int
    signum: int


class Deliver(NamedTuple):
    job: Job
    piece: Piece


class FailJob(NamedTuple):
    job: Job
    error: BaseException


class CancelJob(NamedTuple):
    """The job cannot go on: stop pulling its input (``Job.cancel``)."""

    job: Job


class Measured(NamedTuple):
    """A chunk of ``items`` tasks of ``job`` kept its worker busy ``busy`` seconds: for
    the job's chunk sizer, which belongs to the thread that pulls the job's input."""

    job: Job
    items: int
    busy: float


Action = Start | Send | Quit | Kill | Deliver | FailJob | CancelJob | Measured


def error_from_worker(chunk: Chunk, pos: int, raw: Any) -> BaseException:
    """The exception a task failed with, from what its worker sent (``failures``)."""
    if isinstance(raw, BaseException):  # made by the supervisor (unreadable result)
        return raw
    if isinstance(raw, tuple) and raw and raw[0] == p.RESULT_UNPICKLABLE:
        info: FailureInfo = raw[1]
        failure = SerializationError(
            f"the result of task {chunk.start + pos} cannot be pickled: "
            f"{info.type_name}: {info.message}"
        )
        failure.__cause__ = info.rebuild()
        # Also what multiprocessing.Pool raises here, with its two fields.
        failure.exc = repr(failure.__cause__)  # type: ignore[attr-defined]
        failure.value = info.message  # type: ignore[attr-defined]
        return also(failure, multiprocessing.pool.MaybeEncodingError)  # type: ignore[attr-defined]
    if isinstance(raw, tuple) and raw and raw[0] == p.MEMORY_LIMIT:
        limit: int = raw[1]
        error = WorkerCrashed(
            f"task {chunk.start + pos} ran out of memory: it passed the worker memory "
            f"limit of {limit:,} bytes (MemoryError); its worker was replaced",
            None,
            "memory limit",
        )
        error.__cause__ = raw[2].rebuild()
        return error
    assert isinstance(raw, FailureInfo)
    rebuilt: BaseException = raw.rebuild()
    return rebuilt


def start_failure_error(exitcode: int | None, times: int) -> BrokenPool:
    """The error of a pool whose workers exited while starting, ``times`` in a row."""
    return BrokenPool(
        f"worker processes exit while starting ({describe_exit(exitcode)}), "
        f"{times} times in a row. If the script that creates the pool runs "
        'it at import time, put that code under `if __name__ == "__main__":` - '
        "worker processes import the main script, and must not start pools themselves. "
        "The workers' own error, if any, is printed above."
    )
