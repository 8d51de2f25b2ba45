"""Choosing the number of workers: os.cpu_count() counts the machine, not what you get.

A process pinned to some CPUs (``taskset``, ``os.sched_setaffinity``) or in a container
with a CPU quota (``docker run --cpus 2``, a Kubernetes CPU limit) may use fewer CPUs
than the machine has. ``multiprocessing.Pool()`` on Python 3.10-3.12 starts
``os.cpu_count()`` workers regardless; 3.13's ``os.process_cpu_count()`` honours the
affinity mask but not a cgroup quota. ``corepool.cpu_count()`` honours both.
"""

from __future__ import annotations

import multiprocessing
import os

import corepool
from corepool.cpus import cpu_report


def report(label: str) -> None:
    with multiprocessing.Pool() as pool:
        stdlib_workers = len(multiprocessing.active_children())
        pool.map(abs, [0])
    with corepool.Pool() as pool:
        corepool_workers = len(pool.pids())
    print(f"{label}:")
    print(f"    os.cpu_count() = {os.cpu_count()}, corepool.cpu_count() = {corepool.cpu_count()}")
    print(
        f"    multiprocessing.Pool() started {stdlib_workers} workers, "
        f"corepool.Pool() {corepool_workers}"
    )


def main() -> None:
    # --8<-- [start:count]
    print("why, on this machine:", "; ".join(cpu_report().reasons()))
    report("as started")
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:1])  # what `taskset -c 0 python ...` does
    report(f"pinned to CPU {allowed[0]}")
    # --8<-- [end:count]


if __name__ == "__main__":
    main()
