"""Calls per second through the one-call-at-a-time APIs, interleaved.

Each round submits N calls of a trivial function and waits for every result, on
corepool's ``Executor.submit`` (collected with ``as_completed``) and
``Pool.apply_async``, ``multiprocessing.Pool.apply_async`` and
``concurrent.futures.ProcessPoolExecutor.submit``, all with 2 workers, the pools
created (and warmed with one call) before the clock starts. The libraries take
turns within each round, so load from other processes falls on all of them alike.
Besides calls per second, the table gives the CPU time the calling process spent
per call (all its threads: the caller's and the pool's own), which load from other
processes does not inflate.

    python benchmarks/submit_throughput.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import corepool


def work(x: int) -> int:
    """The trivial task: the cost measured is the call's, not the work's."""
    return x + 1


def parent_cpu() -> float:
    """CPU seconds of this process so far, all its threads (the pool's own included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and parent CPU time from ``start()`` to ``stop()``."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), parent_cpu()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, parent_cpu() - self.cpu


def submit_on(make: Callable[[int], Any]) -> Callable[[int, int], tuple[float, float]]:
    """Calls through ``submit`` on the executor ``make(workers)``, collected with
    ``as_completed``: (wall seconds, parent CPU seconds)."""

    def run(calls: int, workers: int) -> tuple[float, float]:
        with make(workers) as ex:
            ex.submit(work, 0).result()
            clock = Clock()
            clock.start()
            futures = [ex.submit(work, i) for i in range(calls)]
            total = sum(f.result() for f in cf.as_completed(futures))
            elapsed = clock.stop()
        assert total == sum(range(1, calls + 1))
        return elapsed

    return run


def apply_async_on(make: Callable[[int], Any]) -> Callable[[int, int], tuple[float, float]]:
    """Calls through ``apply_async`` on the pool ``make(workers)``, each ``get()`` in
    turn: (wall seconds, parent CPU seconds)."""

    def run(calls: int, workers: int) -> tuple[float, float]:
        with make(workers) as pool:
            pool.apply_async(work, (0,)).get()
            clock = Clock()
            clock.start()
            results = [pool.apply_async(work, (i,)) for i in range(calls)]
            total = sum(r.get() for r in results)
            elapsed = clock.stop()
        assert total == sum(range(1, calls + 1))
        return elapsed

    return run


FORKSERVER = multiprocessing.get_context("forkserver")


CONTENDERS: dict[str, Callable[[int, int], tuple[float, float]]] = {
    "corepool Executor.submit": submit_on(corepool.Executor),
    "corepool Pool.apply_async": apply_async_on(corepool.Pool),
    "multiprocessing.Pool.apply_async": apply_async_on(FORKSERVER.Pool),
    "ProcessPoolExecutor.submit": submit_on(
        lambda workers: cf.ProcessPoolExecutor(workers, mp_context=FORKSERVER)
    ),
}
REFERENCE = "multiprocessing.Pool.apply_async"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    cpu: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(args.rounds):
        for name, run in CONTENDERS.items():
            wall, used = run(args.calls, args.workers)
            rates[name].append(args.calls / wall)
            cpu[name].append(1e6 * used / args.calls)
    reference = statistics.median(rates[REFERENCE])
    reference_cpu = statistics.median(cpu[REFERENCE])
    print(f"{args.calls} calls, {args.workers} workers, {args.rounds} interleaved rounds")
    print(
        "| API | median calls/s | min | max | ratio to mp.Pool.apply_async "
        "| parent CPU per call, µs | CPU ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, samples in rates.items():
        median = statistics.median(samples)
        used = statistics.median(cpu[name])
        print(
            f"| {name} | {median:,.0f} | {min(samples):,.0f} | {max(samples):,.0f} "
            f"| {median / reference:.2f}x | {used:.1f} | {used / reference_cpu:.2f}x |"
        )

if __name__ == "__main__":
    main()
