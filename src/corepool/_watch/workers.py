"""What each worker of a pool does now, and its table on a live page.

:func:`worker_status` is the one place that asks a pool which task each worker holds.
For the process backend it reads what the engine's state knows, on the supervisor
thread that owns it (``ProcessEngine.inspect``, as ``stats`` does): the chunk at the
head of each worker's queue, and the worker's shared slot (which chunk it took, and
when; with a timeout, which task of it, and since when). Other backends have no
per-task record: their workers show their counters only.

:class:`WorkersView` adds what the operating system knows (memory, CPU, via psutil)
and renders the rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from .html import esc, seconds

__all__ = ["PoolStatus", "WorkerStatus", "WorkersView", "cut", "describe", "worker_status"]

INPUT_CHARS = 120  # of an input's summary shown


class WorkerStatus(NamedTuple):
    """One worker, now.

    ``task`` is the index (in its job) of the task it runs; when the engine does not
    track positions in that job (no timeout), it is the first task of the chunk it
    runs, and ``chunk`` says how many the chunk holds. ``running`` is how long that
    task (or chunk) has run, in seconds; ``job`` and ``value`` are the task's job and
    input (the parent's copy), to describe it.
    """

    worker: int
    pid: int | None
    state: str  # starting, idle, busy, stopping, quitting (threads: alive, ended)
    task: int | None = None
    chunk: int = 1
    running: float | None = None
    job: Any = None
    value: Any = None
    tasks: int = 0
    failed: int = 0


class PoolStatus(NamedTuple):
    """The workers of a pool now, and how many were replaced (crash, timeout)."""

    backend: str
    workers: list[WorkerStatus]
    restarts: int


def worker_status(core: Any) -> PoolStatus:
    """The workers of ``core`` (a :class:`~corepool.core.PoolCore`) and their tasks."""
    engine = getattr(core.backend, "engine", None)
    if engine is None:
        stats = core.stats()
        return PoolStatus(stats.backend, [
            WorkerStatus(w.worker, w.pid, "alive" if w.alive else "ended", tasks=w.tasks,
                         failed=w.failed) for w in stats.workers], stats.restarts)
    return engine.inspect(_process_rows)  # type: ignore[no-any-return]


def _process_rows(state: Any, now: float, read_slot: Callable[[int], tuple[int, int, float]]
                  ) -> PoolStatus:
    """The rows of a process pool, read on its supervisor thread (the state's owner)."""
    rows = []
    for worker in sorted(list(state.workers.values()), key=lambda w: w.wid):
        try:
            head = worker.queue[0]
        except IndexError:
            head = None
        phase = worker.phase.value
        name = ("quitting" if worker.quitting else "busy" if head is not None else "idle") \
            if phase == "running" else phase
        row = WorkerStatus(worker.wid, worker.pid, name, tasks=worker.tasks,
                           failed=worker.failed)
        if head is not None and phase == "running":
            seq, pos, started = read_slot(worker.wid)
            if seq == head.seq:  # the worker has taken the chunk
                exact = pos >= 0 and head.job.timeout is not None
                at = pos if exact else 0
                items = head.items
                value = items[at] if items is not None and at < len(items) else None
                row = row._replace(task=head.start + at, chunk=1 if exact else head.count,
                                   running=max(0.0, now - started), job=head.job, value=value)
        rows.append(row)
    return PoolStatus("process", rows, state.restarts)


def describe(job: Any, value: Any) -> str:
    """A short summary of a task's input (never fails, cut to INPUT_CHARS)."""
    try:
        text = str(job.describe_value(value))
    except Exception:
        text = f"<{type(value).__name__} object>"
    return cut(text)


def cut(text: str) -> str:
    """``text`` cut to INPUT_CHARS, as an input's summary is shown."""
    return text if len(text) <= INPUT_CHARS else text[:INPUT_CHARS - 3] + "..."


Label = Callable[[WorkerStatus], str]


class WorkersView:
    """The workers section of a live page: each worker's pid, state, current task and
    input, how long it has run, memory (RSS) and CPU; restarts so far.

    ``label`` names the current task (default: its index); ``corepool run`` names the
    input line instead. ``show`` summarizes its input (default: :func:`describe`; a
    first ``corepool run`` sends raw lines and shows their text). CPU is measured
    between two calls."""

    def __init__(self, label: Label | None = None, show: Label | None = None) -> None:
        self.label = label or (lambda row: f"#{row.task}")
        self.show = show or (lambda row: describe(row.job, row.value))
        self._procs: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _usage(self, pid: int | None) -> tuple[str, str]:
        if pid is None:
            return "-", "-"
        import psutil

        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                rss, cpu = proc.memory_info().rss, proc.cpu_percent()
        except psutil.Error:
            return "-", "-"
        return f"{rss / 2**20:.1f} MiB", f"{cpu:.0f}%"

    def _row(self, row: WorkerStatus) -> str:
        task = value = running = ""
        if row.task is not None:
            task = esc(self.label(row))
            if row.chunk > 1:
                task += f' <span class="muted">(chunk of {row.chunk})</span>'
            value = esc(self.show(row))
            running = seconds(row.running)
        rss, cpu = self._usage(row.pid)
        return (f'<tr class="worker"><td class="n">{row.worker}</td>'
                f'<td class="n pid">{row.pid or "-"}</td>'
                f'<td class="state-{esc(row.state)}">{esc(row.state)}</td>'
                f'<td class="task">{task}</td><td class="input">{value}</td>'
                f'<td class="n running">{running}</td><td class="n">{rss}</td>'
                f'<td class="n">{cpu}</td><td class="n">{row.tasks}</td>'
                f'<td class="n">{row.failed}</td></tr>')

    def html(self, status: PoolStatus, title: str = "Workers", section: str = "") -> str:
        """The section for one pool's status (``section``: its HTML id)."""
        with self._lock:
            rows = "".join(self._row(row) for row in status.workers)
            alive = {row.pid for row in status.workers}
            for pid in [pid for pid in self._procs if pid not in alive]:
                del self._procs[pid]
        note = (f"{status.backend} backend; {status.restarts} worker(s) replaced so far "
                "(after a crash or a timeout)")
        ident = f' id="{esc(section)}"' if section else ""
        return (f'<section class="workers"{ident}><h2>{esc(title)}</h2>'
                f'<p class="muted">{esc(note)}</p><table><tr>'
                '<th class="n">worker</th><th class="n">pid</th><th>state</th>'
                '<th>current task</th><th>input</th><th class="n">running for</th>'
                '<th class="n">RSS</th><th class="n">CPU</th><th class="n">tasks</th>'
                f'<th class="n">failed</th></tr>{rows}</table></section>')
