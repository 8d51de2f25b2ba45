"""Speed features around the engine: BLAS thread limits, the warm default pool,
per-worker state built once, progress on Pool methods, and Pool.stats()."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

import corepool
import shm_tasks as st
import tasks

pytestmark = pytest.mark.timeout(60)


def _parent_blas_threads() -> int:
    import numpy  # noqa: F401  (loads the BLAS library threadpoolctl reports)

    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.fixture
def no_thread_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)


# BLAS / OpenMP threads -----------------------------------------------------------------


@pytest.mark.usefixtures("no_thread_variables")
def test_workers_share_the_cpus_between_their_blas_pools() -> None:
    usable = corepool.cpu_count()
    with corepool.Pool(2) as pool:
        got = set(pool.map(st.blas_threads_here, range(4), chunksize=1))
    per_worker = max(1, usable // 2)
    assert got == {(str(per_worker), per_worker)}


@pytest.mark.usefixtures("no_thread_variables")
def test_blas_threads_explicit_and_off() -> None:
    with corepool.Pool(1, blas_threads=1) as pool:
        assert pool.apply(st.blas_threads_here) == ("1", 1)
    with corepool.Executor(1, blas_threads=None) as ex:
        assert ex.submit(st.blas_threads_here).result() == (None, _parent_blas_threads())


@pytest.mark.usefixtures("no_thread_variables")
def test_already_loaded_blas_is_limited_too() -> None:
    # Under fork the worker inherits numpy already loaded: only threadpoolctl reaches it.
    assert _parent_blas_threads() >= 1
    with corepool.Pool(1, blas_threads=1, start_method="fork") as pool:
        assert pool.apply(st.blas_threads_here)[1] == 1


def test_a_users_own_thread_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with corepool.Pool(2) as pool:
        assert pool.apply(st.blas_threads_here)[0] == "3"


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True])
def test_bad_blas_threads_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="blas_threads"):
        corepool.Pool(1, blas_threads=bad)  # type: ignore[arg-type]


# The default pool ------------------------------------------------------------------


def test_default_pool_is_warm_for_the_second_call() -> None:
    corepool.map(tasks.square, range(2), workers=2)
    pids = set(corepool.map(tasks.pid_of, range(8), workers=2, chunksize=1))
    started = time.perf_counter()
    assert corepool.map(tasks.square, range(2), workers=2) == [0, 1]
    elapsed = time.perf_counter() - started
    assert set(corepool.map(tasks.pid_of, range(8), workers=2, chunksize=1)) == pids
    assert elapsed < 1.0  # no start-up (the benchmark measures it: ~1 ms)


def test_default_pool_follows_the_latest_arguments() -> None:
    first = set(corepool.map(tasks.pid_of, range(4), workers=1))
    assert len(first) == 1
    again = set(corepool.map(tasks.pid_of, range(4), workers=1))
    assert again == first  # same arguments: same pool
    two = set(corepool.map(tasks.pid_of, range(8), workers=2, chunksize=1))
    assert not two & first  # another size: a new pool
    assert corepool.map(tasks.thread_name, [0], backend="thread")[0] != "MainThread"


# Per-worker state -------------------------------------------------------------------


def test_expensive_object_is_built_once_per_worker(tmp_path: Path) -> None:
    """The recipe in docs/data.md: build it in the initializer, keep it in a global."""
    log = tmp_path / "built"
    with corepool.Pool(2, initializer=st.load_model, initargs=(str(log),)) as pool:
        answers = pool.map(st.predict, range(40), chunksize=1)
        pids = set(pool.map(tasks.pid_of, range(8), chunksize=1))
    assert answers == [x * 2 for x in range(40)]
    built_by = log.read_text().split()
    assert sorted(built_by) == sorted(str(pid) for pid in pids)  # once per worker


# Progress on Pool methods -----------------------------------------------------------


def test_progress_callable_on_pool_methods() -> None:
    seen: list[tuple[int, int | None]] = []

    def record(done: int, total: int | None) -> None:
        seen.append((done, total))

    with corepool.Pool(2) as pool:
        assert pool.map(tasks.square, range(50), progress=record) == [x * x for x in range(50)]
        assert seen[-1] == (50, 50)
        seen.clear()
        assert sorted(pool.imap_unordered(tasks.square, iter(range(30)), progress=record)) == [
            x * x for x in range(30)
        ]
        assert seen[-1] == (30, None)
        seen.clear()
        assert pool.starmap(tasks.add, [(1, 2)] * 10, progress=record) == [3] * 10
        assert seen[-1] == (10, 10)
        seen.clear()
        assert list(pool.imap(tasks.square, range(20), progress=record)) == [
            x * x for x in range(20)
        ]
        assert seen[-1] == (20, 20)
        seen.clear()
        assert pool.map_async(tasks.square, range(10), progress=record).get() == [
            x * x for x in range(10)
        ]
        assert seen[-1] == (10, 10)


def test_progress_bar_on_pool_map(capsys: pytest.CaptureFixture[str]) -> None:
    with corepool.Pool(2) as pool:
        pool.map(tasks.square, range(100), progress=True)
    err = capsys.readouterr().err
    assert "100/100" in err and "task/s" in err


# Stats ------------------------------------------------------------------------------


def test_stats_count_done_failed_retried_and_restarts(tmp_path: Path) -> None:
    with corepool.Pool(2, retries=1) as pool:
        pool.map(tasks.square, range(20))
        flaky = [pool.apply_async(tasks.flaky, (str(tmp_path / f"f{i}"), 1)) for i in range(3)]
        assert [f.get() for f in flaky] == ["ok after 2"] * 3
        pool.map_async(tasks.crash_on, [3]).wait()
        stats = pool.stats()
    assert stats.tasks >= 23
    assert stats.retried == 3 + 1  # three flaky tasks, and the crashed one's retry
    assert stats.restarts >= 2
    assert sum(w.busy for w in stats.workers) > 0
    table = repr(stats)
    assert "retried" in table and "restarts=" in table
    assert len(table.splitlines()) == 2 + len(stats.workers)
    assert os.getpid() not in {w.pid for w in stats.workers}
