"""``corepool demo``: serial vs threads vs processes, measured on this machine.

The task functions are module-level so that worker processes can import them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import corepool

from ..api import shutdown_default_pool
from ..backends.process import default_start_method

__all__ = ["Measurement", "Workload", "calibrate", "measure", "render", "run", "spin", "wait"]

CPU_TASK_SECONDS = 0.2
QUICK_CPU_TASK_SECONDS = 0.04
IO_TASKS = 40
QUICK_IO_TASKS = 20
IO_SLEEP = 0.05
IO_THREADS = 20
SHARED_HINT_BELOW = 1.3  # CPU speedup on processes that suggests the CPUs are shared
LABELS = {"serial": "serial loop", "thread": "threads", "process": "processes"}

GIL_TEXT = (
    "Why: threads do not speed up CPU-bound pure Python, because CPython's global interpreter\n"
    "lock (GIL) lets only one thread run Python bytecode at a time, while each worker process\n"
    "has its own interpreter and its own GIL, so processes run on all cores at once.\n"
    "A thread waiting on I/O (here time.sleep) releases the GIL, so for waiting on I/O threads\n"
    "are enough, and cheaper than processes."
)


def spin(n: int) -> int:
    """CPU-bound pure Python: a tight arithmetic loop of ``n`` steps."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def wait(seconds: float) -> float:
    """I/O-bound stand-in for a network call: sleep, then return the delay."""
    time.sleep(seconds)
    return seconds


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _spin_seconds(n: int) -> float:
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


def calibrate(target_seconds: float) -> int:
    """Loop size for which one :func:`spin` call takes about ``target_seconds`` here."""
    n = 10_000
    while True:
        best = min(_spin_seconds(n) for _ in range(3))
        if best >= 0.01:
            return max(1_000, round(n * target_seconds / best))
        n *= 4


@dataclass
class Measurement:
    """One way of running a workload: its wall time and speedup over the serial loop."""

    mode: str
    workers: int
    seconds: float
    speedup: float


@dataclass
class Workload:
    """A function over a list of inputs, and how long each way of running it took."""

    title: str
    fn: Callable[[Any], Any]
    inputs: list[Any]
    measurements: dict[str, Measurement] = field(default_factory=dict)
    expected: list[Any] = field(default_factory=list)

    def time_serial(self) -> None:
        """Time a plain ``for`` loop; its results are the reference."""
        seconds = _seconds(lambda: self.expected.extend(self.fn(x) for x in self.inputs))
        self.measurements["serial"] = Measurement("serial", 1, seconds, 1.0)

    def time_map(self, mode: str, workers: int | None = None) -> None:
        """Time ``corepool.map`` on the ``mode`` backend and check its results."""
        results: list[Any] = []
        seconds = _seconds(lambda: results.extend(
            corepool.map(self.fn, self.inputs, workers=workers, backend=mode)))
        if results != self.expected:
            raise RuntimeError(f"corepool.map(backend={mode!r}) returned wrong results")
        serial = self.measurements["serial"].seconds
        used = workers or corepool.cpu_count()
        self.measurements[mode] = Measurement(mode, used, seconds, serial / seconds)

    def as_dict(self) -> dict[str, Any]:
        """The workload's description and measurements as JSON-ready data."""
        return {"title": self.title, "tasks": len(self.inputs),
                "results": {mode: asdict(m) for mode, m in self.measurements.items()}}


def measure(quick: bool) -> dict[str, Any]:
    """Run both workloads serially, on threads and on processes; JSON-ready results."""
    usable = corepool.cpu_count()
    loop = calibrate(QUICK_CPU_TASK_SECONDS if quick else CPU_TASK_SECONDS)
    cpu = Workload(f"CPU-bound: spin({loop}), a pure-Python loop", spin,
                   [loop] * max(4, 2 * usable))
    io = Workload(f"I/O-bound: time.sleep({IO_SLEEP}) standing in for a network call", wait,
                  [IO_SLEEP] * (QUICK_IO_TASKS if quick else IO_TASKS))
    try:
        cpu.time_serial()
        io.time_serial()
        cpu.time_map("thread")
        io.time_map("thread", IO_THREADS)
        # Start the worker processes (each runs one task) before timing them.
        pool_start = _seconds(
            lambda: corepool.map(wait, [0.0] * usable, chunksize=1, backend="process"))
        cpu.time_map("process")
        io.time_map("process")
    finally:
        shutdown_default_pool()
    return {
        "usable_cpus": usable,
        "start_method": default_start_method(),
        "quick": quick,
        "pool_start_seconds": pool_start,
        "cpu": {**cpu.as_dict(), "loop_size": loop},
        "io": {**io.as_dict(), "sleep_seconds": IO_SLEEP},
    }


def _table(workload: dict[str, Any]) -> list[str]:
    lines = [f"{workload['title']}, {workload['tasks']} tasks",
             f"  {'how':<12}{'workers':>8}{'wall time':>12}{'speedup':>10}"]
    for mode, m in workload["results"].items():
        lines.append(f"  {LABELS[mode]:<12}{m['workers']:>8}{m['seconds']:>10.2f} s"
                     f"{m['speedup']:>9.2f}x")
    return lines


def render(data: dict[str, Any]) -> str:
    """The human-readable report: both tables, then why."""
    lines = [f"corepool demo: usable CPUs: {data['usable_cpus']}, "
             f"start method: {data['start_method']}", ""]
    per_task = data["cpu"]["results"]["serial"]["seconds"] / data["cpu"]["tasks"]
    lines += _table(data["cpu"])
    lines += [f"  (one task takes ~{per_task:.2f} s serially)", ""]
    lines += _table(data["io"])
    lines += ["", f"Starting the worker processes took {data['pool_start_seconds']:.2f} s "
              "(done once, before timing).", "", GIL_TEXT]
    if data["usable_cpus"] == 1:
        lines.append("With 1 usable CPU, processes cannot speed up CPU-bound work either.")
    elif data["cpu"]["results"]["process"]["speedup"] < SHARED_HINT_BELOW:
        lines.append(f"Note: processes were not clearly faster here, so these "
                     f"{data['usable_cpus']} CPUs seem busy with\nother work (a loaded machine, "
                     "or a VM whose CPUs are shared with others).")
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        lines.append("This interpreter runs without the GIL, so threads may speed up CPU work.")
    return "\n".join(lines)


def run(*, quick: bool = False, as_json: bool = False) -> int:
    """Measure and print the table (or JSON with ``as_json``); returns the exit code."""
    data = measure(quick)
    print(json.dumps(data, indent=2) if as_json else render(data))
    return 0
