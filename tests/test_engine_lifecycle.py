"""The process engine at the edges of a pool's life: after terminate, across default
pools, and over many released shared handles."""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from pathlib import Path

import pytest

import corepool
import scripts
import tasks


def _occupy(number: int, folder: Path) -> tuple[int, list[int]]:
    """Open files until one gets descriptor ``number``: (that one, all of them)."""
    opened: list[int] = []
    for i in range(256):
        fd = os.open(folder / f"file{i}", os.O_WRONLY | os.O_CREAT)
        opened.append(fd)
        if fd == number:
            return fd, opened
    raise AssertionError(f"descriptor {number} was never handed out again")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("late_call", ["shared handle released", "stream closed"])
def test_a_terminated_pool_writes_into_no_reused_descriptor(
    tmp_path: Path, late_call: str
) -> None:
    pool = corepool.Pool(2)
    results = pool.imap(tasks.square, range(10_000), chunksize=1)
    assert next(results) == 0
    handle = corepool.shared(b"payload")
    supervisor = pool._core.backend.engine.supervisor
    wake_up = supervisor._wakeups.descriptors()[1]  # the write end
    if late_call == "stream closed":
        pool.terminate()  # (not join: that too is a late call, made before the check)
        supervisor.thread.join(30)
    else:
        results.close()
        pool.close()
        pool.join()
    assert not supervisor.thread.is_alive()
    fd, opened = _occupy(wake_up, tmp_path)  # the pool's old wake-up number, now a file
    try:
        if late_call == "shared handle released":
            handle.release()  # the pool still hears of releases
        else:
            with pytest.raises(corepool.CorepoolError):
                list(results)  # ends the stream: the job is released to the engine
            results = None
            gc.collect()
        assert os.fstat(fd).st_size == 0, "a byte went into a file the pool does not own"
    finally:
        for each in opened:
            os.close(each)


@pytest.mark.timeout(60)
def test_released_shared_handles_leave_nothing_behind() -> None:
    with corepool.Pool(1) as pool:  # a pool listens for releases
        assert pool.map(tasks.square, [3]) == [9]
        for _ in range(200):  # warm up allocator and caches
            corepool.shared(b"x").release()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(4000):
                corepool.shared(b"x").release()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # A record kept per released handle grows by about 100 bytes each (400 kB).
        assert grown < 100_000, grown
        assert pool.map(tasks.square, [4]) == [16]


@pytest.mark.timeout(90)
def test_an_explicit_process_backend_beats_the_environment(tmp_path: Path) -> None:
    done = scripts.run(
        """
        import os
        import corepool

        if __name__ == "__main__":
            os.environ["COREPOOL_BACKEND"] = "thread"
            with corepool.Pool(2, backend="process") as pool:
                print("Pool", pool.backend, pool.stats().backend)
            with corepool.Executor(2, backend="process") as ex:
                print("Executor", ex._core.backend_name)
            with corepool.Pool(2) as pool:
                print("default", pool.backend)
            with corepool.Pool(2, backend="thread") as pool:
                print("thread", pool.backend)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == [
        "Pool process process",
        "Executor process",
        "default thread",
        "thread thread",
    ], done.stdout


@pytest.mark.timeout(120)
def test_an_open_imap_survives_calls_that_replace_the_default_pool(tmp_path: Path) -> None:
    done = scripts.run(
        """
        import corepool
        from tasks import square

        if __name__ == "__main__":
            results = corepool.imap(square, range(200), workers=2, chunksize=1)
            head = [next(results) for _ in range(3)]
            assert corepool.map(square, [5], workers=1) == [25]  # another size
            assert corepool.map(square, [6], workers=2, backend="thread") == [36]
            assert corepool.map(square, [7], workers=1) == [49]
            print(head + list(results) == [x * x for x in range(200)])
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stdout + done.stderr


@pytest.mark.timeout(60)
def test_terminate_fails_an_open_stream_that_has_no_task_in_the_pool() -> None:
    pool = corepool.Pool(2)
    results = pool.imap(tasks.square, range(10_000), chunksize=1)
    assert next(results) == 0
    # Every chunk its window allows is done: its feeder waits for this consumer, and
    # the pool holds nothing of the job.
    while sum(w.tasks for w in pool.stats().workers) < 6:
        pool._core.backend.settle()
    pool.terminate()
    with pytest.raises(corepool.CorepoolError, match="terminated"):
        list(results)
    pool.join()


@pytest.mark.timeout(60)
def test_stats_name_the_task_each_worker_runs_and_since_when(tmp_path: Path) -> None:
    release = tmp_path / "go"
    with corepool.Pool(2, task_timeout=30) as pool:
        before = time.time()
        results = pool.imap(tasks.wait_for_path, [str(release)] * 3, chunksize=3)
        busy: list[corepool.progress.WorkerStats] = []
        while not busy:  # each stats() is a round trip to the supervisor thread
            busy = [w for w in pool.stats().workers if w.running]
        (worker,) = busy
        # Sent and not yet taken, the whole chunk; once the worker runs it, with a
        # timeout (tracked), the very task.
        assert worker.state == "busy" and worker.running in ((0, 1, 2), (0,)), worker
        while worker.running != (0,):
            (worker,) = [w for w in pool.stats().workers if w.running]
        assert worker.running_since is not None
        assert before <= worker.running_since <= time.time()
        assert worker.pid in pool.pids()
        release.touch()
        assert list(results) == ["saw it"] * 3
        assert {w.state for w in pool.stats().workers} == {"idle"}
