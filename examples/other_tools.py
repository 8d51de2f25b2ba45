"""When threads, asyncio or joblib fit better than worker processes.

1. Work that releases the GIL (hashlib on large buffers, zlib, most numpy and many C
   extensions) on data you already hold: threads run it in parallel and read the data
   in place; processes need a copy of it first.
2. Many concurrent waits (sockets, HTTP): asyncio or threads; see io_threads.py and
   asyncio_cpu.py.
3. The same large numpy array given to many tasks: joblib memory-maps it once, where a
   plain process pool sends a copy with every task; corepool copies it into shared
   memory per task, or once with ``corepool.shared``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np

import corepool


def timed(label: str, run: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = run()
    print(f"{label:<55} {time.perf_counter() - start:5.2f} s")
    return result


# --8<-- [start:setup]
def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def column_mean(array: np.ndarray, column: int) -> float:
    return float(array[:, column].mean())


# --8<-- [end:setup]


def main() -> None:
    # --8<-- [start:threads]
    buffers = [bytes([i]) * 25_000_000 for i in range(4)]  # 4 x 25 MB
    serial = timed("sha256 of 4 x 25 MB, serial", lambda: [digest(b) for b in buffers])
    threads = timed(
        "  corepool backend='thread' (shares the buffers)",
        lambda: corepool.map(digest, buffers, workers=2, backend="thread"),
    )
    corepool.map(abs, [0], workers=2)  # start the process pool before the clock
    processes = timed(
        "  corepool processes (each buffer is copied over)",
        lambda: corepool.map(digest, buffers, workers=2),
    )
    assert serial == threads == processes
    # --8<-- [end:threads]

    # --8<-- [start:joblib]
    array = np.random.default_rng(0).random((2_000, 2_000))  # 32 MB
    columns = range(0, 2_000, 200)  # 10 tasks, each given the whole array
    parallel = joblib.Parallel(n_jobs=2)  # memory-maps arrays above 1 MB
    parallel(joblib.delayed(abs)(-1) for _ in range(2))  # start its workers before the clock
    by_corepool = timed(
        "10 tasks given one 32 MB array, corepool (a shared-memory copy each)",
        lambda: corepool.starmap(column_mean, [(array, c) for c in columns], workers=2),
    )

    def placed_once() -> list[float]:
        handle = corepool.shared(array)  # one copy into shared memory, for every task
        return corepool.starmap(column_mean, [(handle, c) for c in columns], workers=2)

    by_shared = timed("  corepool.shared (placed once)", placed_once)
    by_joblib = timed(
        "  joblib.Parallel (memory-mapped once)",
        lambda: parallel(joblib.delayed(column_mean)(array, c) for c in columns),
    )
    assert np.allclose(by_corepool, by_joblib) and np.allclose(by_shared, by_joblib)
    # --8<-- [end:joblib]


if __name__ == "__main__":
    main()
