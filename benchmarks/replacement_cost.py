"""What a replacement worker costs, in a script with a heavy import at the top.

This file is the script: it imports NumPy at its top level, as real scripts do, then
maps 160 tasks on 2 workers with ``chunksize=1``, every second one of which calls
``os._exit``: 80 crashes, 80 replacement workers. Each replacement comes from the fork
server; if the server has not imported the main script, every replacement imports it
again (and NumPy with it) before it can run a task.

    python benchmarks/replacement_cost.py [--crashes 80]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy  # noqa: F401  (the heavy import at the top is the point)

import corepool


def task(x: int) -> int:
    """Every odd input kills its worker."""
    if x % 2:
        os._exit(1)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crashes", type=int, default=80)
    args = parser.parse_args()
    corepool.map(abs, [1], workers=2)  # the pool exists and is warm
    started = time.monotonic()
    results = corepool.map(
        task, range(2 * args.crashes), workers=2, chunksize=1, on_error="return"
    )
    elapsed = time.monotonic() - started
    crashed = sum(isinstance(r, corepool.WorkerCrashed) for r in results)
    print(
        f"{crashed} crashes in {elapsed:.2f} s: "
        f"{1000 * elapsed / max(crashed, 1):.1f} ms per replacement"
    )


if __name__ == "__main__":
    main()
