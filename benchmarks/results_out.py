"""Large numpy results, one source tree against another (before/after a change).

    python benchmarks/results_out.py --before /path/to/old/src          # 5 rounds
    python benchmarks/results_out.py --before /work/main/src --rounds 3 --mb 32 --tasks 8

Each side is a fresh ``python`` process with its own ``PYTHONPATH`` (the tree under
test: this checkout's ``src`` as "after", ``--before`` as "before"). It opens a warm
``corepool.Pool(2)``, then times ``pool.map(make_array, ...)``: ``--tasks`` tasks, each
returning a new ``--mb`` MB float64 array (``numpy.full``), results checked and dropped
between maps, ``--maps`` maps per process (the median is that side's sample for the
round). Rounds alternate the two sides in a shuffled order, so a drift of the shared
machine's speed hits both. The report gives each side's median seconds, GB/s of results
received, and the speed-up after/before.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import corepool
from workloads import make_array

mb, tasks, maps = (int(a) for a in sys.argv[2:5])
size = mb * 2**20 // 8
items = [i * 2**32 + size for i in range(tasks)]
times = []
with corepool.Pool(2) as pool:
    pool.map(make_array, [8, 2**32 + 8])  # warm: numpy imported in each worker
    for _ in range(maps):
        started = time.perf_counter()
        out = pool.map(make_array, items)
        times.append(time.perf_counter() - started)
        assert [(len(a), a[0], a[-1]) for a in out] == [(size, i, i) for i in range(tasks)]
        del out
print(json.dumps(statistics.median(times)))
"""


def run_side(src: str, mb: int, tasks: int, maps: int) -> float:
    """One process on the tree ``src``: the median seconds of its maps."""
    env = dict(os.environ, PYTHONPATH=src)
    env.pop("COREPOOL_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(HERE), str(mb), str(tasks),
                          str(maps)], env=env, check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src directory to compare with")
    parser.add_argument("--after", default=str(HERE.parent / "src"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--maps", type=int, default=5)
    args = parser.parse_args()
    sides = {"before": args.before, "after": args.after}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        order = list(sides)
        random.shuffle(order)
        for name in order:
            times[name].append(run_side(sides[name], args.mb, args.tasks, args.maps))
    total_gb = args.mb * args.tasks * 2**20 / 1e9
    print(f"{args.tasks} x {args.mb} MB results, {args.rounds} rounds x {args.maps} maps, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("| side | median s | GB/s | every round (s) |")
    print("|---|---|---|---|")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"| {name} | {medians[name]:.3f} | {total_gb / medians[name]:.2f} | "
              + ", ".join(f"{v:.3f}" for v in values) + " |")
    print(f"speed-up after / before: {medians['before'] / medians['after']:.2f}x")


if __name__ == "__main__":
    main()
