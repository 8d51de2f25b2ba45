"""The task functions the benchmarks run.

They live at module level in a module of their own so that every library can send
them to its workers by reference (``workloads.square``), whatever its start method:
fork (multiprocessing, mpire), forkserver (corepool) or a fresh interpreter (joblib's
loky). ``compare.py`` puts this folder on ``PYTHONPATH`` so the workers can import it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


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


# Data-plane workloads (numpy; imported lazily so the other workloads need no numpy).
ARRAY_VALUE = 0.5
BIG: Any = None  # the shared workload's array, for libraries that inherit it under fork


def array_sum(a: Any) -> float:
    """The arrays-in task: the sum of an argument array (reads all of it)."""
    return float(a.sum())


def make_array(code: int) -> Any:
    """The arrays-out task: a new float64 array, returned. ``code`` is
    ``value * 2**32 + size`` (one int: mpire spreads a tuple or list over arguments)."""
    import numpy

    value, size = divmod(code, 2**32)
    return numpy.full(size, float(value))


def shared_sum(args: tuple[Any, int]) -> float:
    """The shared task: reads the whole shared array (corepool: the handle's object)."""
    array, _ = args
    return float(array.sum())


def global_sum(_: int) -> float:
    """The shared task for a pool forked after ``workloads.BIG`` was set."""
    assert BIG is not None
    return float(BIG.sum())


def mpire_shared_sum(shared: Any, _: int) -> float:
    """The shared task for mpire's ``shared_objects``."""
    return float(shared.sum())
