"""The shared behaviour suite: the same promises, checked on every backend.

Where a backend cannot keep a promise (a thread cannot be stopped), its capability
flag says so and the test checks the documented behaviour instead.
"""

from __future__ import annotations

import itertools
import os
import time
import traceback

import pytest

import corepool
import tasks
from corepool.backends import backend_class

pytestmark = pytest.mark.timeout(60)


def test_map_returns_results_in_input_order(backend: str) -> None:
    assert corepool.map(tasks.square, range(1000), workers=2, backend=backend) == [
        x * x for x in range(1000)
    ]


def test_map_of_empty_input(backend: str) -> None:
    assert corepool.map(tasks.square, [], workers=2, backend=backend) == []


def test_starmap_spreads_tuples(backend: str) -> None:
    pairs = [(i, i + 1) for i in range(50)]
    assert corepool.starmap(tasks.add, pairs, workers=2, backend=backend) == [
        a + b for a, b in pairs
    ]


def test_unordered_map_returns_every_result(backend: str) -> None:
    got = corepool.map(tasks.square, range(300), workers=2, backend=backend, ordered=False)
    assert sorted(got) == [x * x for x in range(300)]


def test_explicit_chunksize(backend: str) -> None:
    got = corepool.map(tasks.square, range(101), workers=2, backend=backend, chunksize=7)
    assert got == [x * x for x in range(101)]


def test_lambda_and_closure(backend: str) -> None:
    offset = 10
    assert corepool.map(lambda x: x + offset, range(5), workers=2, backend=backend) == [
        10, 11, 12, 13, 14,
    ]


def test_imap_over_endless_generator(backend: str) -> None:
    results = corepool.imap(tasks.square, itertools.count(), workers=2, backend=backend)
    assert list(itertools.islice(results, 200)) == [x * x for x in range(200)]
    results.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("local", ["process", "thread", "serial"])
def test_a_single_calls_exception_names_its_input_and_no_index(local: str) -> None:
    # The note is made in the caller (CallJob), the same for every backend; the
    # cluster backends' calls are in test_executor_on_every_backend.
    with corepool.Executor(2, backend=local) as executor:
        error = executor.submit(tasks.fail_on, 3).exception(timeout=30)
    assert isinstance(error, ValueError)
    assert getattr(error, "__notes__", []) == ["corepool: single call, input (3)"]


def test_exception_keeps_its_type_and_names_the_task(backend: str) -> None:
    with pytest.raises(ValueError, match="bad input 3") as info:
        corepool.map(tasks.fail_on, range(10), workers=2, backend=backend)
    notes = getattr(info.value, "__notes__", [])
    assert any("task 3" in note and "input 3" in note for note in notes), notes
    if backend_class(backend).pickles:  # it ran in another process: a remote traceback
        assert isinstance(info.value.__cause__, corepool.RemoteTraceback)
        assert "fail_on" in str(info.value.__cause__)
    else:
        # In-process backends keep the real traceback object.
        frames = traceback.extract_tb(info.value.__traceback__)
        assert any(f.name == "fail_on" for f in frames)


def test_first_failure_in_input_order_is_raised(backend: str) -> None:
    with pytest.raises(KeyError) as info:
        corepool.map(tasks.fail_every, range(1, 40), workers=2, backend=backend)
    assert info.value.args == (5,)


def test_on_error_return_puts_exceptions_in_place(backend: str) -> None:
    got = corepool.map(tasks.fail_on, range(6), workers=2, backend=backend, on_error="return")
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5]
    assert isinstance(got[3], ValueError)


def test_on_error_skip_drops_failures(backend: str) -> None:
    seen: list[tuple[int, int | None]] = []
    got = corepool.map(
        tasks.fail_on, range(6), workers=2, backend=backend, on_error="skip",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert got == [0, 1, 2, 4, 5]
    assert seen[-1] == (6, 6)  # the progress counts the failure too


def test_imap_raises_at_the_failing_position(backend: str) -> None:
    results = corepool.imap(tasks.fail_on, range(10), workers=2, backend=backend)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError):
        next(results)


