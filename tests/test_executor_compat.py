"""``corepool.Executor`` is a drop-in for ``concurrent.futures.ProcessPoolExecutor``.

Every test runs twice, once against ``ProcessPoolExecutor`` (the reference) and once
against ``corepool.Executor``, with the same body: existing code keeps working when only
the import changes. Behaviours in which corepool deliberately differs (lazy ``map``
input, crash recovery, timeouts, retries) are tested elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    ProcessPoolExecutor,
    as_completed,
    wait,
)
from typing import Any

import pytest

import compat_tasks
import corepool
from compat_tasks import (
    ERROR_TYPES,
    ERRORS,
    CustomError,
    add,
    add3,
    describe,
    fail_on,
    get_pid,
    init_worker,
    raise_error,
    read_worker_value,
    sleep_return,
    sleep_square,
    square,
    wait_for_gate,
)

WORKERS = 2

# ProcessPoolExecutor has max_tasks_per_child from Python 3.11 on: before that only
# corepool's side of those tests can run.
WITH_MAX_TASKS: list[Any] = [corepool.Executor]
if sys.version_info >= (3, 11):
    WITH_MAX_TASKS.insert(0, ProcessPoolExecutor)
with_max_tasks = pytest.mark.parametrize(
    "executor_cls", WITH_MAX_TASKS, ids=[c.__module__.split(".")[0] for c in WITH_MAX_TASKS]
)

ExecutorFactory = Callable[..., Any]


@pytest.fixture(
    params=[ProcessPoolExecutor, corepool.Executor], ids=["concurrent.futures", "corepool"]
)
def executor_cls(request: pytest.FixtureRequest) -> ExecutorFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def executor(executor_cls: ExecutorFactory) -> Iterator[Any]:
    with executor_cls(max_workers=WORKERS) as ex:
        yield ex


class Gate:
    """Tasks running ``wait_for_gate`` report that they started, then block until opened."""

    def __init__(self, manager: Any) -> None:
        self.event = manager.Event()
        self.started = manager.Queue()

    def task_args(self, value: Any) -> tuple[Any, Any, Any]:
        return (self.event, self.started, value)

    def wait_started(self, count: int) -> list[Any]:
        return sorted(self.started.get(timeout=20) for _ in range(count))

    def open(self) -> None:
        self.event.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    with multiprocessing.Manager() as manager:
        g = Gate(manager)
        try:
            yield g
        finally:
            g.open()


def test_is_a_concurrent_futures_executor(executor: Any) -> None:
    assert isinstance(executor, concurrent.futures.Executor)


# submit -------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_submit_returns_a_future_with_the_result(executor: Any) -> None:
    future = executor.submit(square, 12)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=20) == 144
    assert future.done()
    assert not future.cancelled()
    assert future.exception() is None
    assert executor.submit(describe, 1, c=3).result(20) == (1, None, 3)
    assert executor.submit(describe, a=1, b=2).result(20) == (1, 2, None)
    assert executor.submit(get_pid).result(20) != os.getpid()


@pytest.mark.timeout(30)
def test_many_submits(executor: Any) -> None:
    futures = [executor.submit(add, i, 1) for i in range(30)]
    assert [f.result(20) for f in futures] == [i + 1 for i in range(30)]


@pytest.mark.timeout(30)
def test_result_timeout_raises_futures_timeout_error(executor: Any) -> None:
    future = executor.submit(sleep_return, "late", 1.5)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.1)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.exception(timeout=0.1)
    assert future.result(timeout=20) == "late"


@pytest.mark.timeout(30)
def test_done_callback_runs_with_the_future(executor: Any) -> None:
    seen: list[Any] = []
    called = threading.Event()

    def callback(f: concurrent.futures.Future[Any]) -> None:
        seen.append(f.result())
        called.set()

    future = executor.submit(square, 5)
    future.add_done_callback(callback)
    assert future.result(20) == 25
    assert called.wait(20)
    # Added to a future that is already done, a callback runs at once.
    future.add_done_callback(lambda f: seen.append(-f.result()))
    assert seen == [25, -25]


# Exceptions ---------------------------------------------------------------------------



@pytest.mark.timeout(30)
@pytest.mark.parametrize(("kind", "message"), ERRORS, ids=[k for k, _ in ERRORS])
def test_task_exception_keeps_its_type(executor: Any, kind: str, message: str) -> None:
    future = executor.submit(raise_error, kind, message)
    error = future.exception(timeout=20)
    assert type(error) is ERROR_TYPES[kind]
    assert error.args == (message,)
    with pytest.raises(ERROR_TYPES[kind]) as info:
        future.result()
    assert type(info.value) is ERROR_TYPES[kind]
    with pytest.raises(ERROR_TYPES[kind]):
        list(executor.map(raise_error, [kind], [message]))


@pytest.mark.timeout(30)
def test_map_yields_results_before_the_failing_one(executor: Any) -> None:
    results = executor.map(fail_on, range(6))
    assert [next(results), next(results), next(results)] == [0, 1, 4]
    with pytest.raises(ValueError, match="bad input 3"):
        next(results)
    # the executor is still usable
    assert executor.submit(square, 3).result(20) == 9


# map ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [1, 3, 100])
def test_map(executor: Any, chunksize: int) -> None:
    assert list(executor.map(square, range(20), chunksize=chunksize)) == [
        x * x for x in range(20)
    ]
    assert list(executor.map(square, range(7))) == [x * x for x in range(7)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_rejects_chunksize_below_one(executor: Any, chunksize: int) -> None:
    with pytest.raises(ValueError):
        executor.map(square, range(3), chunksize=chunksize)


@pytest.mark.timeout(30)
def test_map_returns_an_iterator(executor: Any) -> None:
    results = executor.map(square, [1, 2, 3])
    assert iter(results) is results
    assert next(results) == 1
    assert list(results) == [4, 9]


@pytest.mark.timeout(30)
def test_map_keeps_input_order(executor: Any) -> None:
    # Early items are slower, so they finish after later ones.
    delays = [0.3, 0.2, 0.1, 0.0, 0.0, 0.0]
    assert list(executor.map(sleep_square, range(6), delays)) == [x * x for x in range(6)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_with_several_iterables(executor: Any, chunksize: int) -> None:
    assert list(executor.map(add, range(10), range(100, 110), chunksize=chunksize)) == [
        100 + 2 * i for i in range(10)
    ]
    assert list(executor.map(add3, [1, 2], (10, 20), iter([100, 200]))) == [111, 222]


@pytest.mark.timeout(30)
def test_map_stops_at_the_shortest_iterable(executor: Any) -> None:
    assert list(executor.map(add, range(10), range(3))) == [0, 2, 4]
    assert list(executor.map(add, range(4), (x for x in range(100)))) == [0, 2, 4, 6]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [1, 5])
def test_map_empty_iterable(executor: Any, chunksize: int) -> None:
    assert list(executor.map(square, [], chunksize=chunksize)) == []
    assert list(executor.map(add, range(5), [])) == []
    assert list(executor.map(square, iter([]))) == []


@pytest.mark.timeout(30)
def test_map_timeout_raises_futures_timeout_error(executor: Any) -> None:
    results = executor.map(sleep_return, ["fast", "slow"], [0.0, 2.0], timeout=1.0)
    assert next(results) == "fast"
    with pytest.raises(concurrent.futures.TimeoutError):
        next(results)


@pytest.mark.timeout(30)
def test_map_timeout_counts_from_the_map_call(executor: Any) -> None:
    assert list(executor.map(square, range(4))) == [0, 1, 4, 9]  # the workers are up
    # Six tasks of 1 s on two workers end at about 1, 1, 2, 2, 3, 3 s. Every result is
    # at most 1 s after the previous one, but the fifth comes after the 2.5 s budget.
    results = executor.map(sleep_return, range(6), [1.0] * 6, timeout=2.5, chunksize=1)
    received = []
    with pytest.raises(concurrent.futures.TimeoutError):
        for value in results:
            received.append(value)
    assert received == [0, 1, 2, 3]


@pytest.mark.timeout(30)
def test_map_of_lists_gives_fast_results_before_a_slow_one_times_out(executor: Any) -> None:
    """CPython's ``test_map_timeout`` shape: a list's fast results all come before the
    timeout; none waits in a chunk behind the slow task (corepool caps chunks by the
    lists' length, as for a list given to ``Pool.map``)."""
    results = executor.map(sleep_return, range(4), [0.0, 0.0, 0.0, 3.0], timeout=1.5)
    received = []
    with pytest.raises(concurrent.futures.TimeoutError):
        for value in results:
            received.append(value)
    assert received == [0, 1, 2]


def test_map_of_sized_iterables_has_their_length_for_chunk_sizing() -> None:
    from corepool.executor import _zipped

    zipped = _zipped(([1, 2, 3], "ab"))
    assert len(zipped) == 2 and list(zipped) == [(1, "a"), (2, "b")]  # type: ignore[arg-type]
    assert not hasattr(_zipped(([1, 2], iter("ab"))), "__len__")  # a generator: unknown
    assert list(_zipped(())) == []


@pytest.mark.timeout(30)
def test_map_timeout_not_hit(executor: Any) -> None:
    results = executor.map(sleep_square, range(4), [0.1] * 4, timeout=20)
    assert list(results) == [0, 1, 4, 9]


# as_completed / wait ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_as_completed_yields_every_future(executor: Any) -> None:
    futures = {executor.submit(square, i): i for i in range(10)}
    seen = {}
    for future in as_completed(futures, timeout=20):
        seen[futures[future]] = future.result()
    assert seen == {i: i * i for i in range(10)}


@pytest.mark.timeout(30)
def test_as_completed_yields_in_completion_order(executor: Any) -> None:
    # The function has run before (fast), as in any long-running program.
    assert list(executor.map(sleep_return, range(20), [0.0] * 20)) == list(range(20))
    slow = executor.submit(sleep_return, "slow", 2.0)
    fast = executor.submit(sleep_return, "fast", 0.0)
    order = [f.result() for f in as_completed([slow, fast], timeout=20)]
    assert order == ["fast", "slow"]


@pytest.mark.timeout(30)
def test_as_completed_timeout(executor: Any) -> None:
    slow = executor.submit(sleep_return, "slow", 2.0)
    with pytest.raises(concurrent.futures.TimeoutError):
        for _ in as_completed([slow], timeout=0.2):
            pass
    assert slow.result(20) == "slow"


@pytest.mark.timeout(30)
def test_wait_first_completed(executor: Any) -> None:
    # The function has run before (fast), as in any long-running program.
    warm = [executor.submit(sleep_return, i, 0.0) for i in range(20)]
    assert [f.result(20) for f in warm] == list(range(20))
    slow = executor.submit(sleep_return, "slow", 2.0)
    fast = executor.submit(sleep_return, "fast", 0.0)
    done, not_done = wait([slow, fast], timeout=20, return_when=FIRST_COMPLETED)
    assert done == {fast}
    assert not_done == {slow}
    done, not_done = wait([slow, fast], timeout=20, return_when=ALL_COMPLETED)
    assert done == {slow, fast}
    assert not_done == set()


@pytest.mark.timeout(30)
def test_wait_first_exception_and_timeout(executor: Any) -> None:
    slow = executor.submit(sleep_return, "slow", 2.0)
    failing = executor.submit(fail_on, 3)
    done, not_done = wait([slow, failing], timeout=20, return_when=FIRST_EXCEPTION)
    assert done == {failing}
    assert not_done == {slow}
    assert type(failing.exception()) is ValueError
    done, not_done = wait([slow], timeout=0.05)
    assert done == set()
    assert not_done == {slow}


# Cancellation and shutdown ------------------------------------------------------------


@pytest.mark.timeout(45)
def test_cancel_a_queued_future(executor: Any, gate: Gate) -> None:
    blockers = [executor.submit(wait_for_gate, *gate.task_args(i)) for i in range(WORKERS)]
    queued = [executor.submit(square, i) for i in range(20)]
    assert gate.wait_started(WORKERS) == list(range(WORKERS))
    assert all(f.running() for f in blockers)
    assert not blockers[0].cancel()  # a running call cannot be cancelled
    assert queued[-1].cancel()
    assert queued[-1].cancelled()
    assert queued[-1].done()
    with pytest.raises(CancelledError):
        queued[-1].result()
    gate.open()
    assert [f.result(20) for f in blockers] == list(range(WORKERS))
    assert [f.result(20) for f in queued[:-1]] == [i * i for i in range(19)]


@pytest.mark.timeout(45)
def test_shutdown_cancel_futures_cancels_queued_work(
    executor_cls: ExecutorFactory, gate: Gate
) -> None:
    ex = executor_cls(max_workers=WORKERS)
    try:
        blockers = [ex.submit(wait_for_gate, *gate.task_args(i)) for i in range(WORKERS)]
        queued = [ex.submit(square, i) for i in range(20)]
        assert gate.wait_started(WORKERS) == list(range(WORKERS))
        ex.shutdown(wait=False, cancel_futures=True)
        gate.open()
        # (A second shutdown(wait=True) of a ProcessPoolExecutor returns at once, and its
        # manager thread may still be cancelling futures, which wait() would not count as
        # done: wait on each future itself; result() wakes on a result or a cancel.)
        for future in blockers + queued:
            try:
                future.result(timeout=20)
            except CancelledError:
                pass
        assert [f.result(0) for f in blockers] == list(range(WORKERS))
        cancelled = [f for f in queued if f.cancelled()]
        assert queued[-1].cancelled()
        assert len(cancelled) >= len(queued) // 2
        for i, future in enumerate(queued):
            assert future.done()
            if future.cancelled():
                with pytest.raises(CancelledError):
                    future.result(0)
            else:
                assert future.result(0) == i * i
        with pytest.raises(RuntimeError):
            ex.submit(square, 1)
    finally:
        gate.open()
        ex.shutdown(wait=True)


@pytest.mark.timeout(30)
def test_shutdown_waits_for_submitted_work(executor_cls: ExecutorFactory) -> None:
    ex = executor_cls(max_workers=WORKERS)
    futures = [ex.submit(sleep_return, i, 0.2) for i in range(5)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(0) for f in futures] == list(range(5))
    ex.shutdown()  # a second shutdown is harmless


@pytest.mark.timeout(30)
def test_shutdown_without_wait_returns_at_once(executor_cls: ExecutorFactory) -> None:
    ex = executor_cls(max_workers=WORKERS)
    try:
        assert ex.submit(square, 2).result(20) == 4  # the workers are up
        futures = [ex.submit(sleep_return, i, 1.0) for i in range(WORKERS)]
        started = time.monotonic()
        ex.shutdown(wait=False)
        assert time.monotonic() - started < 0.8
        with pytest.raises(RuntimeError):
            ex.submit(square, 1)
        # the submitted work still runs to the end
        assert [f.result(20) for f in futures] == list(range(WORKERS))
    finally:
        ex.shutdown(wait=True)


@pytest.mark.timeout(30)
def test_with_block_waits_for_submitted_work(executor_cls: ExecutorFactory) -> None:
    with executor_cls(WORKERS) as ex:
        assert ex.submit(square, 2).result(20) == 4
        futures = [ex.submit(sleep_return, i, 0.3) for i in range(4)]
    assert all(f.done() for f in futures)
    assert [f.result(0) for f in futures] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("reads", [0, 1])
def test_with_block_exits_while_a_map_is_partly_read(
    executor_cls: ExecutorFactory, reads: int
) -> None:
    ex = executor_cls(max_workers=WORKERS)
    try:
        with ex:
            results = ex.map(square, range(10))
            head = [next(results) for _ in range(reads)]
        # Leaving the block waited for the map's tasks; the rest can still be read.
        assert head + list(results) == [x * x for x in range(10)]
    finally:
        # Only for the cleanup of a failed run: corepool's extra "stop now".
        terminate = getattr(ex, "terminate", None)
        if terminate is not None:
            terminate()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", ["shutdown", "with"])
def test_submit_and_map_after_shutdown_raise_runtime_error(
    executor_cls: ExecutorFactory, stop: str
) -> None:
    ex = executor_cls(max_workers=WORKERS)
    if stop == "with":
        with ex:
            pass
    else:
        ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)
    with pytest.raises(RuntimeError):
        ex.map(square, [1, 2])


