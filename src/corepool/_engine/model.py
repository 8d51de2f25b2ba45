"""What the pool's state machine works with: chunks, workers, and the actions it returns.

Plain records, kept apart from the rules in ``state.py``.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, NamedTuple

from ..errors import SerializationError, WorkerCrashed
from ..serialize import FailureInfo
from . import protocol as p
from .job import Job, Piece

__all__ = [
    "Action",
    "Chunk",
    "Deliver",
    "FailJob",
    "Kill",
    "Quit",
    "Send",
    "Start",
    "Worker",
    "WorkerPhase",
    "error_from_worker",
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


# Actions ----------------------------------------------------------------------------
# (Named tuples, not dataclasses: they are built per chunk, and dataclasses cost
# milliseconds of a short program's start-up.)
class Start(NamedTuple):
    wid: int


class Send(NamedTuple):
    wid: int
    chunk: Chunk
    with_function: bool
    forget: tuple[int, ...]


class Quit(NamedTuple):
    wid: int


class Kill(NamedTuple):
    wid: int
    signum: int


class Deliver(NamedTuple):
    job: Job
    piece: Piece


class FailJob(NamedTuple):
    job: Job
    error: BaseException


Action = Start | Send | Quit | Kill | Deliver | FailJob


def error_from_worker(chunk: Chunk, pos: int, raw: Any) -> BaseException:
    """The exception a task failed with, from what its worker sent (``failures``)."""
    if isinstance(raw, BaseException):  # made by the supervisor (unreadable result)
        return raw
    if isinstance(raw, tuple) and raw and raw[0] == p.RESULT_UNPICKLABLE:
        info: FailureInfo = raw[1]
        error: BaseException = SerializationError(
            f"the result of task {chunk.start + pos} cannot be pickled: "
            f"{info.type_name}: {info.message}"
        )
        return error
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
