"""The caller's side of the cluster backends (``dask``, ``ray``): what they share.

::

    feeder thread (per stream)            the engine (Dask / Ray)       collector thread
    job.next_chunk() when the window ─▶   submit(run_chunk, ...)  ─▶   one finished chunk
    has room; pickles the inputs          runs it on some worker        at a time: decode,
                                                                        deliver, or resubmit

The window of the job (a semaphore the consumer refills) bounds how many chunks are in
flight, so an endless generator runs in constant memory: neither engine accepts an
iterator, and this is the back-pressure they lack. A subclass says how to submit a
chunk and runs the collector that calls :meth:`ClusterBackend.finished` /
:meth:`ClusterBackend.crashed` / :meth:`ClusterBackend.broken` for each chunk.

The function, the inputs and the initializer are pickled by :mod:`._byvalue`, which
sends the caller's ``__main__`` and the modules next to its script by value: the
workers cannot import them.

A chunk whose worker died (Dask's ``KilledWorker``, Ray's ``WorkerCrashedError``) is
split (``_tasks/rules.py``): each of its tasks is resubmitted alone, so the task that
kills its worker is the only one to fail, with :class:`~corepool.errors.WorkerCrashed`,
once its retries are spent, as on the process backend.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
import weakref
from abc import abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from .._tasks.job import CallJob, Job, Piece, StreamJob, input_failure_piece, start_feeder
from .._tasks.rules import culprit, may_retry
from ..errors import CorepoolError, NotSupported, SerializationError, WorkerCrashed
from ..progress import PoolStats, WorkerStats
from ..serialize import FailureInfo, dumps_code, find_unpicklable, loads
from ..sharedmem import Shared, reducing_shared_with
from . import _byvalue, _capture, _remote
from .base import Backend

__all__ = ["Chunk", "ClusterBackend", "reject_local_options"]


@dataclass
class Chunk:
    """Tasks ``start .. start + len(items) - 1`` of a job, out on the cluster."""

    job: Job
    origin: int
    start: int
    items: list[Any]
    attempt: int = 0  # crashes already charged to this task (single-task chunks)
    handle: Any = None  # the engine's future / object reference


def reject_local_options(backend: str, **options: Any) -> None:
    """ValueError for process-backend options a cluster backend cannot honour."""
    for name, value in options.items():
        if value is not None:
            raise ValueError(
                f"{name}= is an option of the process backend; the {backend} backend's "
                "workers are started by the cluster, not by corepool"
            )


def _missing_module_advice(cause: BaseException, backend: str) -> str:
    """What to do when the workers lack a module the function or the inputs need."""
    name = getattr(cause, "name", None)
    if not isinstance(cause, ModuleNotFoundError) or not name:
        return ""
    return (
        f". The {backend} workers cannot import {name!r}{_byvalue.why_by_reference(name)}: "
        "install it on every worker (as for any cluster program), or put the directory "
        "that holds it on the workers' PYTHONPATH. Modules in your script's own directory "
        "are sent by value unless they cannot be pickled (see docs/cluster.md)"
    )


class ClusterBackend(Backend):
    """Chunks of jobs as tasks of a cluster engine; results back through a collector."""

    stops_timed_out_tasks = False
    survives_crashes = True
    pickles = True
    remote = True
    #: Appended to a TaskTimeout's message: what became of the overrunning task.
    overrun_note = ""
    #: The worker times each task itself (else the backend enforces deadlines).
    times_tasks_on_worker = True

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._token = uuid.uuid4().hex[:12]
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight: dict[int, Chunk] = {}  # by key number
        self._specs: dict[int, bytes] = {}  # job id -> pickled Spec
        self._spec_shared: dict[int, dict[str, Any]] = {}  # job id -> shared objects it uses
        self._shared: dict[str, Any] = {}  # key -> engine reference of a shared object
        self._closed = False
        self._terminated = False
        self._started = time.monotonic()
        # Per worker process ("host:pid"): [number, pid, tasks, failed, busy, retried].
        self._counters: dict[str, list[Any]] = {}
        self._restarts = 0

    # What a subclass provides -----------------------------------------------------
    @abstractmethod
    def submit(self, key: str, args: tuple[Any, ...]) -> Any:
        """Hand ``_remote.run_chunk(*args)`` to the engine under ``key``; its handle."""

    @abstractmethod
    def place_shared(self, value: Any) -> Any:
        """Put a ``corepool.shared`` object on the cluster once; the engine's reference,
        which the engine resolves to the object when it is an argument of a task."""

    @abstractmethod
    def cancel_all(self, handles: list[Any]) -> None:
        """Ask the engine to drop these chunks (terminate, stop_job)."""

    @abstractmethod
    def shutdown(self) -> None:
        """Release the engine: close what this backend started, and nothing else."""

    def run_on_workers(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
    ) -> dict[Any, Any]:
        raise NotSupported(
            f"run_on_workers is not supported on the {self.name} backend: its workers "
            "cannot be asked one by one; use the process or dask backend"
        )

    def capacity(self) -> int:
        """Tasks the cluster runs at once (chunk sizes and windows are sized on it)."""
        return self.workers

    # corepool.shared handles --------------------------------------------------------
    def _pickling(self, used: dict[str, Any]) -> AbstractContextManager[None]:
        """Pickle ``corepool.shared`` handles as keys of objects placed on the cluster
        once (``place_shared``); ``used`` collects the keys and engine references."""

        def reduce(handle: Shared[Any]) -> tuple[Any, ...]:
            key = f"corepool-shared-{self._token}-{handle.token[0]}-{handle.token[1]}"
            with self._lock:
                ref = self._shared.get(key)
            if ref is None:
                ref = self.place_shared(_byvalue.portable(handle.value))
                with self._lock:
                    self._shared[key] = ref
                # The cluster's copy goes when the caller's handle does.
                weakref.finalize(handle, self._shared.pop, key, None)
            used[key] = ref
            return _remote.shared_value, (key,)

        return reducing_shared_with(reduce)

    # Jobs ---------------------------------------------------------------------------
    def _spec(self, job: Job) -> bytes:
        blob = self._specs.get(job.id)
        if blob is None:
            timeout = job.timeout if self.times_tasks_on_worker else None
            spec = _remote.Spec(
                job.fn, job.style, job.retries, job.retry_on, timeout, self.overrun_note,
                _capture.caller_forward(),  # the caller's logging levels as the job starts
            )
            name = getattr(job.fn, "__qualname__", type(job.fn).__name__)
            used: dict[str, Any] = {}
            with self._pickling(used):
                blob = self._specs[job.id] = dumps_code(
                    spec, f"the function {name}", _byvalue.dumps
                )
            self._spec_shared[job.id] = used
        return blob

    def run_stream(self, job: StreamJob) -> None:
        self._check_open()
        self._spec(job)  # an unpicklable function fails here, before any input is read
        start_feeder(job, lambda origin, start, items: self.send(job, origin, start, items))

    def run_call(self, job: CallJob, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._check_open()
        self._spec(job)
        if job.claim():
            self.send(job, 0, 0, [(args, kwargs)])

    def release(self, job: Job) -> None:
        with self._lock:
            self._specs.pop(job.id, None)
            self._spec_shared.pop(job.id, None)

    def stop_job(self, job: Job) -> None:
        """Cancel ``job`` and its chunks on the cluster: those not started never run
        (they were left queued on the engine), running ones as the engine allows
        (Dask lets a running task finish, Ray stops its worker)."""
        job.cancel()
        with self._lock:
            mine = [number for number, chunk in self._inflight.items() if chunk.job is job]
            chunks = [self._inflight.pop(number) for number in mine]
            if not self._inflight:
                self._idle.notify_all()
        handles = [chunk.handle for chunk in chunks if chunk.handle is not None]
        if handles:
            try:
                self.cancel_all(handles)
            except Exception:
                pass  # the engine may be gone: nothing of the job runs then
        self.release(job)

    def _check_open(self) -> None:
        if self._closed:
            raise CorepoolError(f"the {self.name} pool is closed")

    def send(self, job: Job, origin: int, start: int, items: list[Any], attempt: int = 0) -> None:
        """Pickle a chunk's inputs and submit it; inputs that do not pickle fail alone."""
        if job.cancelled or self._terminated:
            return
        spec = self._spec(job)
        used = dict(self._spec_shared.get(job.id, {}))
        try:
            with self._pickling(used):
                blob = _byvalue.dumps(items)
        except Exception:
            self._send_picklable(job, origin, start, items)
            return
        key_number = next(self._keys)
        chunk = Chunk(job, origin, start, items, attempt)
        with self._lock:
            self._inflight[key_number] = chunk
        key = f"corepool-{self._token}-{job.id}-{start}-{key_number}"
        try:
            token = f"{self._token}-{job.id}"
            args = (token, start, spec, blob, tuple(used), *used.values())
            chunk.handle = self.submit(key, args)
        except BaseException:
            with self._lock:
                self._inflight.pop(key_number, None)
                self._idle.notify_all()
            raise

    def _send_picklable(self, job: Job, origin: int, start: int, items: list[Any]) -> None:
        bad = find_unpicklable(items, _byvalue.dumps)
        run_start = 0
        for pos in [*sorted(bad), len(items)]:
            if pos > run_start:
                self.send(job, origin, start + run_start, items[run_start:pos])
            if pos < len(items):
                job.deliver(input_failure_piece(job, origin, start, pos, items[pos], bad[pos]))
            run_start = pos + 1

    def _take(self, key: str) -> Chunk | None:
        number = int(key.rsplit("-", 1)[1])
        with self._lock:
            chunk = self._inflight.pop(number, None)
            if not self._inflight:
                self._idle.notify_all()
        return chunk

    # What the collector reports ---------------------------------------------------
    def finished(self, key: str, answer: bytes) -> None:
        """A chunk ran; ``answer`` is what :func:`_remote.run_chunk` returned."""
        chunk = self._take(key)
        if chunk is None:
            return
        job = chunk.job
        reply = loads(answer)
        if reply[0] == _remote.UNREADABLE:
            self._unreadable(chunk, reply[1], reply[2])
            return
        _, values, raw_failures, busy, worker, retried, kept = reply
        _capture.replay(kept, chunk)  # before the results: the order they happened in
        failures = {pos: info.rebuild() for pos, info in raw_failures.items()}
        self._count(worker, len(values), len(failures), busy, retried)
        job.sizer.observe(len(values), busy)
        job.deliver(
            Piece(chunk.start, values, failures, chunk.origin, chunk.items if failures else None)
        )

    def _unreadable(self, chunk: Chunk, what: str, info: FailureInfo) -> None:
        job = chunk.job
        if what == "inputs" and culprit(len(chunk.items)) is None:
            self._split(chunk)
            return
        subject = "the function" if what == "function" else f"the input of task {chunk.start}"
        cause = info.rebuild()
        error = SerializationError(
            f"{subject} cannot be unpickled on the {self.name} worker: "
            f"{info.type_name}: {info.message}{_missing_module_advice(cause, self.name)}"
        )
        error.__cause__ = cause
        if what == "function":
            job.cancel()
            job.fail(error)
        else:
            job.deliver(Piece(chunk.start, [None], {0: error}, chunk.origin, chunk.items))

    def crashed(self, key: str, detail: str) -> None:
        """The worker running a chunk died (as the engine reports it)."""
        chunk = self._take(key)
        if chunk is None:
            return
        with self._lock:
            self._restarts += 1
        if culprit(len(chunk.items)) is None:
            self._split(chunk)
            return
        error = WorkerCrashed(
            f"the {self.name} worker running task {chunk.start} died: {detail}",
            None,
            detail,
        )
        self.fail_task(chunk, error)

    def fail_task(self, chunk: Chunk, error: BaseException) -> None:
        """A failure pinned on the one task of ``chunk``: run it again while the rules
        allow (``_tasks/rules.py``), else deliver ``error``."""
        job = chunk.job
        if may_retry(error, chunk.attempt, job.retries, job.retry_on, job.cancelled):
            self.send(job, chunk.origin, chunk.start, chunk.items, chunk.attempt + 1)
            return
        job.deliver(Piece(chunk.start, [None], {0: error}, chunk.origin, chunk.items))

    def _split(self, chunk: Chunk) -> None:
        for pos, item in enumerate(chunk.items):
            self.send(chunk.job, chunk.origin, chunk.start + pos, [item])

    def broken(self, key: str, error: BaseException) -> None:
        """The engine failed a chunk for a reason of its own (not the task's)."""
        chunk = self._take(key)
        if chunk is None or chunk.job.cancelled:
            return
        failure = CorepoolError(f"the {self.name} cluster could not run a chunk: {error!r}")
        failure.__cause__ = error
        chunk.job.fail(failure)

    def _count(self, worker: str, tasks: int, failed: int, busy: float, retried: int) -> None:
        with self._lock:
            row = self._counters.get(worker)
            if row is None:
                pid = int(worker.rsplit(":", 1)[1])
                row = self._counters[worker] = [len(self._counters), pid, 0, 0, 0.0, 0]
            row[2] += tasks
            row[3] += failed
            row[4] += busy
            row[5] += retried

    # Lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True

    def terminate(self) -> None:
        self._closed = True
        with self._lock:
            if self._terminated:
                return
            self._terminated = True
            chunks = list(self._inflight.values())
            self._inflight.clear()
            self._idle.notify_all()
        for chunk in chunks:
            chunk.job.fail(CorepoolError("the pool was terminated before this task finished"))
        self._shared.clear()
        handles = [c.handle for c in chunks if c.handle is not None]
        if handles:
            try:
                self.cancel_all(handles)
            except Exception:
                pass  # the engine may already be gone; shutdown() follows anyway
        self.shutdown()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._inflight and not self._terminated:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        if not self._terminated:
            self._terminated = True
            self.shutdown()
        return True

    def alive_workers(self) -> set[int] | None:
        """Process ids of the workers alive now, if the engine can tell."""
        return None

    def stats(self) -> PoolStats:
        alive = self.alive_workers() if not self._terminated else set()
        now = time.monotonic()
        with self._lock:
            rows = sorted(self._counters.items(), key=lambda kv: kv[1][0])
        workers = [
            WorkerStats(
                number,
                pid,
                alive is None or pid in alive,
                tasks,
                failed,
                busy,
                now - self._started,
                retried,
            )
            for _, (number, pid, tasks, failed, busy, retried) in rows
        ]
        return PoolStats(self.name, workers, self._restarts)