# asyncio ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_asyncio_run_in_executor(executor: Any) -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(executor, square, i)
                                         for i in range(6)))
        with pytest.raises(CustomError, match="async"):
            await loop.run_in_executor(executor, raise_error, "CustomError", "async")
        return list(results)

    assert asyncio.run(main()) == [x * x for x in range(6)]


@pytest.mark.timeout(30)
def test_asyncio_wrap_future(executor: Any) -> None:
    async def main() -> tuple[Any, Any]:
        value = await asyncio.wrap_future(executor.submit(add, 40, 2))
        slow = asyncio.wrap_future(executor.submit(sleep_return, "slow", 2.0))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(slow), 0.1)
        with pytest.raises(KeyError):
            await asyncio.wrap_future(executor.submit(raise_error, "KeyError", "k"))
        return value, await slow

    assert asyncio.run(main()) == (42, "slow")


# Workers: initializer, max_tasks_per_child, constructor ---------------------------------


@pytest.mark.timeout(30)
def test_initializer_runs_in_every_worker(executor_cls: ExecutorFactory) -> None:
    with executor_cls(max_workers=WORKERS, initializer=init_worker, initargs=("ready",)) as ex:
        assert list(ex.map(read_worker_value, range(20))) == ["ready"] * 20
        futures = [ex.submit(read_worker_value) for _ in range(6)]
        assert [f.result(20) for f in futures] == ["ready"] * 6
    assert read_worker_value() is None  # the parent is untouched