def test_retries_rerun_a_failing_task(backend: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = str(tmp_path / "attempts")
    got = corepool.starmap(tasks.flaky, [(marker, 2)], workers=2, backend=backend, retries=2)
    assert got == ["ok after 3"]


def test_retries_are_bounded(backend: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = str(tmp_path / "attempts")
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        corepool.starmap(tasks.flaky, [(marker, 5)], workers=2, backend=backend, retries=1)


def test_retry_on_narrows_what_is_retried(backend: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = str(tmp_path / "attempts")
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        corepool.starmap(
            tasks.flaky, [(marker, 1)], workers=2, backend=backend, retries=3,
            retry_on=(KeyError,),
        )


def test_timeout_fails_the_task_and_the_rest_goes_on(backend: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every backend fails the task with TaskTimeout; what becomes of the task itself
    is what its capability flags say: stopped, or left to finish with its result dropped;
    reported at the deadline, or (serial) only once the task returned."""
    flags = backend_class(backend)
    marker = str(tmp_path / "finished")
    args = [(marker + "-0", 0.0), (marker, 1.5), (marker + "-2", 0.0), (marker + "-3", 0.0)]
    # The default pool started first: the time measured is the timeout's, not a start's
    # (a spawn start, as the portable transport's, takes seconds under load).
    corepool.map(abs, [1, 2], workers=2, backend=backend)
    began = time.monotonic()
    got = corepool.starmap(
        tasks.sleep_then_touch, args, workers=2, backend=backend, timeout=0.5, on_error="return"
    )
    elapsed = time.monotonic() - began
    assert got[0] == 0.0 and got[2:] == [0.0, 0.0]
    assert isinstance(got[1], corepool.TaskTimeout)
    assert isinstance(got[1], TimeoutError)
    if flags.reports_timeouts_on_time:
        assert elapsed < 1.4, f"the timeout was reported after {elapsed:.2f} s"
    else:
        assert elapsed >= 1.5  # serial: the task ran to its end in the calling thread
    if flags.stops_timed_out_tasks:
        deadline = began + 2.5  # well past the task's own end (1.5 s after it started)
        while time.monotonic() < deadline:
            assert not os.path.exists(marker), "the timed-out task was not stopped"
            time.sleep(0.05)
    else:
        # Documented: the task cannot be stopped; it runs to its end, result dropped.
        deadline = time.monotonic() + 10.0
        while not os.path.exists(marker):
            assert time.monotonic() < deadline, "the timed-out task never finished"
            time.sleep(0.05)


def test_serial_timeout_is_reported_after_the_task_returns() -> None:
    got = corepool.map(
        tasks.sleep_for, [0.3, 0.0], workers=1, backend="serial", timeout=0.1, on_error="return"
    )
    assert isinstance(got[0], corepool.TaskTimeout) and got[1] == 0.0


def test_pool_submit_returns_a_future(pool: corepool.Pool) -> None:
    future = pool.submit(tasks.add, 2, b=3)
    assert future.result(timeout=30) == 5


def test_pool_stats_count_tasks(pool: corepool.Pool) -> None:
    pool.map(tasks.fail_on, range(3))
    pool.map(tasks.square, range(20))
    stats = pool.stats()
    assert stats.tasks == 23
    assert stats.backend == pool.backend
    assert "worker" in repr(stats)


def test_executor_on_every_backend(backend: str) -> None:
    with corepool.Executor(2, backend=backend) as ex:
        assert ex.submit(tasks.square, 7).result(timeout=30) == 49
        assert list(ex.map(tasks.add, [1, 2], [10, 20])) == [11, 22]


def test_environment_variable_picks_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREPOOL_BACKEND", "serial")
    with corepool.Pool(2) as pool:
        assert pool.backend == "serial"
        assert pool.apply(tasks.thread_name) == "MainThread"
    monkeypatch.setenv("COREPOOL_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="COREPOOL_BACKEND"):
        corepool.Pool(2)


def test_thread_backend_runs_in_threads() -> None:
    names = corepool.map(tasks.thread_name, range(4), workers=2, backend="thread")
    assert all(name.startswith("corepool-thread") for name in names)


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        corepool.map(tasks.square, [1], backend="gpu")


def test_bad_on_error_value() -> None:
    with pytest.raises(ValueError, match="on_error"):
        corepool.map(tasks.square, [1], on_error="ignore")
