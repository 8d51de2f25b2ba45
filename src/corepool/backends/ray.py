"""The ``ray`` backend: chunks of tasks as Ray tasks.

Which Ray: an already initialised one (``ray.init`` called by the program: used as it
is, never shut down here), else ``address=`` (``ray.init(address=...)``, disconnected
with the pool), else a local Ray of ``workers`` CPUs started with the pool and shut
down with it.

Tiny tasks are chunked as on the process backend, and the job's window bounds how many
chunks are submitted and not yet consumed, which Ray does not do for an iterator. Each
chunk's ``ObjectRef`` future hands it to one collector thread when it is done, so
nothing polls.

Timeouts are real: a task with a timeout runs as a streaming task that first
announces that it started, so its deadline counts from its start, not from its time in
Ray's queue; past the deadline it is cancelled with ``ray.cancel(force=True)``, which
kills the worker process running it (Ray starts another). A worker that dies under a
chunk (``WorkerCrashedError``; Ray's own ``max_retries`` is 0 here) gets the chunk
split and each task retried alone, so only the task that kills its worker fails, with
:class:`~corepool.errors.WorkerCrashed`, after its ``retries``.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from concurrent.futures import Future
from typing import Any, ClassVar

import ray
from ray import exceptions as ray_errors

from .._tasks.job import StreamJob
from ..errors import TaskTimeout
from . import _remote
from ._cluster import ClusterBackend, reject_local_options
from .thread import _Watchdog

__all__ = ["BACKEND", "RayBackend", "create"]

_DEATHS = (
    ray_errors.WorkerCrashedError,
    ray_errors.NodeDiedError,
    ray_errors.OutOfMemoryError,
    ray_errors.LocalRayletDiedError,
)


class RayBackend(ClusterBackend):
    """Runs jobs as Ray tasks, one per chunk."""

    name: ClassVar[str] = "ray"
    stops_timed_out_tasks: ClassVar[bool] = True
    overrun_note = "Ray cancelled it and killed its worker process"
    times_tasks_on_worker = False

    def __init__(self, workers: int, *, address: str | None = None) -> None:
        super().__init__(workers)
        self._owns_ray = not ray.is_initialized()
        # ray.init installs its own SIGTERM handler in this process, and it outlives
        # ray.shutdown; a Ray started here gives the program its handler back.
        self._sigterm = signal.getsignal(signal.SIGTERM)
        if self._owns_ray:
            if address is not None:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False)
        # No retries by Ray itself: a lost chunk is split and retried task by task here.
        self._run = ray.remote(num_cpus=1, max_retries=0)(_remote.run_chunk)
        self._run_announced = ray.remote(num_cpus=1, max_retries=0, num_returns="streaming")(
            _remote.run_chunk_announced
        )
        self._done: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._watchdog: _Watchdog | None = None
        self._collector = threading.Thread(
            target=self._collect, name="corepool-ray-collector", daemon=True
        )
        self._collector.start()

    def capacity(self) -> int:
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
        except Exception:
            cpus = 0
        return cpus or self.workers

    def run_stream(self, job: StreamJob) -> None:
        if job.timeout is not None:
            job.sizer.fixed = 1  # a deadline per chunk is a deadline per task
        super().run_stream(job)

    def submit(self, key: str, args: tuple[Any, ...]) -> Any:
        with self._lock:
            chunk = self._inflight.get(int(key.rsplit("-", 1)[1]))
        timeout = None if chunk is None else chunk.job.timeout
        if timeout is None:
            ref = self._run.remote(*args)
            ref.future().add_done_callback(lambda future: self._done.put((key, future)))
            return ref
        stream = self._run_announced.remote(*args)
        threading.Thread(
            target=self._follow,
            args=(key, stream, timeout),
            name="corepool-ray-timed",
            daemon=True,
        ).start()
        return stream

    def _follow(self, key: str, stream: Any, timeout: float) -> None:
        """Wait for a timed chunk to start, arm its deadline, then wait for its answer."""
        outcome: Future[Any] = Future()
        try:
            next(stream)  # it started
            if self._watchdog is None:
                with self._lock:
                    if self._watchdog is None:
                        self._watchdog = _Watchdog()
            self._watchdog.watch(time.monotonic() + timeout, lambda: self._expire(key, timeout))
            outcome.set_result(ray.get(next(stream)))
        except BaseException as exc:
            outcome.set_exception(exc)
        self._done.put((key, outcome))

    def _expire(self, key: str, timeout: float) -> None:
        """A task's deadline passed: kill its worker and fail it (or retry it)."""
        chunk = self._take(key)
        if chunk is None:
            return  # it finished first
        try:
            ray.cancel(chunk.handle, force=True)
        except Exception:
            pass
        with self._lock:
            self._restarts += 1
        error = TaskTimeout(
            f"task {chunk.start} ran longer than its {timeout:g} s timeout; {self.overrun_note}",
            timeout,
        )
        self.fail_task(chunk, error)

    def place_shared(self, value: Any) -> Any:
        return ray.put(value)

    def cancel_all(self, handles: list[Any]) -> None:
        for ref in handles:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass

    def _collect(self) -> None:
        while True:
            item = self._done.get()
            if item is None:
                return
            key, future = item
            try:
                answer = future.result()
            except _DEATHS as exc:
                self.crashed(key, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            except (ray_errors.TaskCancelledError, ray_errors.RayActorError) as exc:
                self.broken(key, exc)  # ignored when it was cancelled here
            except BaseException as exc:
                self.broken(key, exc)
            else:
                self.finished(key, answer)

    def shutdown(self) -> None:
        self._done.put(None)
        if self._watchdog is not None:
            self._watchdog.close()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            if self._sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._sigterm)

    def join(self, timeout: float | None = None) -> bool:
        done = super().join(timeout)
        self._collector.join(timeout)
        return done and not self._collector.is_alive()


BACKEND = RayBackend


def create(
    workers: int,
    *,
    address: str | None = None,
    client: Any = None,
    initializer: Any = None,
    max_tasks_per_child: int | None = None,
    context: Any = None,
    start_method: str | None = None,
    memory_limit: int | None = None,
    **_: Any,
) -> RayBackend:
    """A :class:`RayBackend`; ``create_backend("ray", ...)`` calls this."""
    if client is not None:
        raise ValueError(
            "client= is a distributed.Client, for backend='dask'; the ray backend takes "
            "address= or uses the Ray this program initialised"
        )
    reject_local_options(
        "ray",
        initializer=initializer,
        maxtasksperchild=max_tasks_per_child,
        context=context,
        start_method=start_method,
        worker_memory_limit=memory_limit,
    )
    return RayBackend(workers, address=address)
