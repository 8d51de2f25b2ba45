"""A pool's statistics, read from its state on the supervisor thread (which owns it).

``ProcessEngine.stats`` queues :func:`snapshot` as a supervisor command and waits for
the answer, so no other thread reads the state while the supervisor changes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..progress import PoolStats, WorkerStats
from .model import Worker, WorkerPhase
from .state import PoolState

SlotReader = Callable[[int], tuple[int, int, float]]


def _activity(
    worker: Worker, read_slot: SlotReader, now: float
) -> tuple[str, tuple[int, ...], float | None]:
    """What the worker does: its state, the task indexes it runs, since when (wall)."""
    if worker.phase is WorkerPhase.STARTING:
        return "starting", (), None
    if worker.phase is WorkerPhase.STOPPING:
        return "stopping", (), None
    if not worker.queue:
        return ("quitting" if worker.quitting else "idle"), (), None
    head = worker.queue[0]
    seq, pos, started = read_slot(worker.wid)
    if seq != head.seq:  # sent, not taken yet: it finishes the chunk before
        started = worker.free_since
        running = tuple(range(head.start, head.start + head.count))
    elif head.job.timeout is not None and pos >= 0:
        running = (head.start + pos,)
    else:
        running = tuple(range(head.start, head.start + head.count))
    return "busy", running, time.time() - (now - started)


def snapshot(state: PoolState, now: float, read_slot: SlotReader, backend: str) -> PoolStats:
    """Per-worker counters and activity, and the pool's restarts, as of ``now``."""
    rows: list[WorkerStats] = []
    for worker in state.workers.values():
        activity, running, since = _activity(worker, read_slot, now)
        rows.append(_row(worker, True, now, activity, running, since))
    ended = list(state.retired)
    if state.retired_earlier.tasks:
        ended.append(state.retired_earlier)
    rows += [_row(w, False, now, "ended", (), None) for w in ended]
    rows.sort(key=lambda row: row.worker)
    return PoolStats(backend, rows, state.restarts)


def _row(
    w: Worker,
    alive: bool,
    now: float,
    activity: str,
    running: tuple[int, ...],
    since: float | None,
) -> WorkerStats:
    uptime = (now if w.ended_at is None else w.ended_at) - w.started_at
    return WorkerStats(
        w.wid, w.pid, alive, w.tasks, w.failed, w.busy, uptime, w.retried,
        activity, running, since,
    )  # fmt: skip
