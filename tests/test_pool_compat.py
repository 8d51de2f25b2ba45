"""``corepool.Pool`` is a drop-in for ``multiprocessing.Pool``.

Every test runs twice, once against ``multiprocessing.Pool`` (the reference) and once
against ``corepool.Pool``, with the same body: existing code keeps working when only
the import changes. Behaviours in which corepool deliberately differs (lazy input,
timeouts, retries, crash recovery) are tested elsewhere.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
    raise_error_item,
    read_worker_value,
    sleep_return,
    sleep_square,
    slow_square,
    square,
)

WORKERS = 2

PoolFactory = Callable[..., Any]


@pytest.fixture(params=[multiprocessing.Pool, corepool.Pool], ids=["multiprocessing", "corepool"])
def pool_cls(request: pytest.FixtureRequest) -> PoolFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def pool(pool_cls: PoolFactory) -> Iterator[Any]:
    p = pool_cls(WORKERS)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


class Recorder:
    """Collects callback arguments and signals when the first arrives."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.event = threading.Event()

    def __call__(self, value: Any) -> None:
        self.calls.append(value)
        self.event.set()


# map / starmap ------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [None, 1, 3, 100])
def test_map(pool: Any, chunksize: int | None) -> None:
    assert pool.map(square, range(20), chunksize) == [x * x for x in range(20)]
    assert pool.map(square, range(20), chunksize=chunksize) == [x * x for x in range(20)]


@pytest.mark.timeout(30)
def test_map_accepts_generators_and_keeps_order(pool: Any) -> None:
    # Early inputs are slower, so completion order differs from input order.
    items = ((x, 0.02 * (5 - x) if x < 5 else 0.0) for x in range(10))
    assert pool.starmap(sleep_square, items, 1) == [x * x for x in range(10)]
    assert pool.map(square, (x for x in range(7))) == [x * x for x in range(7)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["map", "starmap"])
def test_empty_iterable_gives_empty_list(pool: Any, method: str) -> None:
    assert getattr(pool, method)(square, []) == []
    assert getattr(pool, method)(square, iter([]), 4) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [None, 1, 4])
def test_starmap(pool: Any, chunksize: int | None) -> None:
    args = [(i, i + 1) for i in range(15)]
    assert pool.starmap(add, args, chunksize) == [2 * i + 1 for i in range(15)]
    assert pool.starmap(add3, [(1, 2, 3), [4, 5, 6]]) == [6, 15]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [None, 1, 5])
def test_map_async(pool: Any, chunksize: int | None) -> None:
    result = pool.map_async(square, range(12), chunksize)
    assert result.get(20) == [x * x for x in range(12)]
    assert result.ready()
    assert result.successful()
    assert pool.map_async(square, []).get(20) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [None, 1, 5])
def test_starmap_async(pool: Any, chunksize: int | None) -> None:
    args = [(i, 10) for i in range(12)]
    result = pool.starmap_async(add, args, chunksize)
    assert result.get(20) == [i + 10 for i in range(12)]
    assert result.successful()
    assert pool.starmap_async(add, []).get(20) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["map_async", "starmap_async"])
def test_async_map_callback_gets_the_list(pool: Any, method: str) -> None:
    callback, error_callback = Recorder(), Recorder()
    items = range(6) if method == "map_async" else [(i,) for i in range(6)]
    result = getattr(pool, method)(
        square, items, callback=callback, error_callback=error_callback
    )
    assert result.get(20) == [x * x for x in range(6)]
    assert callback.event.wait(20)
    assert callback.calls == [[x * x for x in range(6)]]
    assert error_callback.calls == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["map_async", "starmap_async"])
