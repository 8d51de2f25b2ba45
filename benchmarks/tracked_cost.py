"""What a timeout costs tiny tasks: compare.py's "tiny" workload, with and without one.

``corepool.map(square, range(200_000), workers=2)`` on the warm default pool, as in
``compare.py``, three ways, interleaved over rounds (medians of tasks per second):

fast        no timeout: the chunk runs in a C loop, nothing per task (a crash re-runs
            the finished tasks of its chunk).
timeout     ``timeout=60``: each task's position and start go to the worker's slot, and
            its result to the worker's result log, so a crash or hang never re-runs a
            finished task.
chunksize=1 no timeout, one task per chunk: the other way to run nothing twice.

Run it once per source tree to compare versions, e.g.::

    PYTHONPATH=src python benchmarks/tracked_cost.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from workloads import square

import corepool

WAYS = {
    "fast": {},
    "timeout": {"timeout": 60.0},
    "chunksize=1": {"chunksize": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    expected = [square(x) for x in range(args.n)]
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    corepool.map(square, range(1000), workers=2)  # start and warm the default pool
    for _ in range(args.rounds):
        for way in rng.sample(list(WAYS), len(WAYS)):
            n = args.n if way != "chunksize=1" else args.n // 20
            started = time.perf_counter()
            out = corepool.map(square, range(n), workers=2, **WAYS[way])  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            if out != expected[:n]:
                raise SystemExit(f"{way}: wrong results")
            rates[way].append(n / seconds)
    medians = {way: round(statistics.median(r)) for way, r in rates.items()}
    print(json.dumps({"corepool": corepool.__file__, "tasks_per_second": medians}))


if __name__ == "__main__":
    main()
