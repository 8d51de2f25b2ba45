"""What recycling workers costs: ``maxtasksperchild`` None, 25 and 1 on 1 ms tasks.

Each round maps N tasks of 1 ms of pure-Python work with ``chunksize=1`` (so that a
task is a task for both libraries' ``maxtasksperchild`` count) on 2 workers, on
corepool and on ``multiprocessing.Pool`` (its default start method, and
``forkserver``), each pool created inside the timed region. The contenders take turns
within each round. The table gives tasks per second (median), the slowdown against
the same library without recycling, and the cost of one replacement derived from it:
(time with recycling - time without) / replacements.

    python benchmarks/recycling.py [--tasks 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import corepool

WORKERS = 2


def task(x: int) -> int:
    """About 1 ms of pure-Python work."""
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return x


def run_corepool(tasks: int, budget: int | None) -> float:
    start = time.perf_counter()
    with corepool.Pool(WORKERS, maxtasksperchild=budget) as pool:
        assert pool.map(task, range(tasks), chunksize=1) == list(range(tasks))
    return time.perf_counter() - start


def run_mp(method: str | None) -> Callable[[int, int | None], float]:
    def run(tasks: int, budget: int | None) -> float:
        context: Any = multiprocessing.get_context(method)
        start = time.perf_counter()
        with context.Pool(WORKERS, maxtasksperchild=budget) as pool:
            assert pool.map(task, range(tasks), chunksize=1) == list(range(tasks))
        return time.perf_counter() - start

    return run


LIBRARIES: dict[str, Callable[[int, int | None], float]] = {
    "corepool": run_corepool,
    f"multiprocessing.Pool ({multiprocessing.get_start_method()})": run_mp(None),
    "multiprocessing.Pool (forkserver)": run_mp("forkserver"),
}
BUDGETS: tuple[int | None, ...] = (None, 25, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[tuple[str, int | None], list[float]] = {}
    for _ in range(args.rounds):
        for budget in BUDGETS:
            for name, run in LIBRARIES.items():
                tasks = args.tasks if budget != 1 else args.tasks // 4
                elapsed = run(tasks, budget)
                times.setdefault((name, budget), []).append(elapsed / tasks)
    print(f"{args.tasks} tasks of 1 ms (a quarter of them at maxtasksperchild=1), "
          f"{WORKERS} workers, chunksize=1, {args.rounds} interleaved rounds")
    print(
        "| library | maxtasksperchild | tasks/s (median) | slowdown vs none "
        "| ms per replacement |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in LIBRARIES:
        base = statistics.median(times[(name, None)])
        for budget in BUDGETS:
            per_task = statistics.median(times[(name, budget)])
            replacement = "" if budget is None else f"{1000 * (per_task - base) * budget:.1f}"
            print(f"| {name} | {budget} | {1 / per_task:,.0f} | {per_task / base:.2f}x "
                  f"| {replacement} |")


if __name__ == "__main__":
    main()
