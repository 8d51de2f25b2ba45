"""Progress bars for running jobs, and the read-only statistics of a pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["PoolStats", "Progress", "WorkerStats", "make_progress"]


class WorkerStats(NamedTuple):
    """One worker's record: tasks run, attempts that failed there and how many of those
    were retried, ``busy`` seconds spent running tasks since it started.

    Examples:
        >>> import corepool
        >>> with corepool.Pool(2) as pool:
        ...     stats = pool.stats()
        >>> [(w.worker, w.alive, w.tasks) for w in stats.workers]
        [(0, True, 0), (1, True, 0)]
    """

    worker: int
    pid: int | None
    alive: bool
    tasks: int
    failed: int
    busy: float
    uptime: float
    retried: int = 0
    #: "starting", "idle", "busy", "quitting", "stopping" or "ended" (process backend;
    #: "" where the backend does not say).
    state: str = ""
    #: Indexes (in their job's input) of the tasks it runs now: the exact task when
    #: its job has a timeout (tracked), else every task of the chunk it holds.
    running: tuple[int, ...] = ()
    #: When (``time.time()``) the task, or chunk, it runs now started; None if idle.
    running_since: float | None = None

    @property
    def idle(self) -> float:
        """Seconds alive and not running a task."""
        return max(0.0, self.uptime - self.busy)


class PoolStats(NamedTuple):
    """A snapshot of a pool: per-worker counters, restarts, and totals.

    Examples:
        >>> import corepool
        >>> with corepool.Pool(2) as pool:
        ...     _ = pool.map(abs, range(100))
        ...     stats = pool.stats()
        >>> stats.tasks, stats.failed, stats.restarts
        (100, 0, 0)
    """

    backend: str
    workers: Sequence[WorkerStats] = ()
    restarts: int = 0

    @property
    def tasks(self) -> int:
        """Tasks finished (including failed ones) by every worker, past and present."""
        return sum(w.tasks for w in self.workers)

    @property
    def failed(self) -> int:
        """Task attempts that failed in a worker (exception, crash or timeout)."""
        return sum(w.failed for w in self.workers)

    @property
    def retried(self) -> int:
        """Failed attempts that were tried again."""
        return sum(w.retried for w in self.workers)

    @property
    def busy(self) -> float:
        """Seconds the workers spent running tasks, all together."""
        return sum(w.busy for w in self.workers)

    def __repr__(self) -> str:
        lines = [
            f"PoolStats(backend={self.backend!r}, tasks={self.tasks}, failed={self.failed}, "
            f"retried={self.retried}, restarts={self.restarts})",
            f"  {'worker':>6} {'pid':>8} {'alive':>5} {'tasks':>8} {'failed':>6} "
            f"{'retried':>7} {'busy s':>8} {'idle s':>8}",
        ]
        for w in self.workers:
            lines.append(
                f"  {w.worker:>6} {w.pid or '-':>8} {'yes' if w.alive else 'no':>5} {w.tasks:>8} "
                f"{w.failed:>6} {w.retried:>7} {w.busy:>8.2f} {w.idle:>8.2f}"
            )
        return "\n".join(lines)


class Progress(Protocol):
    """What corepool needs from a progress display."""

    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


class _CallbackProgress:
    def __init__(self, callback: Callable[[int, int | None], Any], total: int | None) -> None:
        self._callback = callback
        self._total = total
        self._done = 0

    def update(self, n: int) -> None:
        self._done += n
        self._callback(self._done, self._total)

    def close(self) -> None:
        return None


def make_progress(
    progress: Any, iterable: Iterable[Any], desc: str = "corepool"
) -> Progress | None:
    """A progress display for ``progress=``: True (a tqdm bar), a callable, or None.

    A callable is called as ``callback(done, total)`` after each batch of results;
    ``total`` is ``len(iterable)`` when it has one, else None.
    """
    if not progress:
        return None
    total: int | None
    try:
        total = len(iterable)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if callable(progress):
        return _CallbackProgress(progress, total)
    from tqdm.auto import tqdm

    bar: Progress = tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True)
    return bar
