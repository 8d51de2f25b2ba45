"""Is corepool slower than multiprocessing.Pool on CPU-bound tasks, and if so, where?

16 tasks of about 0.15 s of pure-Python work (a fixed amount of work, not of time) on
2 workers, ``map`` on corepool and on ``multiprocessing.Pool``, interleaved over
several rounds. Each task reports its own CPU time (``time.process_time``) and wall
time, its process's CPU affinity and nice value, and the BLAS/OpenMP thread limits it
sees; the parent's own CPU time during the map (its supervisor or handler threads)
is measured with ``getrusage``. If the tasks' CPU time is the same on both and only
wall time differs, the difference is scheduling (waiting, contention), not execution.

    python benchmarks/cpu_probe.py [--rounds 5] [--tasks 16]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import corepool

WORKERS = 2
WORK = 2_800_000  # loop iterations: about 0.15 s of pure Python here, unloaded


def work(n: int) -> dict[str, Any]:
    """Fixed work; what it cost, as the worker saw it."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    total = 0
    for i in range(n):
        total += i * i % 7
    end = time.monotonic()
    cpu, wall = time.process_time() - cpu0, end - wall0
    limits = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {
        "cpu": cpu,
        "wall": wall,
        "start": wall0,  # monotonic: comparable between processes
        "end": end,
        "pid": os.getpid(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "nice": os.nice(0),
        "limits": limits,
        "total": total,
    }


def idle_gaps(out: list[dict[str, Any]]) -> list[float]:
    """Per worker, the time between the end of one task and the start of its next:
    the round trip to the parent and back (and any wait to be scheduled)."""
    gaps: list[float] = []
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for o in out:
        by_pid.setdefault(o["pid"], []).append(o)
    for runs in by_pid.values():
        runs.sort(key=lambda o: o["start"])
        gaps += [b["start"] - a["end"] for a, b in itertools.pairwise(runs)]
    return gaps


def parent_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_corepool(tasks: int) -> tuple[float, float, list[dict[str, Any]]]:
    with corepool.Pool(WORKERS) as pool:
        pool.map(abs, range(WORKERS))  # the workers are up
        cpu0, start = parent_cpu(), time.perf_counter()
        out = pool.map(work, [WORK] * tasks)
        return time.perf_counter() - start, parent_cpu() - cpu0, out


def run_mp(tasks: int) -> tuple[float, float, list[dict[str, Any]]]:
    with multiprocessing.Pool(WORKERS) as pool:
        pool.map(abs, range(WORKERS))
        cpu0, start = parent_cpu(), time.perf_counter()
        out = pool.map(work, [WORK] * tasks)
        return time.perf_counter() - start, parent_cpu() - cpu0, out


LIBRARIES: dict[str, Callable[[int], tuple[float, float, list[dict[str, Any]]]]] = {
    "corepool": run_corepool,
    "multiprocessing.Pool": run_mp,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=16)
    args = parser.parse_args()
    rows: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "parent_cpu": [], "task_cpu": [], "task_wall": [], "gap": []}
        for name in LIBRARIES
    }
    seen: dict[str, set[str]] = {name: set() for name in LIBRARIES}
    for round_index in range(args.rounds):
        order = list(LIBRARIES.items())
        if round_index % 2:
            order.reverse()
        for name, run in order:
            wall, cpu, out = run(args.tasks)
            rows[name]["wall"].append(wall)
            rows[name]["parent_cpu"].append(cpu)
            rows[name]["task_cpu"].append(statistics.median(o["cpu"] for o in out))
            rows[name]["task_wall"].append(statistics.median(o["wall"] for o in out))
            rows[name]["gap"].append(1000 * statistics.median(idle_gaps(out)))
            for o in out:
                seen[name].add(f"affinity {o['affinity']}, nice {o['nice']}, {o['limits']}")
    print(f"{args.tasks} tasks x {WORK:,} iterations, {WORKERS} workers, "
          f"{args.rounds} interleaved rounds (medians)")
    print("| library | map wall s | per-task CPU s | per-task wall s | parent CPU s "
          "| idle between tasks, ms | wall / mp |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    mp_wall = statistics.median(rows["multiprocessing.Pool"]["wall"])
    for name, row in rows.items():
        m = {k: statistics.median(v) for k, v in row.items()}
        print(f"| {name} | {m['wall']:.2f} | {m['task_cpu']:.3f} | {m['task_wall']:.3f} "
              f"| {m['parent_cpu']:.3f} | {m['gap']:.2f} | {m['wall'] / mp_wall:.2f}x |")
    print("per-round wall:", {n: [round(w, 2) for w in r["wall"]] for n, r in rows.items()})
    for name, settings in seen.items():
        print(f"{name} workers: {'; '.join(sorted(settings))}")


if __name__ == "__main__":
    main()
