"""Start-up cost and per-task overhead: when a pool is slower than a for loop.

Starting worker processes takes time, and every task sent to a worker is pickled,
written to a pipe, read, unpickled, and its result sent back. For small jobs that is
more than the work itself; for tiny tasks, sending them one by one dominates.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import corepool

TINY = range(20_000)


def square(x: int) -> int:
    return x * x


def timed(label: str, run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    print(f"{label:<58} {elapsed * 1000:9.2f} ms")
    return elapsed


def loop() -> None:
    for _ in range(5):
        [square(x) for x in range(100)]


# --8<-- [start:setup]
def new_pool_each_time(method: str) -> None:
    for _ in range(5):
        with multiprocessing.get_context(method).Pool(2) as pool:
            pool.map(square, range(100))


def one_pool() -> None:
    with multiprocessing.Pool(2) as pool:
        for _ in range(5):
            pool.map(square, range(100))


def one_by_one() -> None:
    with multiprocessing.Pool(2) as pool:
        pool.map(square, TINY, chunksize=1)


def default_chunks() -> None:
    with multiprocessing.Pool(2) as pool:
        pool.map(square, TINY)


# --8<-- [end:setup]


def main() -> None:
    # --8<-- [start:stdlib]
    timed("a for loop, 5 x 100 squares", loop)
    timed(
        "multiprocessing, a new 'fork' Pool(2) for each of 5 maps",
        lambda: new_pool_each_time("fork"),
    )
    timed(
        "multiprocessing, a new 'spawn' Pool(2) for each of 5 maps",
        lambda: new_pool_each_time("spawn"),
    )
    timed("multiprocessing, one Pool(2) for 5 maps", one_pool)
    timed("multiprocessing, 20,000 tiny tasks, chunksize=1", one_by_one)
    timed("multiprocessing, 20,000 tiny tasks, default chunks", default_chunks)
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    timed(
        "corepool.map, first call (starts the default pool)",
        lambda: corepool.map(square, range(100), workers=2),
    )
    timed(
        "corepool.map, next 5 calls (reuse it)",
        lambda: [corepool.map(square, range(100), workers=2) for _ in range(5)],
    )
    timed(
        "corepool.map, 20,000 tiny tasks (measured chunks)",
        lambda: corepool.map(square, TINY, workers=2),
    )
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
