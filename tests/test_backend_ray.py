"""The ray backend on a real local Ray (2 CPUs, started once per session; the shared
behaviour suite runs on it too), and a Ray that the pool starts and stops itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corepool
import tasks
from clusters import environment

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(90)
with_session_ray = pytest.mark.usefixtures("ray_session")


LIFETIME = """
import signal, psutil, ray, corepool, tasks
assert not ray.is_initialized()
with corepool.Pool(2, backend="ray") as pool:
    assert ray.is_initialized() and pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]
    assert psutil.Process().children(recursive=True)
assert not ray.is_initialized()
assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # Ray's handler is gone
left = [p for p in psutil.Process().children(recursive=True) if p.status() != "zombie"]
print("left", left)
assert not left, left
"""


@pytest.mark.own_ray
def test_a_ray_started_by_the_pool_is_shut_down_with_it() -> None:
    """Run where no Ray is initialised: the pool starts a local Ray, and stops it.

    First of the Ray tests, before the session's Ray starts: in one full run, a second
    Ray shutting down beside the session's coincided with a SIGTERM to one of the
    session's workers, which failed the task it had just been given."""
    done = subprocess.run(
        [sys.executable, "-c", LIFETIME],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left []" in done.stdout


def _wait(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@with_session_ray
def test_sigkill_of_a_worker_mid_task_is_retried(tmp_path: Path) -> None:
    log = tmp_path / "starts"
    args = [(str(log), 0.5)] * 4
    with corepool.Pool(2, backend="ray", retries=1) as pool:
        result = pool.starmap_async(tasks.note_start_then_sleep, args, chunksize=1)
        _wait(lambda: log.exists() and log.read_text().strip(), "a task to start")
        victim = int(log.read_text().split()[0])
        os.kill(victim, signal.SIGKILL)
        pids = result.get(timeout=60)
        assert pool.stats().restarts >= 1
    assert victim not in pids and len(pids) == 4
    assert len(log.read_text().split()) >= 5  # the killed task ran again


@with_session_ray
def test_task_that_kills_its_worker_fails_alone() -> None:
    got = corepool.map(
        tasks.crash_on, range(8), workers=2, backend="ray", chunksize=4, on_error="return"
    )
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5, 6, 7]
    assert isinstance(got[3], corepool.WorkerCrashed)
    assert "task 3" in str(got[3])


@with_session_ray
def test_options_the_ray_backend_cannot_take() -> None:
    with pytest.raises(ValueError, match=r"client= is a distributed\.Client"):
        corepool.Pool(2, backend="ray", client=object())
    with pytest.raises(ValueError, match="initializer"):
        corepool.Pool(2, tasks.set_global, (1,), backend="ray")
    with pytest.raises(ValueError, match="worker_memory_limit"):
        corepool.Pool(2, backend="ray", worker_memory_limit="1GB")


@with_session_ray
def test_a_deadline_counts_from_the_start_of_the_task() -> None:
    """Ten 0.3 s tasks on 2 CPUs with a 1 s timeout: the last ones wait in Ray's queue
    for 1.2 s, longer than the timeout, and still succeed."""
    began = time.monotonic()
    got = corepool.map(tasks.sleep_for, [0.3] * 10, workers=2, backend="ray", timeout=1.0)
    assert got == [0.3] * 10
    assert time.monotonic() - began >= 1.5  # five waves of two


@with_session_ray
def test_shared_objects_go_through_the_object_store() -> None:
    """``corepool.shared(obj)`` maps to ``ray.put``: tasks read the array from Ray's
    object store, a read-only zero-copy view, not a copy pickled into each chunk."""
    np = pytest.importorskip("numpy")
    import shm_tasks

    big = np.arange(200_000.0)
    handle = corepool.shared(big)
    got = corepool.map(
        shm_tasks.sum_shared,
        [(handle, i) for i in range(6)],
        workers=2,
        backend="ray",
        chunksize=1,
    )
    assert [total for total, _, _ in got] == [float(big.sum())] * 6
    assert not any(writable for _, _, writable in got)


@with_session_ray
def test_blas_threads_are_left_to_ray() -> None:
    """Documented: Ray sets OMP_NUM_THREADS to a task's CPUs (1 here) itself."""
    import shm_tasks

    got = corepool.map(shm_tasks.blas_threads_here, [0, 1], workers=2, backend="ray")
    assert [variable for variable, _ in got] == ["1", "1"]


@with_session_ray
def test_run_on_workers_is_not_supported() -> None:
    with corepool.Pool(2, backend="ray") as pool:
        with pytest.raises(corepool.errors.NotSupported, match="not supported on the ray"):
            pool.run_on_workers(abs, 1)
        with pytest.raises(NotImplementedError):
            pool.run_on_workers(abs, 1)
