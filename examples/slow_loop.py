"""From a slow loop to a parallel program, step by step.

The loop simulates 40 random walks of ``STEPS`` steps and records how far each got
from where it started. Each step below is one section of the lesson
"From a slow loop to a parallel program": profile, check that it is CPU-bound, try
numpy, then run the loop's body on every core with ``corepool.map``, with a progress
bar, with failures returned as values, and on the serial backend to debug.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

import corepool

T = TypeVar("T")

STEPS = 150_000
SEEDS = range(40)


# --8<-- [start:loop]
def slow_program() -> list[int]:
    results = []
    for seed in SEEDS:
        rng = random.Random(seed)
        position = farthest = 0
        for _ in range(STEPS):
            position += 1 if rng.random() < 0.5 else -1
            farthest = max(farthest, abs(position))
        results.append(farthest)
    return results
# --8<-- [end:loop]


# --8<-- [start:function]
def walk(seed: int) -> int:
    """How far one random walk of STEPS steps gets from 0 (the loop's body)."""
    if seed < 0:
        raise ValueError(f"a seed must be >= 0, not {seed}")
    rng = random.Random(seed)
    position = farthest = 0
    for _ in range(STEPS):
        position += 1 if rng.random() < 0.5 else -1
        farthest = max(farthest, abs(position))
    return farthest
# --8<-- [end:function]


# --8<-- [start:numpy]
def walk_numpy(seed: int) -> int:
    """The same kind of walk with numpy: every step at once (other random numbers)."""
    import numpy as np

    steps = np.random.default_rng(seed).choice([-1, 1], size=STEPS)
    return int(np.abs(np.cumsum(steps)).max())
# --8<-- [end:numpy]


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """fn's result, and the wall and CPU seconds (this process) it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    # --8<-- [start:profile]
    profiler = cProfile.Profile()
    profiler.runcall(slow_program)
    pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(3)
    # --8<-- [end:profile]

    # --8<-- [start:bound]
    expected, wall, cpu = timed(slow_program)
    kind = "CPU-bound" if cpu > 0.3 * wall else "mostly waiting: I/O-bound"
    print(f"the loop: {wall:.2f} s wall, {cpu:.2f} s CPU ({cpu / wall:.0%}): {kind}")
    # --8<-- [end:bound]

    try:
        _, numpy_wall, _ = timed(lambda: [walk_numpy(seed) for seed in SEEDS])
        print(f"numpy, the walks vectorised: {numpy_wall:.2f} s "
              f"({wall / numpy_wall:.1f}x faster than the loop)")
    except ImportError:
        print("numpy is not installed: skipped")

    # --8<-- [start:map]
    first, first_wall, _ = timed(lambda: corepool.map(walk, SEEDS))
    results, map_wall, _ = timed(lambda: corepool.map(walk, SEEDS))
    # --8<-- [end:map]
    print(f"corepool.map, first call (starts the pool): {first_wall:.2f} s")
    print(f"corepool.map, second call: {map_wall:.2f} s: {wall / map_wall:.1f}x the loop's "
          f"speed on {corepool.cpu_count()} usable CPUs")
    print(f"same results as the loop: {first == expected and results == expected}")

    # --8<-- [start:progress]
    results = corepool.map(walk, SEEDS, progress=True)  # a tqdm bar on stderr
    # --8<-- [end:progress]
    print(f"progress=True: {len(results)} results (the bar went to stderr)")

    # --8<-- [start:on_error]
    inputs = [3, 1, -4, 1, 5]
    results = corepool.map(walk, inputs, on_error="return")
    failed = [(x, r) for x, r in zip(inputs, results, strict=True) if isinstance(r, Exception)]
    # --8<-- [end:on_error]
    print(f"on_error='return': {len(results) - len(failed)} results, "
          f"failed: {', '.join(f'{x}: {r!r}' for x, r in failed)}")

    # --8<-- [start:serial]
    try:
        corepool.map(walk, inputs, backend="serial")  # in this process: pdb works
    except ValueError as error:
        frames = traceback.extract_tb(error.__traceback__)
        print(f"backend='serial': {error!r}, raised in {frames[-1].name}() "
              f"at line {frames[-1].lineno}, in this process")
    # --8<-- [end:serial]


if __name__ == "__main__":
    main()
