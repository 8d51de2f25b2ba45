"""Nested use (issue 11): a task that calls corepool itself, run as real programs.

The rule (corepool.nesting, docs/guide/backends.md): inside a worker process a call
that names no backend runs on threads; inside a thread or serial task, serially; a
named backend is honoured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import corepool
import scripts
import tasks

pytestmark = pytest.mark.timeout(90)

OUTER = ["process", "thread", "serial"]

NESTED_CALLS = """
import json, os, threading
import corepool

def inner(x):
    return x * 10

def where(_):
    return os.getpid(), threading.current_thread().name

def outer(n):
    mapped = corepool.map(inner, range(n))
    starred = corepool.starmap(pow, [(n, 2)])
    lazy = list(corepool.imap(inner, range(n)))
    with corepool.Pool(2) as pool:
        pooled = pool.map(inner, range(n))
        applied = pool.apply(inner, (n,))
    with corepool.Executor(2) as ex:
        executed = list(ex.map(inner, range(n)))
        submitted = ex.submit(inner, n).result()
    places = corepool.map(where, range(4))
    return {
        "n": n, "map": mapped, "starmap": starred, "imap": lazy, "pool": pooled,
        "apply": applied, "executor": executed, "submit": submitted,
        "pid": os.getpid(), "places": places,
        "children": len(__import__("psutil").Process().children()),
    }

if __name__ == "__main__":
    rows = corepool.map(outer, [3, 5], workers=2, backend=BACKEND)
    print(json.dumps({"rows": rows, "parent": os.getpid()}))
"""


@pytest.mark.parametrize("outer", OUTER)
def test_nested_calls_return_the_right_results(tmp_path: Path, outer: str) -> None:
    done = scripts.run(f"BACKEND = {outer!r}\n" + NESTED_CALLS, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for row in report["rows"]:
        n = row["n"]
        tens = [x * 10 for x in range(n)]
        assert row["map"] == row["imap"] == row["pool"] == row["executor"] == tens
        assert row["starmap"] == [n * n]
        assert row["apply"] == row["submit"] == n * 10
        # Not one more process: the inner level ran on threads or in the task's thread.
        assert row["children"] == 0
        pids = {pid for pid, _ in row["places"]}
        assert pids == {row["pid"]}
        threads = {name for _, name in row["places"]}
        if outer == "process":
            assert all(name.startswith("corepool-thread") for name in threads)
        else:  # serially, in the thread that runs the outer task
            assert len(threads) == 1
    if outer == "process":
        assert all(row["pid"] != report["parent"] for row in report["rows"])


def test_a_nested_failure_raises_the_tasks_own_error(tmp_path: Path) -> None:
    done = scripts.run(
        """
        import corepool

        class Bad(Exception):
            pass

        def inner(x):
            if x == 2:
                raise Bad(f"inner input {x}")
            return x

        def outer(n):
            try:
                corepool.map(inner, range(n))
            except Bad as exc:
                return f"caught {exc}"
            return "no error"

        def outer_raises(n):
            return corepool.map(inner, range(n))

        if __name__ == "__main__":
            for backend in ("process", "thread", "serial"):
                print(backend, corepool.map(outer, [1, 3], workers=2, backend=backend))
                try:
                    corepool.map(outer_raises, [3], workers=2, backend=backend)
                except Bad as exc:
                    print(backend, "outer got", type(exc).__name__, exc)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for backend in ("process", "thread", "serial"):
        assert f"{backend} ['no error', 'caught inner input 2']" in done.stdout
        assert f"{backend} outer got Bad inner input 2" in done.stdout


def test_a_named_backend_is_honoured_inside_a_worker(tmp_path: Path) -> None:
    done = scripts.run(
        """
        import os
        import corepool, tasks

        def pid(_):
            return os.getpid()

        def outer(_):
            inner = corepool.map(pid, range(4), workers=2, backend="process", chunksize=1)
            # A context is for processes: a Pool given one keeps them.
            with corepool.Pool(1, context=corepool.get_context()) as pool:
                in_process = pool.apply(pid, (0,))
            # An initializer runs on threads too, once in each.
            with corepool.Pool(1, initializer=tasks.set_global, initargs=(7,)) as pool:
                initialized = pool.apply(tasks.get_global), pool.apply(pid, (0,))
            return os.getpid(), sorted(set(inner)), in_process, initialized

        if __name__ == "__main__":
            for me, inner, in_process, (value, here) in corepool.map(outer, range(2),
                                                                     workers=2):
                assert me not in inner and len(inner) >= 1, (me, inner)
                assert in_process != me, (in_process, me)
                assert value == 7 and here == me, (value, here, me)
            print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_nested_pools_are_sized_on_the_workers_share_of_the_cpus(tmp_path: Path) -> None:
    """Two workers on all CPUs: a pool started in one with no size gets CPUs // 2
    workers (at least 1), threads unless a backend is named; a given size is kept."""
    done = scripts.run(
        """
        import json
        import corepool

        def outer(workers):
            corepool.map(abs, range(2), workers=workers)
            with corepool.Pool() as pool, corepool.Executor() as ex:
                faces = [repr(pool), ex.stats().backend]
            return corepool.api._default_pool(workers, None).workers, faces

        if __name__ == "__main__":
            rows = corepool.map(outer, [None, 3], workers=2, chunksize=1)
            print(json.dumps([rows, max(1, corepool.cpu_count() // 2)]))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows, share = json.loads(done.stdout)
    assert [size for size, _ in rows] == [share, 3]
    for _, (pool, executor) in rows:
        assert pool == f"<corepool.Pool state=RUN backend=thread workers={share}>"
        assert executor == "thread"


@pytest.mark.parametrize("backend", ["dask", "ray"], indirect=True)
def test_nested_calls_on_cluster_workers_return_and_do_not_hang(backend: str) -> None:
    """Dask workers are daemonic processes: the inner call runs on threads there. A Ray
    worker is an ordinary process: the inner call starts worker processes on its node."""
    got = corepool.map(tasks.sum_of_squares_in_a_pool, [3, 4], workers=2, backend=backend)
    assert got == [5, 14]
