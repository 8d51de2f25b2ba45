"""Large numpy results, one source tree against another (before/after a change).

    python benchmarks/results_out.py --before /path/to/old/src          # 5 rounds
    python benchmarks/results_out.py --before /work/main/src --rounds 3 --mb 32 --tasks 8

Each side is a fresh ``python`` process with its own ``PYTHONPATH`` (the tree under
test: this checkout's ``src`` as "after", ``--before`` as "before"). It opens a
``corepool.Pool(2)``, warms it (numpy imported in each worker), then times
``pool.map(make_array, ...)``: ``--tasks`` tasks, each returning a new ``--mb`` MB
float64 array (``numpy.full``), results checked and dropped between maps.

Two figures per process: the **first** map of the pool, and the **steady** state: the
median of ``--maps`` maps after ``--settle`` more (untimed). They differ because a
pool settles over its first maps: the chunk sizes it learns for tasks this slow, and
the result segments the parent gives back to the workers for reuse (none exist before
the first results come back). Rounds alternate the two sides in a shuffled order, so a
drift of the shared machine's speed hits both. The report gives each side's median
seconds, GB/s of results received, and the speed-ups after/before.
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

def timed(pool, items):
    started = time.perf_counter()
    out = pool.map(make_array, items)
    seconds = time.perf_counter() - started
    assert [(len(a), a[0], a[-1]) for a in out] == [(size, i, i) for i in range(tasks)]
    return seconds

if __name__ == "__main__":
    mb, tasks, settle, maps = (int(a) for a in sys.argv[2:6])
    size = mb * 2**20 // 8
    items = [i * 2**32 + size for i in range(tasks)]
    with corepool.Pool(2) as pool:
        pool.map(make_array, [8, 2**32 + 8])  # warm: numpy imported in each worker
        first = timed(pool, items)
        for _ in range(settle):
            timed(pool, items)
        steady = statistics.median(timed(pool, items) for _ in range(maps))
    print(json.dumps([first, steady]))
"""


def run_side(src: str, mb: int, tasks: int, settle: int, maps: int) -> tuple[float, float]:
    """One process on the tree ``src``: its first map's seconds, and the median of its
    maps once settled."""
    env = dict(os.environ, PYTHONPATH=src)
    env.pop("COREPOOL_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(HERE), str(mb), str(tasks),
                          str(settle), str(maps)],
                         env=env, check=True, capture_output=True, text=True, cwd=HERE)
    first, steady = json.loads(out.stdout.strip().splitlines()[-1])
    return float(first), float(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src directory to compare with")
    parser.add_argument("--after", default=str(HERE.parent / "src"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--settle", type=int, default=5)
    parser.add_argument("--maps", type=int, default=5)
    args = parser.parse_args()
    sides = {"before": args.before, "after": args.after}
    times: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "steady": []} for name in sides}
    for _ in range(args.rounds):
        order = list(sides)
        random.shuffle(order)
        for name in order:
            first, steady = run_side(sides[name], args.mb, args.tasks, args.settle, args.maps)
            times[name]["first"].append(first)
            times[name]["steady"].append(steady)
    total_gb = args.mb * args.tasks * 2**20 / 1e9
    print(f"{args.tasks} x {args.mb} MB results, {args.rounds} rounds, {args.settle} maps to "
          f"settle then {args.maps} timed, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    print("| map | side | median s | GB/s | every round (s) |")
    print("|---|---|---|---|---|")
    medians = {(name, kind): statistics.median(values)
               for name, kinds in times.items() for kind, values in kinds.items()}
    for kind in ("first", "steady"):
        for name in sides:
            median = medians[name, kind]
            print(f"| {kind} | {name} | {median:.3f} | {total_gb / median:.2f} | "
                  + ", ".join(f"{v:.3f}" for v in times[name][kind]) + " |")
    for kind in ("first", "steady"):
        print(f"speed-up after / before, {kind} map: "
              f"{medians['before', kind] / medians['after', kind]:.2f}x")


if __name__ == "__main__":
    main()
