"""Timeouts and crashed workers: the standard library's waits, and corepool's recovery.

A worker that dies (``os._exit``, a segfault, the OOM killer's SIGKILL) loses the task
it was running. ``multiprocessing.Pool`` never learns which task was lost and waits
for it forever; ``ProcessPoolExecutor`` marks the whole pool broken. A task that hangs
can only be *waited for* with a timeout: the worker keeps running it.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import corepool


# --8<-- [start:setup]
def task(x: int) -> int:
    if x == 3:
        os._exit(1)  # the worker dies, as in a segfault or an OOM kill
    if x == 5:
        time.sleep(3600)  # hangs
    return x * 10


def crash_on_3(x: int) -> int:
    return task(x) if x != 5 else x * 10


def flaky(marker: str) -> str:
    """Crashes its worker on the first try, succeeds on the second."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        os._exit(1)
    return "ok on the second try"


# --8<-- [end:setup]


def main() -> None:
    # --8<-- [start:stdlib]
    with multiprocessing.Pool(2) as pool:
        start = time.perf_counter()
        pending = pool.map_async(crash_on_3, range(8))
        try:
            pending.get(timeout=1)  # without a timeout: forever
        except multiprocessing.TimeoutError:
            print(
                f"multiprocessing.Pool, a worker dies: no result after "
                f"{time.perf_counter() - start:.1f} s (the map would wait forever)"
            )

    with ProcessPoolExecutor(2) as ex:
        futures = [ex.submit(crash_on_3, x) for x in range(8)]
        outcomes = [type(f.exception()).__name__ if f.exception() else "ok" for f in futures]
        print("ProcessPoolExecutor, a worker dies:", ", ".join(outcomes))
        try:
            ex.submit(abs, -1).result()
        except Exception as error:
            print(f"  and then a new task: {type(error).__name__}")

    with multiprocessing.Pool(2) as pool:
        hung = pool.apply_async(task, (5,))
        try:
            hung.get(timeout=0.5)
        except multiprocessing.TimeoutError:
            time.sleep(0.5)
            print("multiprocessing.Pool, a task hangs: get(timeout=0.5) stops waiting;")
            print(f"  0.5 s later the task still runs in its worker: {not hung.ready()}")
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    start = time.perf_counter()
    results = corepool.map(task, range(8), workers=2, timeout=0.5, on_error="return")
    print(f"corepool.map(timeout=0.5, on_error='return') in {time.perf_counter() - start:.1f} s:")
    for x, result in enumerate(results):
        if isinstance(result, BaseException):
            print(f"    input {x}: {type(result).__name__}: {result}")
        else:
            print(f"    input {x}: {result}")
    print("the same pool, next call:", corepool.map(abs, [-1, -2], workers=2))

    with tempfile.TemporaryDirectory() as folder:
        marker = str(Path(folder) / "tried-once")
        print(
            "retries=1, a task that crashes once:",
            corepool.map(flaky, [marker], workers=2, retries=1),
        )
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