@pytest.mark.timeout(30)
def test_positional_arguments_in_process_pool_executor_order(
    executor_cls: ExecutorFactory,
) -> None:
    # ProcessPoolExecutor(max_workers, mp_context, initializer, initargs)
    context = multiprocessing.get_context("spawn")
    with executor_cls(WORKERS, context, init_worker, ("positional",)) as ex:
        assert list(ex.map(read_worker_value, range(4))) == ["positional"] * 4


@pytest.mark.timeout(45)
@with_max_tasks
def test_max_tasks_per_child_recycles_workers(executor_cls: ExecutorFactory) -> None:
    with executor_cls(max_workers=WORKERS, max_tasks_per_child=1) as ex:
        pids = [ex.submit(get_pid).result(20) for _ in range(4)]
        assert len(set(pids)) == 4
        assert os.getpid() not in pids


@pytest.mark.timeout(45)
@with_max_tasks
def test_max_tasks_per_child_with_initializer(executor_cls: ExecutorFactory) -> None:
    # One call at a time: ProcessPoolExecutor of Python 3.11 can hang when several
    # workers retire at once (CPython gh-115634); this test is about the initializer.
    with executor_cls(
        WORKERS, None, init_worker, ("again",), max_tasks_per_child=2
    ) as ex:
        values = [ex.submit(read_worker_value).result(20) for _ in range(6)]
        assert values == ["again"] * 6
        pids = [ex.submit(get_pid).result(20) for _ in range(6)]
        assert len(set(pids)) >= 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("max_workers", [0, -1])
