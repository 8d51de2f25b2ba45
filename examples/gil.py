"""The GIL: one CPU-bound function timed serially, with threads and with processes.

Threads share one interpreter, and only the thread holding the Global Interpreter Lock
runs Python bytecode, so threads do not make pure-Python number crunching faster.
Processes each have their own interpreter and their own GIL.

Besides the wall time, each run reports how many CPU cores it kept busy on average
(CPU seconds used by this process and its worker processes / wall seconds). On a
machine shared with other jobs the wall times are noisy; the cores figure shows the
GIL directly: threads never get past one core.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psutil

import corepool

TASKS = [1_500_000] * 4  # four equal pieces of pure-Python work
ROUNDS = 3  # each way runs 3 times and the fastest counts: other jobs on the machine
#             can only slow a run down, never speed it up


# --8<-- [start:setup]
def burn(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


# --8<-- [end:setup]


def cpu_seconds() -> float:
    """CPU time used so far by this process (all threads) and its live descendants."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def timed(label: str, run: Callable[[], list[int]], serial: float | None = None) -> float:
    best, cores = float("inf"), 0.0
    for _ in range(ROUNDS):
        cpu, start = cpu_seconds(), time.perf_counter()
        results = run()
        elapsed, used = time.perf_counter() - start, cpu_seconds() - cpu
        assert len(set(results)) == 1 and len(results) == len(TASKS)
        if elapsed < best:
            best, cores = elapsed, used / elapsed
    speedup = f"{serial / best:4.1f}x" if serial else "    -"
    print(f"{label:<36} {best:5.2f} s  {speedup}  {cores:5.1f}")
    return best


def main() -> None:
    print(f"{len(TASKS)} tasks of pure-Python arithmetic, {corepool.cpu_count()} usable CPUs;")
    print(f"the fastest of {ROUNDS} runs of each, pools started beforehand")
    print(f"{'how':<36} {'wall':>7}  {'speed':>5}  {'cores':>5}")
    serial = timed("serial (a for loop)", lambda: [burn(n) for n in TASKS])

    # --8<-- [start:stdlib]
    with ThreadPoolExecutor(max_workers=4) as ex, multiprocessing.Pool(2) as pool:
        timed("threads (ThreadPoolExecutor, 4)", lambda: list(ex.map(burn, TASKS)), serial)
        timed("processes (multiprocessing.Pool, 2)", lambda: pool.map(burn, TASKS), serial)
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    with corepool.Pool(4, backend="thread") as threads, corepool.Pool(2) as processes:
        timed("corepool Pool(4, backend='thread')", lambda: threads.map(burn, TASKS), serial)
        timed("corepool Pool(2), processes", lambda: processes.map(burn, TASKS), serial)
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