def test_async_map_error_callback_gets_the_exception(pool: Any, method: str) -> None:
    callback, error_callback = Recorder(), Recorder()
    items = range(6) if method == "map_async" else [(i,) for i in range(6)]
    result = getattr(pool, method)(
        fail_on, items, 1, callback=callback, error_callback=error_callback
    )
    with pytest.raises(ValueError, match="bad input 3"):
        result.get(20)
    assert result.ready()
    assert not result.successful()
    assert error_callback.event.wait(20)
    assert len(error_callback.calls) == 1
    assert type(error_callback.calls[0]) is ValueError
    assert callback.calls == []


# imap / imap_unordered ----------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [1, 3, 50])
def test_imap_is_ordered(pool: Any, chunksize: int) -> None:
    it = pool.imap(slow_square, range(10), chunksize)
    assert list(it) == [x * x for x in range(10)]
    assert list(pool.imap(square, range(10))) == [x * x for x in range(10)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunksize", [1, 3, 50])
def test_imap_unordered_yields_every_result(pool: Any, chunksize: int) -> None:
    it = pool.imap_unordered(slow_square, range(10), chunksize)
    assert sorted(it) == [x * x for x in range(10)]
    assert sorted(pool.imap_unordered(square, range(10))) == [x * x for x in range(10)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_empty_iterable(pool: Any, method: str) -> None:
    assert list(getattr(pool, method)(square, [])) == []
    assert list(getattr(pool, method)(square, iter([]), 5)) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [0, -1])
def test_imap_rejects_chunksize_below_one(pool: Any, method: str, chunksize: int) -> None:
    with pytest.raises(ValueError):
        getattr(pool, method)(square, range(3), chunksize)


@pytest.mark.timeout(30)
def test_imap_yields_results_before_the_failing_one(pool: Any) -> None:
    it = pool.imap(fail_on, range(6), 1)
    assert [next(it), next(it), next(it)] == [0, 1, 4]
    with pytest.raises(ValueError, match="bad input 3"):
        next(it)


# apply / apply_async ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_apply(pool: Any) -> None:
    assert pool.apply(square, (7,)) == 49
    assert pool.apply(describe, (1,), {"b": 2, "c": 3}) == (1, 2, 3)
    assert pool.apply(describe, [1, 2]) == (1, 2, None)
    assert pool.apply(get_pid) != os.getpid()


@pytest.mark.timeout(30)
def test_apply_async(pool: Any) -> None:
    results = [pool.apply_async(add, (i, i)) for i in range(8)]
    assert [r.get(20) for r in results] == [2 * i for i in range(8)]
    assert pool.apply_async(describe, (1,), {"c": 3}).get(20) == (1, None, 3)


@pytest.mark.timeout(30)
def test_apply_async_callback(pool: Any) -> None:
    callback, error_callback = Recorder(), Recorder()
    result = pool.apply_async(square, (9,), callback=callback, error_callback=error_callback)
    assert result.get(20) == 81
    assert callback.event.wait(20)
    assert callback.calls == [81]
    assert error_callback.calls == []


@pytest.mark.timeout(30)
def test_apply_async_error_callback(pool: Any) -> None:
    callback, error_callback = Recorder(), Recorder()
    result = pool.apply_async(
        raise_error, ("CustomError", "boom"), callback=callback, error_callback=error_callback
    )
    with pytest.raises(CustomError, match="boom"):
        result.get(20)
    assert error_callback.event.wait(20)
    assert len(error_callback.calls) == 1
    assert type(error_callback.calls[0]) is CustomError
    assert error_callback.calls[0].args == ("boom",)
    assert callback.calls == []


@pytest.mark.timeout(30)
def test_apply_async_positional_callbacks(pool: Any) -> None:
    # apply_async(func, args, kwds, callback, error_callback)
    callback, error_callback = Recorder(), Recorder()
    pool.apply_async(square, (3,), {}, callback, error_callback).get(20)
    failing = pool.apply_async(fail_on, (3,), {}, callback, error_callback)
    with pytest.raises(ValueError):
        failing.get(20)
    assert callback.event.wait(20)
    assert error_callback.event.wait(20)
    assert callback.calls == [9]
    assert [type(e) for e in error_callback.calls] == [ValueError]


# AsyncResult --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_async_result_before_and_after_ready(pool: Any) -> None:
    result = pool.apply_async(sleep_return, ("done", 1.5))
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    assert result.wait(0.05) is None
    assert not result.ready()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(0.1)
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0)
    assert result.wait() is None
    assert result.ready()
    assert result.successful()
    assert result.get() == "done"
    assert result.get(0) == "done"


