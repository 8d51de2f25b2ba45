"""What every benchmark workload shares: run sizes, result tables, timing helpers."""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from libraries import ALL, Library

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERIAL = "serial (no pool)"
PYTHON_ONLY = "python (import only)"


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; ``--quick`` shrinks them all."""

    rounds: int = 5
    memory_rounds: int = 1
    tiny_n: int = 200_000
    tiny_small_n: int = 20_000  # for libraries that would need more than tiny_budget
    tiny_budget: float = 30.0
    tiny_always_small: tuple[str, ...] = ("ProcessPoolExecutor",)  # chunksize=1: ~10k/s
    cpu_tasks: int = 16
    first_n: int = 10_000
    memory_n: int = 3_000_000
    memory_ladder: tuple[int, ...] = (3_000_000, 1_000_000, 300_000, 100_000)
    memory_pilot_n: int = 100_000
    memory_budget: float = 120.0
    array_mb: int = 32  # each array of the arrays-in / arrays-out workloads
    array_tasks: int = 8
    shared_mb: int = 256  # the one array of the shared workload
    shared_tasks: int = 64

    @classmethod
    def quick(cls, rounds: int, memory_rounds: int) -> Settings:
        return cls(
            rounds=rounds, memory_rounds=memory_rounds, tiny_n=20_000, tiny_small_n=5_000,
            cpu_tasks=4, first_n=2_000, memory_n=30_000, memory_ladder=(30_000, 10_000),
            memory_pilot_n=30_000, memory_budget=10.0, array_mb=4, shared_mb=16,
            shared_tasks=8,
        )


@dataclass
class Table:
    """One workload's results: samples per library, plus how to print them."""

    title: str
    what: str
    unit: str  # "tasks/s", "s", "ms" or "MB"
    higher_is_better: bool
    samples: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, str] = field(default_factory=dict)  # library -> "N" cell, if any
    notes: list[str] = field(default_factory=list)
    speedup_over: str | None = None  # for "cpu": speedup = that row's median / this one's
    reference: str = "corepool"  # the row the ratio column divides by

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])


# Helpers ------------------------------------------------------------------------------

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def shuffled(rng: random.Random, items: Sequence[str]) -> list[str]:
    order = list(items)
    rng.shuffle(order)
    return order


def child_env() -> dict[str, str]:
    """The environment for every child: this folder importable, so ``workloads`` is."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    return env


def open_all() -> dict[str, Library]:
    libraries: dict[str, Library] = {}
    for cls in ALL:
        library = cls()
        library.open()
        libraries[library.name] = library
    return libraries


def close_all(libraries: dict[str, Library]) -> None:
    for library in libraries.values():
        library.close()




def interleave(
    settings: Settings,
    rng: random.Random,
    table: Table,
    runners: dict[str, Callable[[], object]],
    check: Callable[[str, object], None],
    label: str,
) -> None:
    """Time every runner once per round, in a fresh random order each round; ``check``
    raises if a runner's result is wrong. Samples (seconds) go into ``table``."""
    for round_no in range(settings.rounds):
        for name in shuffled(rng, list(runners)):
            seconds, out = timed(runners[name])
            check(name, out)
            table.samples.setdefault(name, []).append(seconds)
            log(f"  {label} round {round_no + 1} {name}: {seconds:.3f} s")
