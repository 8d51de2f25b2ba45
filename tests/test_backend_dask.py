"""The dask backend on real clusters: the session's command-line cluster (a ``dask
scheduler`` and two ``dask worker`` processes on 127.0.0.1) and a ``LocalCluster`` that
the pool starts and stops itself. The shared behaviour suite runs on ``dask`` too
(``tests/test_behaviour.py``); these are the Dask-specific promises and deviations."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import corepool
import shm_tasks
import tasks
from clusters import DaskCluster

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(60)


def _wait(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def client(dask_cluster: DaskCluster) -> Iterator[distributed.Client]:
    with distributed.Client(dask_cluster.address, set_as_default=False) as c:
        yield c


def test_sigkill_of_a_worker_mid_task_is_retried(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    """SIGKILL the worker process running a task: Dask reruns it elsewhere (the
    scheduler's default ``allowed-failures``), and the map still returns every result."""
    log = tmp_path / "starts"
    args = [(str(log), 0.5)] * 4
    with corepool.Pool(2, backend="dask", address=dask_cluster.address) as pool:
        result = pool.starmap_async(tasks.note_start_then_sleep, args, chunksize=1)
        _wait(lambda: log.exists() and log.read_text().strip(), "a task to start")
        victim = int(log.read_text().split()[0])
        os.kill(victim, signal.SIGKILL)
        pids = result.get(timeout=45)
    assert victim not in pids and len(pids) == 4
    starts = [int(line) for line in log.read_text().split()]
    assert len(starts) >= 5 and starts.count(victim) >= 1  # the killed task ran again
    with distributed.Client(dask_cluster.address, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=30)  # the nanny replaced the worker


def test_local_cluster_lifetime_crash_and_initializer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without address or client: a LocalCluster of ``processes`` single-threaded
    workers, started with the pool and gone after it. A task that kills its worker
    fails alone with WorkerCrashed; the initializer runs on every worker."""
    import dask

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    with dask.config.set({"scheduler-address": None}):
        pool = corepool.Pool(2, backend="dask", initializer=tasks.set_global, initargs=(42,))
    try:
        pids = pool.pids()
        assert len(pids) == 2
        mine = {p.pid for p in psutil.Process().children(recursive=True)}
        assert set(pids) <= mine  # worker processes of this machine, started by the pool
        assert pool.map(tasks.get_global, range(4)) == [42] * 4
        # BLAS thread variables: set in the workers (blas_threads="auto": 2 CPUs / 2
        # workers), not left behind in this process as Dask's nannies would.
        assert pool.apply(shm_tasks.blas_threads_here)[0] == "1"
        assert "OMP_NUM_THREADS" not in os.environ
        # The chunk 0..3 dies with its worker; its tasks are re-run one by one, and
        # only task 3, which kills its worker again, fails.
        results = pool.imap(tasks.crash_on, range(8), chunksize=4)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(corepool.WorkerCrashed, match="task 3") as info:
            next(results)
        assert any("input 3" in note for note in info.value.__notes__)
        assert pool.map(tasks.square, range(8)) == [x * x for x in range(8)]
        stats = pool.stats()
        assert stats.restarts >= 2
        assert any(not w.alive for w in stats.workers)  # the worker processes that died
    except BaseException:
        pool.terminate()
        raise
    pool.close()
    pool.join()
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )


def test_timeout_fails_the_task_and_its_thread_runs_on(client: distributed.Client) -> None:
    """Documented deviation: Dask cannot interrupt a running task. The caller gets
    TaskTimeout at the deadline; the task's thread runs on in the worker process
    until the function returns, then ends (its result dropped)."""
    from corepool.backends import _remote

    began = time.monotonic()
    got = corepool.map(
        tasks.sleep_for, [1.5], backend="dask", client=client, timeout=0.3, on_error="return"
    )
    assert isinstance(got[0], corepool.TaskTimeout)
    assert time.monotonic() - began < 1.2
    assert "cannot stop a running task" in str(got[0])

    def overrunning() -> int:
        return sum(client.run(_remote.overrun_threads).values())

    assert overrunning() == 1
    _wait(lambda: overrunning() == 0, "the overrunning thread to end", timeout=15)


def test_a_given_client_is_used_and_left_open(client: distributed.Client) -> None:
    with distributed.get_task_stream(client=client) as stream:
        got = corepool.map(tasks.square, range(100_000), backend="dask", client=client)
    assert got == [x * x for x in range(100_000)]
    # Chunked: a few hundred Dask tasks at most, not one per input.
    assert 1 <= len(stream.data) < 500, len(stream.data)
    corepool.api.shutdown_default_pool()
    assert client.status == "running"
    assert client.submit(tasks.square, 3).result() == 9


def test_endless_input_is_read_only_as_far_as_the_window(dask_cluster: DaskCluster) -> None:
    pulled = itertools.count()

    def endless() -> Iterator[int]:
        for x in itertools.count():
            next(pulled)
            yield x

    # 8 asked for, but the cluster has 2 worker threads: its size sets the window.
    with corepool.Pool(8, backend="dask", address=dask_cluster.address) as pool:
        results = pool.imap(tasks.square, endless())
        assert [next(results) for _ in range(50)] == [x * x for x in range(50)]
        first = next(pulled)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # a feeder without back-pressure would race on
            time.sleep(0.05)
        second = next(pulled)
        results.close()
    # 2 worker threads: a window of 6 chunks, none larger than 8192 inputs.
    # Pulled and not consumed: at most the window, 6 chunks (2 worker threads), of at
    # most 8192 inputs each; a feeder without back-pressure would have read millions.
    assert first <= second <= 50 + 6 * 8192 + 2, (first, second)


def test_inputs_and_results_that_do_not_pickle_fail_alone(client: distributed.Client) -> None:
    got = corepool.map(
        tasks.identity,
        [1, threading.Lock(), 3],
        backend="dask",
        client=client,
        on_error="return",
    )
    assert got[0] == 1 and got[2] == 3 and isinstance(got[1], corepool.SerializationError)
    got = corepool.map(
        tasks.return_unpicklable, range(4), backend="dask", client=client, on_error="return"
    )
    assert got[:2] == [0, 1] and got[3] == 3
    assert isinstance(got[2], corepool.SerializationError) and "task 2" in str(got[2])


def test_executor_and_pool_take_address_and_client(
    dask_cluster: DaskCluster, client: distributed.Client, tmp_path: Path
) -> None:
    with corepool.Executor(2, backend="dask", address=dask_cluster.address) as ex:
        assert ex.submit(tasks.add, 1, b=2).result(timeout=30) == 3
    with corepool.Pool(backend="dask", client=client, retries=2) as pool:
        assert pool.pids() == []  # the workers belong to the cluster, not to this pool
        marker = str(tmp_path / "attempts")
        assert pool.starmap(tasks.flaky, [(marker, 2)]) == ["ok after 3"]
        assert pool.stats().retried == 2  # retried on the worker, counted there
        assert pool.apply(tasks.square, (4,)) == 16
        assert sorted(pool.imap_unordered(tasks.square, range(10))) == [x * x for x in range(10)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: corepool.map(tasks.square, [1], address="tcp://127.0.0.1:1"),
        lambda: corepool.Pool(2, backend="thread", client=object()),
        lambda: corepool.Executor(2, backend="serial", address="tcp://127.0.0.1:1"),
    ],
    ids=["map-process", "pool-thread", "executor-serial"],
)
def test_address_or_client_on_a_local_backend_is_a_value_error(make: object) -> None:
    with pytest.raises(ValueError, match="names a cluster"):
        make()  # type: ignore[operator]


def test_options_the_dask_backend_cannot_honour(dask_cluster: DaskCluster) -> None:
    with pytest.raises(ValueError, match="not both"):
        corepool.Pool(2, backend="dask", address=dask_cluster.address, client=object())
    with pytest.raises(ValueError, match="maxtasksperchild"):
        corepool.Pool(2, None, (), 5, backend="dask", address=dask_cluster.address)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "corepool.backends.dask", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'corepool\[dask\]'"):
        corepool.Pool(2, backend="dask")


def test_shared_objects_are_scattered_once_to_every_worker(client: distributed.Client) -> None:
    """``corepool.shared(obj)`` maps to ``scatter(broadcast=True)``: every worker holds
    the object once, and its tasks get that same object (not a copy per chunk)."""
    np = pytest.importorskip("numpy")
    big = np.arange(200_000.0)
    handle = corepool.shared(big)
    got = corepool.map(
        shm_tasks.object_id_and_sum,
        [(handle, i) for i in range(12)],
        backend="dask",
        client=client,
        chunksize=1,
    )
    assert [total for _, _, total in got] == [float(big.sum())] * 12
    per_worker: dict[int, set[int]] = {}
    for pid, obj_id, _ in got:
        per_worker.setdefault(pid, set()).add(obj_id)
    assert all(len(ids) == 1 for ids in per_worker.values()), per_worker
    # broadcast: one key held by both workers (the pool still holds the handle's data)
    assert any(len(workers) == 2 for workers in client.who_has().values())


def test_run_on_workers_is_client_run(client: distributed.Client) -> None:
    """Once on every Dask worker, keyed by address (``Client.run``)."""
    with corepool.Pool(backend="dask", client=client) as pool:
        answers = pool.run_on_workers(os.getpid)
    assert sorted(answers) == sorted(client.scheduler_info()["workers"])
    assert len(set(answers.values())) == len(answers) == 2