@pytest.mark.timeout(30)
def test_async_result_of_map_before_ready(pool: Any) -> None:
    result = pool.map_async(sleep_square, [], 1)
    assert result.get(20) == []
    slow = pool.starmap_async(sleep_square, [(2, 1.5), (3, 0.0)])
    assert not slow.ready()
    with pytest.raises(ValueError):
        slow.successful()
    with pytest.raises(multiprocessing.TimeoutError):
        slow.get(0.1)
    assert slow.get(20) == [4, 9]
    assert slow.successful()


@pytest.mark.timeout(30)
def test_async_result_of_failed_task(pool: Any) -> None:
    result = pool.apply_async(fail_on, (3,))
    result.wait(20)
    assert result.ready()
    assert result.successful() is False
    with pytest.raises(ValueError, match="bad input 3"):
        result.get()
    # get() raises again, the same way, every time it is called
    with pytest.raises(ValueError, match="bad input 3"):
        result.get(0)


@pytest.mark.timeout(30)
def test_idle_worker_takes_the_next_task(pool: Any) -> None:
    # The function has run before (fast), as in any long-running program.
    warm = [pool.apply_async(sleep_return, (i, 0.0)) for i in range(20)]
    assert [r.get(20) for r in warm] == list(range(20))
    slow = pool.apply_async(sleep_return, ("slow", 3.0))
    fast = pool.apply_async(sleep_return, ("fast", 0.0))
    # Two workers, two tasks: the fast one does not wait for the slow one.
    assert fast.get(timeout=1.5) == "fast"
    assert not slow.ready()
    assert slow.get(20) == "slow"


# Exceptions keep their type -----------------------------------------------------------



def _call(pool: Any, method: str, kind: str, message: str) -> Any:
    items = [(kind, message)]
    if method == "apply":
        return pool.apply(raise_error, (kind, message))
    if method == "apply_async":
        return pool.apply_async(raise_error, (kind, message)).get(20)
    if method == "map":
        return pool.map(raise_error_item, items)
    if method == "map_async":
        return pool.map_async(raise_error_item, items).get(20)
    if method == "starmap":
        return pool.starmap(raise_error, items)
    if method == "starmap_async":
        return pool.starmap_async(raise_error, items).get(20)
    if method == "imap":
        return list(pool.imap(raise_error_item, items))
    if method == "imap_unordered":
        return list(pool.imap_unordered(raise_error_item, items))
    raise AssertionError(method)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "method",
    ["apply", "apply_async", "map", "map_async", "starmap", "starmap_async", "imap",
     "imap_unordered"],
)
@pytest.mark.parametrize(("kind", "message"), ERRORS, ids=[k for k, _ in ERRORS])
def test_task_exception_keeps_its_type(pool: Any, method: str, kind: str, message: str) -> None:
    with pytest.raises(ERROR_TYPES[kind]) as info:
        _call(pool, method, kind, message)
    assert type(info.value) is ERROR_TYPES[kind]
    assert info.value.args == (message,)


@pytest.mark.timeout(30)
def test_map_raises_the_failing_items_exception(pool: Any) -> None:
    with pytest.raises(ValueError, match="bad input 3"):
        pool.map(fail_on, range(10), 2)
    with pytest.raises(ValueError, match="bad input 5"):
        pool.starmap(fail_on, [(x, 5) for x in range(10)])
    # The pool is still usable after a task failed.
    assert pool.map(square, range(4)) == [0, 1, 4, 9]


# Lifetime and misuse ------------------------------------------------------------------

