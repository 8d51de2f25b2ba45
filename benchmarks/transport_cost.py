"""What the portable transport costs beside the Linux one (issue 17).

Each round starts one fresh program per transport, in random order (interleaved, so
that load on the machine falls on both alike), and each program measures, on a pool
of 2 workers:

start       ``Pool(2)`` up to the first result (spawn against the fork server)
tiny        ``pool.map(square, range(200_000))`` on the warm pool: tasks per second
arrays in   eight 32 MB float64 arrays as arguments, each summed: seconds
arrays out  eight 32 MB arrays made by the tasks, returned: seconds

Medians over the rounds, and portable / linux ratios (above 1: portable is slower
for times, faster for tasks per second)::

    PYTHONPATH=src python benchmarks/transport_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

TRANSPORTS = ("linux", "portable")
MB32 = 4 * 1024 * 1024  # float64 items in 32 MB


def _sum(a):  # type: ignore[no-untyped-def]
    return float(a.sum())


def _make(n: int):  # type: ignore[no-untyped-def]
    import numpy

    return numpy.full(n, 1.0)


def child() -> None:
    """One program: every workload once, printed as JSON."""
    import numpy
    from workloads import square

    import corepool

    out: dict[str, float] = {}
    started = time.perf_counter()
    with corepool.Pool(2) as pool:
        pool.apply(square, (1,))
        out["start"] = time.perf_counter() - started
        pool.map(square, range(20_000))  # warm
        started = time.perf_counter()
        pool.map(square, range(200_000))
        out["tiny"] = 200_000 / (time.perf_counter() - started)
        arrays = [numpy.full(MB32, float(i)) for i in range(8)]
        pool.map(_sum, arrays[:2], chunksize=1)  # warm the segments
        started = time.perf_counter()
        pool.map(_sum, arrays, chunksize=1)
        out["arrays in"] = time.perf_counter() - started
        started = time.perf_counter()
        results = pool.map(_make, [MB32] * 8, chunksize=1)
        out["arrays out"] = time.perf_counter() - started
        del results
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    here = os.path.dirname(os.path.abspath(__file__))
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in TRANSPORTS}
    for _ in range(args.rounds):
        for name in random.sample(TRANSPORTS, len(TRANSPORTS)):
            env = {**os.environ, "COREPOOL_TRANSPORT": name}
            env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
            done = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child"],
                env=env, capture_output=True, text=True, check=True, timeout=600,
            )
            runs[name].append(json.loads(done.stdout))
    print(f"{args.rounds} rounds, interleaved; medians")
    print(f"{'':<12}{'linux':>12}{'portable':>12}{'portable/linux':>16}")
    for key, unit in (("start", "s"), ("tiny", "tasks/s"), ("arrays in", "s"),
                      ("arrays out", "s")):
        linux = statistics.median(r[key] for r in runs["linux"])
        portable = statistics.median(r[key] for r in runs["portable"])
        print(f"{key:<12}{linux:>10.3g} {unit[:1]}{portable:>10.3g} {unit[:1]}"
              f"{portable / linux:>14.2f}x   ({unit})")


if __name__ == "__main__":
    main()
