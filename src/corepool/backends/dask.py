"""The ``dask`` backend: chunks of tasks on a ``dask.distributed`` cluster.

Which cluster: ``client=`` (an existing ``distributed.Client``, used as it is and
never closed here), else ``address=`` (a scheduler address), else Dask's own
``scheduler-address`` setting (``DASK_SCHEDULER_ADDRESS``), else a ``LocalCluster``
of ``workers`` single-threaded worker processes, started with the pool and shut down
with it.

Tiny tasks are chunked as on the process backend (one Dask task per chunk, sized from
measured durations), and the job's window bounds how many chunks are submitted and not
yet consumed, since ``Client.map`` would read a whole iterator. Results come back
through one ``as_completed`` per pool, read by one collector thread.

What Dask cannot do: stop a running task. A task past its timeout fails at once for
the caller with :class:`~corepool.errors.TaskTimeout`, but its thread goes on running
in the worker process until the function returns (its result is then dropped), and
Dask gives the worker's slot to the next task meanwhile. A task that kills its worker
process fails with :class:`~corepool.errors.WorkerCrashed` once Dask gives up on it
(``KilledWorker``, after ``distributed.scheduler.allowed-failures`` other workers died
too; the ``LocalCluster`` corepool starts allows none, as the process backend).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, ClassVar

import dask
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker

from ..errors import BrokenPool
from ..nesting import THREAD_VARIABLES
from ..serialize import dumps_code, loads
from . import _byvalue, _remote
from ._cluster import ClusterBackend, reject_local_options

__all__ = ["DaskBackend", "create"]


class _Initializer(WorkerPlugin):
    """Runs the pool's initializer on every worker, also on workers that join later."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def setup(self, worker: Any) -> None:
        fn, args = loads(self.blob)
        fn(*args)


def _worker_environment(thread_limit: int | None) -> dict[str, str]:
    """Environment variables for the workers of a LocalCluster started here."""
    env = {"MALLOC_TRIM_THRESHOLD_": "65536"}  # as Dask sets it: freed memory goes back
    if thread_limit is not None and not any(name in os.environ for name in THREAD_VARIABLES):
        env.update({name: str(thread_limit) for name in THREAD_VARIABLES})
    return env


