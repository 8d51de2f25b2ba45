"""A race condition on a shared counter, and three fixes.

``counter.value += 1`` is two steps, a read and a write. Two processes can read the
same old value, and then one increment is lost. ``Value``'s built-in lock guards each
step, not the pair.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import corepool

N = 50_000  # increments per process


# --8<-- [start:setup]
def increment(counter: Any, n: int, use_lock: bool) -> None:
    for _ in range(n):
        if use_lock:
            with counter.get_lock():  # read and write under one lock
                counter.value += 1
        else:
            counter.value += 1  # read ... (another process writes here) ... write


def run_processes(use_lock: bool) -> int:
    counter = multiprocessing.Value("i", 0)
    workers = [
        multiprocessing.Process(target=increment, args=(counter, N, use_lock)) for _ in range(2)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    return int(counter.value)


# --8<-- [end:setup]


proxy: Any = None


def remember(shared: Any) -> None:
    global proxy
    proxy = shared


def bump(n: int) -> int:
    counter, lock = proxy
    for _ in range(n):
        if lock is None:
            counter.value += 1  # the same race, through a Manager
        else:
            with lock:
                counter.value += 1
    return n


def count_locally(n: int) -> int:
    done = 0
    for _ in range(n):
        done += 1  # private to this task: nothing to race on
    return done


def main() -> None:
    # --8<-- [start:stdlib]
    expected = 2 * N
    racy = run_processes(use_lock=False)
    print(f"two processes, no lock:   {racy:>7,} of {expected:,} ({expected - racy:,} lost)")
    locked = run_processes(use_lock=True)
    print(f"two processes, get_lock(): {locked:>6,} of {expected:,}")
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    tasks, per_task = 4, 500
    ctx = corepool.get_context()
    with ctx.Manager() as manager:
        for lock in (None, manager.Lock()):
            counter = manager.Value("i", 0)
            with corepool.Pool(2, initializer=remember, initargs=((counter, lock),)) as pool:
                pool.map(bump, [per_task] * tasks, chunksize=1)
            label = "no lock" if lock is None else "Manager Lock"
            print(f"corepool + Manager Value, {label}: {counter.value:,} of {tasks * per_task:,}")

    total = sum(corepool.map(count_locally, [N] * 2, workers=2))
    print(f"corepool, return counts and sum them: {total:,} of {expected:,}")
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
