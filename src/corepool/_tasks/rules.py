"""The rules of failure, written once for every backend.

``may_retry``: a task that failed runs again while its job has retries left, if the
error is one of the job's ``retry_on`` types, and never for a
:class:`~corepool.errors.SerializationError` (an input or result that cannot be
pickled fails the same way every time). Timeouts and worker crashes are errors like
the others here: a :class:`~corepool.errors.TaskTimeout` or
:class:`~corepool.errors.WorkerCrashed` is retried under the same rule, on every
backend that has them.

``culprit``: a failure of a whole chunk (its worker died, its inputs could not be
unpickled, its results could not be read, it hung before its first task started) is
pinned on one task only when the backend knows which one was running, or when the
chunk has one task. Otherwise nobody can tell, and the chunk is *split*: each of its
tasks runs again as a chunk of its own, so that the culprit, if it fails again, fails
alone, and its neighbours are not charged for it.

Used by ``_engine/state.py`` (process backend), ``run.py`` (thread, serial and the
cluster workers), ``backends/_cluster.py`` and ``backends/ray.py``.
"""

from __future__ import annotations

from ..errors import SerializationError

__all__ = ["culprit", "may_retry"]


def may_retry(
    error: BaseException,
    attempt: int,
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    cancelled: bool = False,
) -> bool:
    """Whether a task that failed with ``error`` on its ``attempt`` (0 for its first
    run) runs again."""
    if cancelled or attempt >= retries or isinstance(error, SerializationError):
        return False
    return isinstance(error, retry_on)


def culprit(count: int, known: int | None = None) -> int | None:
    """The position a failure of a whole chunk of ``count`` tasks is pinned on
    (``known``: the task the backend saw running); None: split the chunk."""
    if known is not None:
        return known
    return 0 if count == 1 else None