class DaskBackend(ClusterBackend):
    """Runs jobs as Dask tasks, one per chunk."""

    name: ClassVar[str] = "dask"
    stops_timed_out_tasks: ClassVar[bool] = False
    overrun_note = (
        "Dask cannot stop a running task: its thread goes on in the worker process until "
        "the function returns, and its result is dropped"
    )

    def __init__(
        self,
        workers: int,
        *,
        address: str | None = None,
        client: Client | None = None,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
        thread_limit: int | None = None,
    ) -> None:
        super().__init__(workers)
        self._cluster: LocalCluster | None = None
        self._owns_client = client is None
        if client is not None:
            self.client = client
        else:
            address = address or dask.config.get("scheduler-address", None)
            if address is None:
                # One crash is enough to blame a chunk: it is then split, as on the
                # process backend, instead of killing three more workers first. For
                # that, a worker holds only the task it runs (saturation 1.0), so that
                # no task merely queued behind it is blamed too.
                #
                # Dask's nannies set the BLAS thread variables in *this* process before
                # each worker starts ("pre-spawn-environ"), where they would stay for
                # the rest of the program: corepool gives them to the workers only,
                # sized as the process backend sizes them (``blas_threads``).
                with dask.config.set(
                    {
                        "distributed.scheduler.allowed-failures": 0,
                        "distributed.scheduler.worker-saturation": 1.0,
                        "distributed.nanny.pre-spawn-environ": {},
                    }
                ):
                    self._cluster = LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        # The scheduler serves HTTP even without a dashboard: any port.
                        dashboard_address=":0",
                        silence_logs=logging.ERROR,
                        env=_worker_environment(thread_limit),
                    )
            try:
                self.client = Client(
                    self._cluster if self._cluster is not None else address,
                    set_as_default=False,
                )
            except BaseException:
                if self._cluster is not None:
                    self._cluster.close()
                raise
        self._results = as_completed(loop=self.client.loop, with_results=True, raise_errors=False)
        self._has_work = threading.Event()
        self._stopping = False
        self._plugin: str | None = None
        if initializer is not None:
            self._register_initializer(initializer, initargs)
        self._collector = threading.Thread(
            target=self._collect, name="corepool-dask-collector", daemon=True
        )
        self._collector.start()

    def _register_initializer(self, initializer: Any, initargs: tuple[Any, ...]) -> None:
        blob = dumps_code((initializer, tuple(initargs)), "the initializer", _byvalue.dumps)
        self._plugin = f"corepool-init-{self._token}"
        try:
            self.client.register_plugin(_Initializer(blob), name=self._plugin)
        except Exception as exc:
            self.shutdown()
            raise BrokenPool(
                f"the initializer failed on a dask worker: {type(exc).__name__}: {exc}"
            ) from exc

    # Engine hooks -------------------------------------------------------------------
    def capacity(self) -> int:
        try:
            threads = sum(self.client.nthreads().values())
        except Exception:
            threads = 0
        return threads or self.workers

    def submit(self, key: str, args: tuple[Any, ...]) -> Any:
        future = self.client.submit(_remote.run_chunk, *args, key=key, pure=False)
        self._results.add(future)
        self._has_work.set()
        return future

    def place_shared(self, value: Any) -> Any:
        # On every worker at once: each of them will read it.
        return self.client.scatter(value, broadcast=True, hash=False)

    def cancel_all(self, handles: list[Any]) -> None:
        self.client.cancel(handles, force=True)

    def _collect(self) -> None:
        while not self._stopping:
            self._has_work.clear()
            if self._results.is_empty():
                self._has_work.wait()
                continue
            for future, result in self._results:
                if self._stopping:
                    return
                self._handle(future, result)

    def _handle(self, future: Any, result: Any) -> None:
        key = str(future.key)
        if isinstance(result, bytes):
            # The chunk's answer (run_chunk returns bytes) arrived. What the future's
            # status says by now does not matter: the worker that held the answer may
            # have died since, and Dask set out to compute it again ("lost", "pending").
            self.finished(key, result)
            if future.status != "finished":
                future.cancel()  # not again: the answer is in
        elif future.status == "finished":
            self.finished(key, result)
        elif future.status == "error":
            error = result[1] if isinstance(result, tuple) else result
            if isinstance(error, KilledWorker):
                self.crashed(key, f"its process was lost ({error})")
            else:
                self.broken(key, error)
        else:
            self.broken(key, result if isinstance(result, BaseException) else RuntimeError(result))

    def shutdown(self) -> None:
        self._stopping = True
        self._results.clear()  # the collector stops waiting for cancelled chunks
        self._has_work.set()
        if self._plugin is not None and not self._owns_client:
            try:
                self.client.unregister_worker_plugin(self._plugin)
            except Exception:
                pass
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def join(self, timeout: float | None = None) -> bool:
        done = super().join(timeout)
        self._collector.join(timeout)
        return done and not self._collector.is_alive()

    def alive_workers(self) -> set[int] | None:
        try:
            info = self.client.scheduler_info(n_workers=-1)["workers"].values()
        except Exception:
            return None
        return {int(w["pid"]) for w in info if "pid" in w}

    def run_on_workers(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None = None,
    ) -> dict[Any, Any]:
        """``Client.run``: once on every Dask worker; keyed by worker address."""
        blob = dumps_code((fn, tuple(args), dict(kwargs)), "the function", _byvalue.dumps)
        return dict(self.client.run(_remote.run_here, blob))

    def pids(self) -> list[int]:
        if self._cluster is None or self._terminated:
            return []  # the workers are not this machine's, or not ours
        return sorted(int(pid) for pid in self.client.run(os.getpid).values())


def create(
    workers: int,
    *,
    address: str | None = None,
    client: Client | None = None,
    initializer: Any = None,
    initargs: tuple[Any, ...] = (),
    max_tasks_per_child: int | None = None,
    context: Any = None,
    start_method: str | None = None,
    memory_limit: int | None = None,
    thread_limit: int | None = None,
    **_: Any,
) -> DaskBackend:
    """A :class:`DaskBackend`; ``create_backend("dask", ...)`` calls this."""
    reject_local_options(
        "dask",
        maxtasksperchild=max_tasks_per_child,
        context=context,
        start_method=start_method,
        worker_memory_limit=memory_limit,
    )
    if client is not None and address is not None:
        raise ValueError("pass either address= or client= to the dask backend, not both")
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"client= must be a distributed.Client, got {type(client).__name__}")
    return DaskBackend(
        workers,
        address=address,
        client=client,
        initializer=initializer,
        initargs=initargs,
        thread_limit=thread_limit,
    )


BACKEND = DaskBackend
