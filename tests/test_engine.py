"""The process engine with real worker processes: shipping, chunking, crashes, timeouts."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

import corepool
import scripts
import tasks

pytestmark = pytest.mark.timeout(60)


def test_function_is_shipped_once_per_worker_per_map(tmp_path: Path) -> None:
    log = tmp_path / "unpickled"
    fn = tasks.CountsUnpickling(str(log))
    with corepool.Pool(2) as pool:
        assert pool.map(fn, range(500), chunksize=5) == list(range(1, 501))
        per_worker = Counter(log.read_text().split())
        assert len(per_worker) <= 2 and all(n == 1 for n in per_worker.values()), per_worker
        pool.map(fn, range(100), chunksize=5)  # a new map ships it again, once per worker
        assert sum(Counter(log.read_text().split()).values()) <= 4


@pytest.mark.linux_transport
def test_default_start_method_is_safe_with_threads() -> None:
    assert corepool.get_context().get_start_method() == "forkserver"
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    try:
        with corepool.Pool(2) as pool:
            assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]
    finally:
        stop.set()
        busy.join()


def test_imap_pulls_input_lazily_within_a_window() -> None:
    pulled = 0

    def numbers():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for i in range(10**9):
            pulled = i + 1
            yield i

    results = corepool.imap(tasks.square, numbers(), workers=2)
    assert next(results) == 0
    time.sleep(0.2)  # give the feeder every chance to run ahead (it must not)
    assert pulled < 200_000, pulled
    assert [next(results) for _ in range(10)] == [x * x for x in range(1, 11)]
    results.close()  # type: ignore[attr-defined]


def test_crash_fails_only_its_task_and_reruns_its_chunk_mates(tmp_path: Path) -> None:
    got = corepool.map(tasks.crash_on, range(20), workers=2, chunksize=10, on_error="return")
    assert [g for i, g in enumerate(got) if i != 3] == [i for i in range(20) if i != 3]
    error = got[3]
    assert isinstance(error, corepool.WorkerCrashed)
    assert error.exitcode == 7 and "exit code 7" in str(error) and "task 3" in str(error)


@pytest.mark.parametrize(
    ("task", "signal_name"),
    [(tasks.segfault_on, "SIGSEGV"), (tasks.sigkill_on, "SIGKILL")],
    ids=["segfault", "sigkill"],
)
def test_worker_killed_by_a_signal(task, signal_name: str) -> None:  # type: ignore[no-untyped-def]
    with corepool.Pool(2) as pool:
        results = pool.map_async(task, range(8)).get  # raises: check on_error="return" below
        with pytest.raises(corepool.WorkerCrashed, match=signal_name):
            results(timeout=30)
        got = corepool.map(task, range(8), workers=2, on_error="return")
        assert isinstance(got[3], corepool.WorkerCrashed) and signal_name in str(got[3])
        assert got[:3] + got[4:] == [0, 1, 2, 4, 5, 6, 7]
        assert pool.apply(tasks.square, (4,)) == 16  # the pool still serves


def test_poison_input_is_failed_after_its_retries(tmp_path: Path) -> None:
    log = tmp_path / "calls"

    def crash_logged(x: int) -> int:
        with open(log, "a") as f:
            f.write(f"{x}\n")
        if x == 1:
            os._exit(1)
        return x

    got = corepool.map(crash_logged, range(3), workers=2, retries=2, on_error="return",
                       chunksize=1)
    assert got[0] == 0 and got[2] == 2 and isinstance(got[1], corepool.WorkerCrashed)
    assert Counter(log.read_text().split())["1"] == 3  # first run + 2 retries, then it stops


def test_timeout_inside_a_chunk_names_the_right_task() -> None:
    got = corepool.map(tasks.hang_on, range(12), workers=2, chunksize=6, timeout=1.0,
                       on_error="return")
    assert isinstance(got[3], corepool.TaskTimeout) and "task 3" in str(got[3])
    assert [g for i, g in enumerate(got) if i != 3] == [i for i in range(12) if i != 3]


def test_timed_out_worker_is_replaced_and_gone() -> None:
    with corepool.Pool(2, task_timeout=0.5) as pool:
        before = set(pool.pids())
        with pytest.raises(corepool.TaskTimeout):
            pool.apply(tasks.sleep_for, (30,))
        assert pool.apply(tasks.square, (5,)) == 25
        after = set(pool.pids())
        assert len(after) == 2 and before - after, (before, after)
        gone = before - after
        psutil.wait_procs([psutil.Process(p) for p in gone if psutil.pid_exists(p)], timeout=3)
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in gone)


def test_apply_async_timeout_is_per_call() -> None:
    with corepool.Pool(2) as pool:
        late = pool.apply_async(tasks.sleep_for, (30,), timeout=0.3)
        fine = pool.apply_async(tasks.sleep_for, (0.01,))
        with pytest.raises(corepool.TaskTimeout):
            late.get(timeout=10)
        assert fine.get(timeout=10) == 0.01


def test_terminate_stops_a_hung_task_promptly() -> None:
    pool = corepool.Pool(2)
    pids = pool.pids()
    pool.apply_async(tasks.hang_on, (3,))
    started = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - started < 3
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def test_failing_initializer_breaks_the_pool_with_a_clear_error() -> None:
    with corepool.Pool(2, initializer=tasks.failing_initializer) as pool:
        with pytest.raises(corepool.BrokenPool, match="initializer raised") as info:
            pool.map(tasks.square, range(4))
        assert isinstance(info.value.__cause__, RuntimeError)


def test_initializer_sets_per_worker_state() -> None:
    with corepool.Pool(2, initializer=tasks.set_global, initargs=("ready",)) as pool:
        assert set(pool.map(tasks.get_global, range(10))) == {"ready"}


def test_maxtasksperchild_recycles_workers() -> None:
    with corepool.Pool(2, maxtasksperchild=2) as pool:
        pids = pool.map(tasks.pid_of, range(12), chunksize=1)
    assert len(set(pids)) >= 6
    assert max(Counter(pids).values()) <= 2


def _python(code: str, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([scripts._SOURCE, scripts._TESTS])},
    )


def test_unguarded_main_script_gets_the_guard_advice(tmp_path: Path) -> None:
    proc = _python(
        """
        import corepool, tasks
        print(corepool.map(tasks.square, range(3), workers=2))
        """,
        tmp_path,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in err
    assert "BrokenPool" in err


BLOCKING_CALLS = {
    "map": "pool.map(tasks.sleep_for, [60] * 4)",
    "imap": "for _ in pool.imap(tasks.sleep_for, [60] * 4): pass",
    "apply": "pool.apply(tasks.sleep_for, (60,))",
    "executor": (
        "with corepool.Executor(2) as ex:\n"
        "        print(*ex.pids(), flush=True)\n"
        "        ex.submit(tasks.sleep_for, 60).result()"
    ),
    "default-map": "corepool.map(tasks.sleep_for, [60] * 4, workers=2)",
}


@pytest.mark.parametrize("call", list(BLOCKING_CALLS))
def test_ctrl_c_stops_the_workers_quickly(tmp_path: Path, call: str) -> None:
    if call == "executor":
        body = BLOCKING_CALLS[call]
    elif call == "default-map":
        body = (
            "corepool.map(tasks.square, [1], workers=2)\n"
            "    print(*corepool.api._default_pool(2, None).pids(), flush=True)\n    "
            + BLOCKING_CALLS[call]
        )
    else:
        body = (
            "pool = corepool.Pool(2)\n    print(*pool.pids(), flush=True)\n    "
            + BLOCKING_CALLS[call]
        )
    proc = _python(
        "import corepool, tasks\nif __name__ == '__main__':\n    " + body + "\n",
        tmp_path,
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    workers = [psutil.Process(p) for p in pids]
    _wait_until_busy(workers)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - sent < 2.5
    assert "KeyboardInterrupt" in err
    assert err.count("Traceback") == 1, err  # the parent's only: no spew from workers
    _, alive = psutil.wait_procs(workers, timeout=3)
    assert not alive


def _wait_until_busy(workers: list[psutil.Process]) -> None:
    # The workers are ready when they sleep in the task (state 'S' with a child-less stack);
    # waiting for their CPU time to stop growing would be fragile, so poll their status.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if all(w.status() == psutil.STATUS_SLEEPING for w in workers):
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_busy_workers_exit_when_the_parent_is_killed(tmp_path: Path, start_method: str) -> None:
    proc = _python(
        f"""
        import corepool, tasks
        if __name__ == "__main__":
            pool = corepool.Pool(2, start_method="{start_method}")
            print(*pool.pids(), flush=True)
            pool.map(tasks.sleep_for, [60] * 4, chunksize=1)
        """,
        tmp_path,
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    workers = [psutil.Process(p) for p in pids]
    _wait_until_busy(workers)
    helpers = {w.ppid() for w in workers} - {proc.pid}  # the fork server, if any
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(workers + [psutil.Process(h) for h in helpers], timeout=5)
    for orphan in alive:  # do not leave them behind if the test fails
        orphan.kill()
    assert not alive, [w.pid for w in alive]


def test_worker_memory_limit() -> None:
    with corepool.Pool(2, worker_memory_limit="300MB") as pool:
        results = [pool.apply_async(tasks.allocate_mb, (n,)) for n in (10, 2000, 10)]
        assert results[0].get(timeout=30) == 10 and results[2].get(timeout=30) == 10
        with pytest.raises(corepool.WorkerCrashed, match="memory limit") as info:
            results[1].get(timeout=30)
        assert isinstance(info.value.__cause__, MemoryError)
        assert pool.apply(tasks.allocate_mb, (20,)) == 20  # the pool goes on


def test_worker_past_its_memory_limit_after_a_task_is_recycled() -> None:
    with corepool.Pool(1, worker_memory_limit="120MB") as pool:
        first = pool.apply(tasks.pid_of)
        assert pool.apply(tasks.leak_mb, (105,)) == 1  # succeeds, but leaves the worker fat
        assert pool.apply(tasks.pid_of) != first
        assert pool.apply(tasks.leak_mb, (10,)) == 1  # a fresh worker: nothing kept


def test_executor_terminate_stops_a_hung_task() -> None:
    ex = corepool.Executor(2)
    hung = ex.submit(tasks.hang_on, 3)
    pids = ex.pids()
    started = time.monotonic()
    ex.terminate()
    assert time.monotonic() - started < 5
    with pytest.raises(corepool.CorepoolError):
        hung.result(timeout=10)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    with pytest.raises(RuntimeError):
        ex.submit(tasks.square, 2)


def test_many_threads_submitting_at_once() -> None:
    with corepool.Executor(2) as ex:

        def submit_many(offset: int) -> list[int]:
            return [f.result(timeout=30) for f in [ex.submit(tasks.square, offset + i)
                                                    for i in range(300)]]

        with concurrent.futures.ThreadPoolExecutor(8) as threads:
            got = list(threads.map(submit_many, range(0, 2400, 300)))
    assert [x for chunk in got for x in chunk] == [i * i for i in range(2400)]


def test_one_slow_task_does_not_stall_the_tasks_behind_it(tmp_path: Path) -> None:
    # Task 0 only finishes once task 199 has run: a map whose window waited for
    # results in order would deadlock here (task 0 returns "stalled" after 20 s).
    inputs = [(i, str(tmp_path)) for i in range(200)]
    got = corepool.map(tasks.wait_for_file, inputs, workers=2, chunksize=1)
    assert got[0] == "saw the last task"


def test_a_task_may_run_a_pool_of_its_own() -> None:
    assert corepool.map(tasks.sum_of_squares_in_a_pool, [3, 4], workers=2) == [5, 14]


def test_one_pool_serves_maps_from_several_threads() -> None:
    with corepool.Pool(2) as pool, concurrent.futures.ThreadPoolExecutor(4) as threads:
        got = list(threads.map(lambda k: pool.map(tasks.square, range(k * 100)), range(1, 5)))
    assert got == [[x * x for x in range(k * 100)] for k in range(1, 5)]


def test_stats_stay_small_when_workers_are_replaced_often() -> None:
    with corepool.Pool(1, maxtasksperchild=1) as pool:
        pool.map(tasks.square, range(100), chunksize=1)
        stats = pool.stats()
    assert stats.tasks == 100
    # The latest 64 ended workers and one sum of the earlier ones; live ones besides
    # (workers that reached their budget may still be exiting next to replacements).
    assert len([w for w in stats.workers if not w.alive]) <= 64 + 1
    assert all(w.uptime >= w.busy >= 0 for w in stats.workers)
    assert stats.restarts == 0  # retiring after maxtasksperchild is not a restart


def test_bookkeeping_does_not_grow_with_calls_and_chunks() -> None:
    with corepool.Pool(2) as pool:
        for future in [pool.submit(tasks.square, i) for i in range(500)]:
            future.result(timeout=30)
        stream = pool.imap(tasks.square, range(50_000), chunksize=10)
        assert sum(1 for _ in stream) == 50_000
        state = pool._core.backend.engine.state  # type: ignore[attr-defined]
        assert all(len(w.known_jobs) <= 2 for w in state.workers.values())
        assert stream._job._origin_sizes == {}  # type: ignore[attr-defined]


def test_a_map_that_raised_leaves_no_feeder_thread_behind() -> None:
    import gc

    def feeders() -> int:
        return sum(t.name == "corepool-feeder" for t in threading.enumerate())

    gc.disable()  # the cyclic collector would hide a leak that lasts until it runs
    try:
        with corepool.Pool(2) as pool:
            for _ in range(10):
                with pytest.raises(ValueError):
                    pool.map(tasks.fail_on, range(200), chunksize=1)
            deadline = time.monotonic() + 10
            while feeders() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert feeders() == 0
    finally:
        gc.enable()

