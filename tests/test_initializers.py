"""A Pool's initializer on the thread and serial backends: it runs once in each thread
(as ``multiprocessing.pool.ThreadPool`` does), once in the caller's for ``serial``; one
that raises breaks the pool, as on the process backend. (It used to be ignored without
a word.)"""

from __future__ import annotations

import threading

import pytest

import corepool

pytestmark = pytest.mark.timeout(60)

_seen = threading.local()


def remember(value: int) -> None:
    _seen.value = value


def recall(_: object = None) -> int | None:
    return getattr(_seen, "value", None)


def refuse() -> None:
    raise ConnectionError("no database")


@pytest.mark.parametrize("backend", ["thread", "serial"])
def test_the_initializer_runs_in_each_thread(backend: str) -> None:
    with corepool.Pool(2, initializer=remember, initargs=(7,), backend=backend) as pool:
        assert set(pool.map(recall, range(20), chunksize=1)) == {7}
    with corepool.Executor(2, initializer=remember, initargs=(8,), backend=backend) as ex:
        assert ex.submit(recall).result() == 8


@pytest.mark.parametrize("backend", ["thread", "serial"])
def test_a_raising_initializer_breaks_the_pool(backend: str) -> None:
    with corepool.Pool(2, initializer=refuse, backend=backend) as pool:
        with pytest.raises(corepool.errors.BrokenPool, match="ConnectionError: no database"):
            pool.map(recall, range(4))
        with pytest.raises(corepool.errors.BrokenPool) as caught:
            pool.apply(recall)
        assert isinstance(caught.value.__cause__, ConnectionError)
