"""The task functions the benchmarks run.

They live at module level in a module of their own so that every library can send
them to its workers by reference (``workloads.square``), whatever its start method:
fork (multiprocessing, mpire), forkserver (corepool) or a fresh interpreter (joblib's
loky). ``compare.py`` puts this folder on ``PYTHONPATH`` so the workers can import it.
"""

from __future__ import annotations

import statistics
import time


def square(x: int) -> int:
    """The "tiny" task: far cheaper than sending it to another process."""
    return x * x


def identity(x: int) -> int:
    """The trivial task of the generator-memory workload."""
    return x


def nap(x: int) -> int:
    """The "first result" task: sleeps one millisecond."""
    time.sleep(0.001)
    return x


def spin(loops: int) -> int:
    """The "cpu" task: a pure-Python loop, so it holds the GIL all the time it runs."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def calibrate_spin(target_seconds: float, repeats: int = 3) -> int:
    """A loop count for which ``spin`` takes about ``target_seconds`` here, serially.

    Scales from a short trial run, then refines once from the median of ``repeats``
    runs at the estimated count (the machine is shared, so single runs are noisy).
    """
    loops = 200_000
    start = time.perf_counter()
    spin(loops)
    loops = max(1, int(loops * target_seconds / (time.perf_counter() - start)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        spin(loops)
        times.append(time.perf_counter() - start)
    return max(1, int(loops * target_seconds / statistics.median(times)))
