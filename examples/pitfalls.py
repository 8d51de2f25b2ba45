"""Pitfalls inside tasks: what goes wrong in the code that runs in the workers.

Each part shows a trap with the standard library, then what to do (with corepool
where it changes something). Everything has a timeout: nothing here can hang.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, as_completed, wait
from typing import Any

import cloudpickle
import numpy as np
import psutil

import corepool

FORK = multiprocessing.get_context("fork")


# --8<-- [start:seeds]
def noise(_: int) -> tuple[int, float]:
    time.sleep(0.1)  # long enough for both workers to take tasks
    return os.getpid(), float(np.random.random())  # numpy's global generator


def seeded_noise(seed: np.random.SeedSequence) -> float:
    return float(np.random.default_rng(seed).random())  # a generator of its own
# --8<-- [end:seeds]


def random_numbers() -> None:
    # --8<-- [start:seeds_run]
    np.random.seed(1234)  # "for reproducibility", in the parent, before the pool
    with FORK.Pool(2) as pool:
        draws = pool.map(noise, range(6), chunksize=1)
    first: dict[int, float] = {}
    for pid, value in draws:
        first.setdefault(pid, value)
    print(f"multiprocessing (fork), numpy's global generator: {len(first)} workers, "
          f"first draws identical: {len(set(first.values())) == 1}")

    seeds = np.random.SeedSequence(42).spawn(6)  # one independent seed per task
    values = corepool.map(seeded_noise, seeds)
    again = corepool.map(seeded_noise, seeds, backend="serial")
    print(f"SeedSequence(42).spawn(6), one per task: {len(set(values))} distinct of 6; "
          f"the same on backend='serial': {values == again}")
    # --8<-- [end:seeds_run]


# --8<-- [start:queue]
def produce(queue: Any, n: int) -> None:
    for i in range(n):
        queue.put(i)
    queue.put(None)  # the sentinel: this producer is done
# --8<-- [end:queue]


def queues() -> None:
    # --8<-- [start:queue_trap]
    lost = 0
    for _ in range(5):
        queue = FORK.Queue()
        producer = FORK.Process(target=produce, args=(queue, 1000))
        producer.start()
        got = 0
        while not queue.empty():  # the trap: "empty" only means "empty right now"
            queue.get()
            got += 1
        lost += got < 1000
        while queue.get() is not None:  # drain the rest, so that join() cannot block
            pass
        producer.join()
    print(f"while not queue.empty(): items missed in {lost} of 5 runs")
    # --8<-- [end:queue_trap]

    # --8<-- [start:sentinels]
    queue = FORK.Queue()
    producers = [FORK.Process(target=produce, args=(queue, 1000)) for _ in range(2)]
    for p in producers:
        p.start()
    items, finished = 0, 0
    while finished < len(producers):  # until every producer has sent its sentinel
        item = queue.get(timeout=10)
        if item is None:
            finished += 1
        else:
            items += 1
    for p in producers:
        p.join()  # after the queue is drained: cannot block
    print(f"sentinels: {items:,} of 2,000 items, exit codes {[p.exitcode for p in producers]}")
    # --8<-- [end:sentinels]


def stopping() -> None:
    # --8<-- [start:terminate]
    p = FORK.Process(target=time.sleep, args=(60,))
    p.start()
    p.join(timeout=0.5)  # returns after 0.5 s whether or not p ended
    if p.is_alive():
        p.terminate()  # SIGTERM
        p.join()  # reap it
    print(f"join(timeout=0.5), still alive, terminate(), join(): exit code {p.exitcode}")

    [outcome] = corepool.map(time.sleep, [60], timeout=0.5, on_error="return")
    print(f"corepool.map(..., timeout=0.5): {type(outcome).__name__}")
    # --8<-- [end:terminate]


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def futures() -> None:
    # --8<-- [start:futures]
    with corepool.Executor(2) as ex:
        fs = [ex.submit(pause, s) for s in (0.8, 0.1, 0.3)]
        print(f"as_completed: {[f.result() for f in as_completed(fs)]}")

        fs = [ex.submit(pause, s) for s in (0.8, 0.1)]
        done, not_done = wait(fs, return_when=FIRST_COMPLETED)
        print(f"wait(FIRST_COMPLETED): {len(done)} done ({done.pop().result()} s), "
              f"{len(not_done)} still running")

        bad = ex.submit(int, "seven")
        print(f"exception(): {bad.exception()!r}")  # waits, returns it, raises nothing

    with corepool.Executor(1) as ex:
        running = ex.submit(pause, 0.5)
        queued = ex.submit(pause, 0.5)
        wait([running], timeout=0.2)
        print(f"cancel(): queued -> {queued.cancel()}, "
              f"running -> {running.cancel()} (a running task is not stopped)")
    # --8<-- [end:futures]


# --8<-- [start:nested]
def inner_stdlib(n: int) -> str:
    try:
        with FORK.Pool(2) as pool:
            return str(sum(pool.map(abs, range(n))))
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def inner_corepool(n: int) -> int:
    return sum(corepool.map(abs, range(n)))  # runs on threads inside this worker
# --8<-- [end:nested]


def nested() -> None:
    # --8<-- [start:nested_run]
    with FORK.Pool(1) as pool:
        print(f"multiprocessing.Pool inside a Pool task: {pool.apply(inner_stdlib, (10,))}")
    print(f"corepool.map inside a corepool task: {corepool.map(inner_corepool, [10])}")
    # --8<-- [end:nested_run]


# --8<-- [start:lock]
def hold(lock: Any) -> None:
    lock.acquire()
    time.sleep(60)  # killed by the timeout while it holds the lock
# --8<-- [end:lock]


def locks() -> None:
    # --8<-- [start:lock_run]
    with corepool.get_context().Manager() as manager:
        lock = manager.Lock()
        corepool.map(hold, [lock], timeout=0.5, on_error="return")
        acquired = lock.acquire(timeout=1)
    print(f"a Manager Lock held by a task killed by its timeout: acquire(timeout=1) -> {acquired}")
    # --8<-- [end:lock_run]


# --8<-- [start:globals]
TABLE = list(range(1_000_000))  # a large global at the top level of the script


def lookup(i: int) -> int:
    return TABLE[i]
# --8<-- [end:globals]


def globals_travel() -> None:
    # --8<-- [start:globals_run]
    size = len(cloudpickle.dumps(lookup))
    print(f"cloudpickle.dumps(lookup), a __main__ function using TABLE: {size / 1e6:.1f} MB")
    # --8<-- [end:globals_run]


# --8<-- [start:freeze]
def collect_in_child(conn: Any) -> None:
    me = psutil.Process()
    before = me.memory_full_info().uss  # memory private to this process
    gc.collect()  # the collector writes to the header of every object it scans
    conn.send((me.memory_full_info().uss - before) / 1e6)


def private_growth() -> float:
    """MB of the parent's pages a forked child copies by running the collector once."""
    parent_end, child_end = FORK.Pipe()
    child = FORK.Process(target=collect_in_child, args=(child_end,))
    child.start()
    grown: float = parent_end.recv()
    child.join()
    return grown
# --8<-- [end:freeze]


def memory() -> None:
    # --8<-- [start:freeze_run]
    data = [[i] for i in range(1_000_000)]  # a million small objects the collector tracks
    print(f"forked child, gc.collect(): {private_growth():.1f} MB of shared pages copied")
    gc.freeze()  # in the parent, before forking: existing objects leave the collector
    print(f"the same after gc.freeze() in the parent: {private_growth():.1f} MB")
    gc.unfreeze()
    del data
    # --8<-- [end:freeze_run]


def main() -> None:
    random_numbers()
    queues()
    stopping()
    futures()
    nested()
    locks()
    globals_travel()
    memory()


if __name__ == "__main__":
    main()
