"""What forwarding logs and print() costs tasks that neither log nor print.

``pool.map(square, range(200_000))`` (no chunksize: measured chunks) on two pools of
two workers alive side by side: one started with the forwarding on (the default), one
with it off (``COREPOOL_FORWARD_LOGS=0`` and ``COREPOOL_FORWARD_OUTPUT=0``, read when
a pool starts). Both are warmed first. Each round maps once on each, in a shuffled
order (the machine is shared and its speed drifts); the report gives each way's median
and min-max seconds, and the ratio of the medians (on / off)::

    PYTHONPATH=src python benchmarks/forwarding_cost.py              # 21 rounds
    PYTHONPATH=src python benchmarks/forwarding_cost.py --rounds 1   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

from workloads import square

import corepool

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


def measure(pool: corepool.Pool, n: int, expected: list[int]) -> float:
    """Seconds for one map of ``n`` tiny tasks."""
    started = time.perf_counter()
    out = pool.map(square, range(n))
    seconds = time.perf_counter() - started
    if out != expected:
        raise SystemExit("wrong results")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    expected = [square(x) for x in range(args.n)]
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    pools = {way: start(way) for way in WAYS}
    try:
        for _ in range(args.rounds):
            for way in rng.sample(list(WAYS), len(WAYS)):
                seconds[way].append(measure(pools[way], args.n, expected))
    finally:
        for pool in pools.values():
            pool.terminate()
    medians = {way: statistics.median(s) for way, s in seconds.items()}
    print(f"{args.n:,} tiny tasks, {args.rounds} rounds, shuffle seed {seed}")
    print("| forwarding | median (s) | min-max (s) |\n|---|---:|---:|")
    for way, samples in seconds.items():
        print(f"| {way} | {medians[way]:.3f} | {min(samples):.3f}-{max(samples):.3f} |")
    ratio = medians["on"] / medians["off"]
    print(f"ratio on/off of the medians: {ratio:.3f}")
    print(json.dumps({"seconds": seconds, "ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()