def test_bad_max_workers_raises_value_error(
    executor_cls: ExecutorFactory, max_workers: int
) -> None:
    with pytest.raises(ValueError):
        executor_cls(max_workers=max_workers)
    with pytest.raises(ValueError):
        executor_cls(max_workers)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("initializer", [42, "init_worker"])
def test_initializer_not_callable_raises_type_error(
    executor_cls: ExecutorFactory, initializer: Any
) -> None:
    with pytest.raises(TypeError):
        executor_cls(max_workers=WORKERS, initializer=initializer)
    with pytest.raises(TypeError):
        executor_cls(WORKERS, None, initializer)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-2, ValueError), ("3", TypeError), (1.5, TypeError)]
)
@with_max_tasks
def test_bad_max_tasks_per_child(
    executor_cls: ExecutorFactory, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        executor_cls(max_workers=WORKERS, max_tasks_per_child=value)


ERROR_SITUATIONS = {
    "worker dies": (compat_tasks.exit_now, ()),
    "argument cannot be pickled": (compat_tasks.identity, (compat_tasks.ReduceRaises(),)),
    "argument cannot be unpickled": (compat_tasks.identity, (compat_tasks.UnpickleRaises(),)),
    "result cannot be pickled": (compat_tasks.unpicklable_result, ()),
    "task calls sys.exit": (compat_tasks.sys_exit, ()),
}


def _raised(executor_class: Any, fn: Any, args: tuple[Any, ...]) -> BaseException:
    with executor_class(1) as ex:
        try:
            ex.submit(fn, *args).result(timeout=30)
        except BaseException as exc:
            return exc
    raise AssertionError("no error")


@pytest.mark.parametrize("situation", list(ERROR_SITUATIONS))
def test_executor_errors_are_also_what_process_pool_executor_raises(situation: str) -> None:
    """The error table of docs/guide/errors.md: an ``except`` clause written for the
    stdlib's error still catches corepool's, which stays a corepool error."""
    fn, args = ERROR_SITUATIONS[situation]
    stdlib_error = _raised(ProcessPoolExecutor, fn, args)
    error = _raised(corepool.Executor, fn, args)
    assert isinstance(error, type(stdlib_error)), (error, stdlib_error)
    assert isinstance(error, corepool.CorepoolError), error


def test_a_crash_is_a_broken_process_pool_but_the_executor_goes_on() -> None:
    with corepool.Executor(1) as ex:
        with pytest.raises(concurrent.futures.process.BrokenProcessPool) as caught:
            ex.submit(compat_tasks.exit_now).result(timeout=30)
        assert isinstance(caught.value, corepool.WorkerCrashed)
        assert ex.submit(square, 7).result(timeout=30) == 49


class _Holder:
    def method(self) -> int:
        return 1


@pytest.mark.parametrize("backend", ["process", "thread", "serial"])
def test_a_finished_call_keeps_nothing_alive(backend: str) -> None:
    """Neither the function (a bound method keeps its object) nor the result of a call
    outlives its Future; ``map`` keeps no result it has handed over."""
    import gc
    import weakref

    with corepool.Executor(2, backend=backend) as ex:
        holder = _Holder()
        ref = weakref.ref(holder)
        assert ex.submit(holder.method).result(timeout=30) == 1
        del holder
        gc.collect()
        assert ref() is None
        for value in ex.map(compat_tasks.make_box, range(5)):
            value_ref = weakref.ref(value)
            del value
            gc.collect()
            assert value_ref() is None