AFTER_CLOSE_CALLS: dict[str, Callable[[Any], Any]] = {
    "apply": lambda p: p.apply(square, (1,)),
    "apply_async": lambda p: p.apply_async(square, (1,)),
    "map": lambda p: p.map(square, [1]),
    "map_async": lambda p: p.map_async(square, [1]),
    "starmap": lambda p: p.starmap(add, [(1, 2)]),
    "starmap_async": lambda p: p.starmap_async(add, [(1, 2)]),
    "imap": lambda p: p.imap(square, [1]),
    "imap_unordered": lambda p: p.imap_unordered(square, [1]),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", ["close", "terminate"])
@pytest.mark.parametrize("method", sorted(AFTER_CLOSE_CALLS))
def test_use_after_stop_raises_value_error(pool_cls: PoolFactory, stop: str, method: str) -> None:
    p = pool_cls(WORKERS)
    try:
        getattr(p, stop)()
        with pytest.raises(ValueError, match="Pool not running"):
            AFTER_CLOSE_CALLS[method](p)
    finally:
        p.terminate()
        p.join()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_with_after_stop_raises_value_error(pool_cls: PoolFactory, stop: str) -> None:
    p = pool_cls(WORKERS)
    try:
        getattr(p, stop)()
        with pytest.raises(ValueError, match="Pool not running"), p:
            pass
    finally:
        p.terminate()
        p.join()


@pytest.mark.timeout(30)
def test_join_while_running_raises_value_error(pool_cls: PoolFactory) -> None:
    with pool_cls(WORKERS) as p:
        with pytest.raises(ValueError):
            p.join()
        # still usable afterwards
        assert p.map(square, [2, 3]) == [4, 9]


@pytest.mark.timeout(30)
def test_close_then_join_finishes_submitted_work(pool_cls: PoolFactory) -> None:
    p = pool_cls(WORKERS)
    try:
        results = [p.apply_async(sleep_return, (i, 0.2)) for i in range(4)]
        mapped = p.map_async(square, range(5))
        p.close()
        p.join()
        assert all(r.ready() for r in results)
        assert [r.get(0) for r in results] == [0, 1, 2, 3]
        assert mapped.get(0) == [0, 1, 4, 9, 16]
    finally:
        p.terminate()
        p.join()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_results_can_be_read_after_close(pool_cls: PoolFactory, method: str) -> None:
    p = pool_cls(WORKERS)
    try:
        it = getattr(p, method)(square, range(10), 2)
        p.close()
        assert sorted(it) == [x * x for x in range(10)]
        p.join()
    finally:
        p.terminate()
        p.join()


@pytest.mark.timeout(15)
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_results_can_be_read_after_close_and_join(
    pool_cls: PoolFactory, method: str
) -> None:
    p = pool_cls(WORKERS)
    try:
        it = getattr(p, method)(square, range(10), 2)
        p.close()
        p.join()  # the submitted tasks finish; their results wait for the reader
        assert sorted(it) == [x * x for x in range(10)]
    finally:
        p.terminate()
        p.join()


@pytest.mark.timeout(30)
def test_terminate_stops_running_work_promptly(pool_cls: PoolFactory) -> None:
    p = pool_cls(WORKERS)
    try:
        assert p.apply(square, (2,)) == 4  # the workers are up
        p.apply_async(sleep_return, (None, 20))
        started = time.monotonic()
        p.terminate()
        p.join()
        assert time.monotonic() - started < 10
    finally:
        p.terminate()
        p.join()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("processes", [0, -1])
def test_bad_processes_raises_value_error(pool_cls: PoolFactory, processes: int) -> None:
    with pytest.raises(ValueError):
        pool_cls(processes)
    with pytest.raises(ValueError):
        pool_cls(processes=processes)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("maxtasksperchild", [0, -3, 1.5, "2"])
def test_bad_maxtasksperchild_raises_value_error(
    pool_cls: PoolFactory, maxtasksperchild: Any
) -> None:
    with pytest.raises(ValueError):
        pool_cls(WORKERS, maxtasksperchild=maxtasksperchild)
    with pytest.raises(ValueError):
        pool_cls(WORKERS, None, (), maxtasksperchild)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("initializer", [42, "init_worker"])
def test_initializer_not_callable_raises_type_error(
    pool_cls: PoolFactory, initializer: Any
) -> None:
    with pytest.raises(TypeError):
        pool_cls(WORKERS, initializer=initializer)
    with pytest.raises(TypeError):
        pool_cls(WORKERS, initializer)


# Workers: initializer, maxtasksperchild, context ----------------------------------------


@pytest.mark.timeout(30)
def test_initializer_runs_in_every_worker(pool_cls: PoolFactory) -> None:
    assert read_worker_value() is None  # the parent is untouched
    with pool_cls(WORKERS, initializer=init_worker, initargs=("ready",)) as p:
        assert p.map(read_worker_value, range(20), 1) == ["ready"] * 20
        assert p.apply(read_worker_value) == "ready"
        assert [r.get(20) for r in [p.apply_async(read_worker_value) for _ in range(6)]] == [
            "ready"
        ] * 6
    assert read_worker_value() is None


@pytest.mark.timeout(30)
def test_positional_arguments_in_multiprocessing_order(pool_cls: PoolFactory) -> None:
    # Pool(processes, initializer, initargs, maxtasksperchild)
    with pool_cls(WORKERS, init_worker, ["positional"], 10) as p:
        assert p.map(read_worker_value, range(4)) == ["positional"] * 4


@pytest.mark.timeout(45)
def test_maxtasksperchild_recycles_workers(pool_cls: PoolFactory) -> None:
    with pool_cls(WORKERS, maxtasksperchild=1) as p:
        pids = p.map(get_pid, range(6), 1)
        assert len(set(pids)) == 6
        assert os.getpid() not in pids
        more = [p.apply_async(get_pid).get(20) for _ in range(3)]
        assert len(set(more)) == 3
        assert not set(more) & set(pids)


@pytest.mark.timeout(45)
def test_maxtasksperchild_with_initializer(pool_cls: PoolFactory) -> None:
    with pool_cls(WORKERS, init_worker, ("again",), 2) as p:
        assert p.map(read_worker_value, range(10), 1) == ["again"] * 10
        assert len(set(p.map(get_pid, range(8), 1))) >= 4


# Context manager ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_with_returns_the_pool_and_terminates_on_exit(pool_cls: PoolFactory) -> None:
    with pool_cls(WORKERS) as p:
        assert p.map(square, [1, 2]) == [1, 4]
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply_async(square, (1,))
    p.join()  # allowed after the with block (it terminated the pool)


@pytest.mark.timeout(30)
def test_with_exit_does_not_wait_for_running_tasks(pool_cls: PoolFactory) -> None:
    with pool_cls(WORKERS) as p:
        assert p.apply(square, (3,)) == 9
        p.apply_async(sleep_return, ("late", 20))
        started = time.monotonic()
    assert time.monotonic() - started < 10
    p.join()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_break_out_of_endless_imap_in_with_returns_promptly(
    pool_cls: PoolFactory, method: str
) -> None:
    seen = []
    with pool_cls(WORKERS) as p:
        for value in getattr(p, method)(square, itertools.count()):
            seen.append(value)
            if len(seen) == 50:
                break
        started = time.monotonic()
    assert time.monotonic() - started < 10
    assert len(seen) == 50
    if method == "imap":
        assert seen == [x * x for x in range(50)]
    p.join()


@pytest.mark.timeout(30)
def test_exception_inside_with_terminates_and_propagates(pool_cls: PoolFactory) -> None:
    with pytest.raises(KeyError), pool_cls(WORKERS) as p:
        p.apply_async(sleep_return, (None, 20))
        raise KeyError("inside")
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    p.join()
