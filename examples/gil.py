"""The GIL: one CPU-bound function timed serially, with threads and with processes.

Threads share one interpreter, and only the thread holding the Global Interpreter Lock
runs Python bytecode, so threads do not make pure-Python number crunching faster.
Processes each have their own interpreter and their own GIL.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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


def timed(label: str, run: Callable[[], list[int]], serial: float | None = None) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        results = run()
        times.append(time.perf_counter() - start)
        assert len(set(results)) == 1 and len(results) == len(TASKS)
    elapsed = min(times)
    speedup = f"  ({serial / elapsed:.1f}x serial)" if serial else ""
    print(f"{label:<34} {elapsed:5.2f} s{speedup}")
    return elapsed


def main() -> None:
    print(f"{len(TASKS)} tasks of pure-Python arithmetic, {corepool.cpu_count()} usable CPUs;")
    print(f"the fastest of {ROUNDS} runs of each")
    serial = timed("serial (a for loop)", lambda: [burn(n) for n in TASKS])

    # --8<-- [start:stdlib]
    def with_threads() -> list[int]:
        with ThreadPoolExecutor(max_workers=4) as ex:
            return list(ex.map(burn, TASKS))

    def with_processes() -> list[int]:
        with multiprocessing.Pool(2) as pool:  # includes starting the 2 processes
            return pool.map(burn, TASKS)

    timed("threads (ThreadPoolExecutor, 4)", with_threads, serial)
    timed("processes (multiprocessing, 2)", with_processes, serial)
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    with corepool.Pool(4, backend="thread") as threads, corepool.Pool(2) as processes:
        timed("corepool Pool(4, backend='thread')", lambda: threads.map(burn, TASKS), serial)
        timed("corepool Pool(2), processes", lambda: processes.map(burn, TASKS), serial)
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
