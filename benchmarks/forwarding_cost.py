"""What forwarding logs and print() costs tasks that neither log nor print.

``pool.map(square, range(200_000))`` (no chunksize: measured chunks) on two pools of
two workers alive side by side: one started with the forwarding on (the default), one
with it off (``COREPOOL_FORWARD_LOGS=0`` and ``COREPOOL_FORWARD_OUTPUT=0``, read when
a pool starts). Both are warmed first. Each round maps once on each, in a shuffled
order (the machine is shared and its speed drifts); the report gives each way's median
and min-max wall seconds, and the ratio of the medians (on / off). On a loaded machine
the wall time swings more than any difference between the two, so the report also
gives the CPU seconds the maps used, in the calling process (all its threads) and in
its two workers, which waiting for a core does not inflate (summed over the rounds:
the kernel counts CPU time in 10 ms ticks). Last, what forwarding adds per chunk in a
worker (the run loop's three calls into ``_engine/outputs.py``) and per map in the
caller (reading its logging levels again), timed alone::

    PYTHONPATH=src python benchmarks/forwarding_cost.py              # 21 rounds
    PYTHONPATH=src python benchmarks/forwarding_cost.py --rounds 1   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import time
import timeit

import psutil
from workloads import square

import corepool
from corepool._engine import outputs
from corepool.forwarding import Forward, Levels

WAYS = {
    "on": {"COREPOOL_FORWARD_LOGS": "1", "COREPOOL_FORWARD_OUTPUT": "1"},
    "off": {"COREPOOL_FORWARD_LOGS": "0", "COREPOOL_FORWARD_OUTPUT": "0"},
}


def start(way: str) -> corepool.Pool:
    """A pool of two warm workers started with the forwarding ``way``."""
    os.environ.update(WAYS[way])
    pool = corepool.Pool(2)
    pool.map(square, range(2000))
    return pool


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def measure(pool: corepool.Pool, n: int, expected: list[int]) -> tuple[float, float, float]:
    """Wall seconds for one map of ``n`` tiny tasks, and the CPU seconds it took in this
    process and in the pool's workers."""
    me = psutil.Process()
    workers = [psutil.Process(pid) for pid in pool.pids()]
    mine, theirs = _cpu([me]), _cpu(workers)
    started = time.perf_counter()
    out = pool.map(square, range(n))
    seconds = time.perf_counter() - started
    mine, theirs = _cpu([me]) - mine, _cpu(workers) - theirs
    if out != expected:
        raise SystemExit("wrong results")
    return seconds, mine, theirs


def hook_cost() -> tuple[float, float]:
    """Microseconds per chunk of the worker-side hooks (forwarding on), and per map of
    reading the caller's levels again."""
    ours, theirs = socket.socketpair()
    streams = sys.stdout, sys.stderr
    outputs.install(theirs, Forward(Levels.of_caller(), True))  # as a worker does
    sys.stdout, sys.stderr = streams
    items = list(range(100))

    def chunk() -> None:  # what worker.py and _tasks/run.py call per untracked chunk
        outputs.chunk_started(1, None)
        place = outputs.place()
        if place is not None:
            place.follow(iter(items), items)
        outputs.chunk_ended()

    n = 100_000
    per_chunk = timeit.timeit(chunk, number=n) / n * 1e6
    per_map = timeit.timeit(Levels.of_caller, number=10_000) / 10_000 * 1e6
    ours.close()
    theirs.close()
    return per_chunk, per_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    expected = [square(x) for x in range(args.n)]
    samples: dict[str, list[tuple[float, float, float]]] = {way: [] for way in WAYS}
    pools = {way: start(way) for way in WAYS}
    try:
        for _ in range(args.rounds):
            for way in rng.sample(list(WAYS), len(WAYS)):
                samples[way].append(measure(pools[way], args.n, expected))
    finally:
        for pool in pools.values():
            pool.terminate()
    print(f"{args.n:,} tiny tasks, {args.rounds} rounds, shuffle seed {seed}")
    print("| forwarding | wall median (s) | wall min-max (s) | caller CPU, sum (s) "
          "| workers CPU, sum (s) |\n|---|---:|---:|---:|---:|")
    figures: dict[str, list[float]] = {}
    for way, rows in samples.items():
        wall, mine, theirs = (list(column) for column in zip(*rows, strict=True))
        figures[way] = [statistics.median(wall), sum(mine), sum(theirs)]
        print(f"| {way} | {figures[way][0]:.3f} | {min(wall):.3f}-{max(wall):.3f} "
              f"| {figures[way][1]:.2f} | {figures[way][2]:.2f} |")
    ratios = [on / off if off else float("nan")
              for on, off in zip(figures["on"], figures["off"], strict=True)]
    print("ratio on/off: wall medians {:.3f}, caller CPU {:.3f}, workers CPU {:.3f}"
          .format(*ratios))
    per_chunk, per_map = hook_cost()
    print(f"alone: {per_chunk:.2f} us per chunk in a worker, {per_map:.1f} us per map "
          "in the caller")
    print(json.dumps({"samples": samples, "ratios": [round(r, 4) for r in ratios]}))


if __name__ == "__main__":
    main()
