"""What failures cost: 1,000 tasks where 1 in 50 crashes, 1 in 50 hangs, 1 in 50 raises.

The same map runs without failures and with them, interleaved over several rounds
(so a slow spell of the shared machine hits both alike), with a 0.5 s timeout and
``on_error="return"``. The promise checked here: the map with failures returns all
1,000 positions, each failed one with its typed error, in less than twice the time of
the clean map plus the hangs' timeouts themselves (20 timeouts of 0.5 s shared by the
workers).

    python benchmarks/mixed_failures.py [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import corepool

TASKS = 1000
TIMEOUT = 0.5
TASK_SECONDS = 0.002


def clean(x: int) -> int:
    time.sleep(TASK_SECONDS)
    return 2 * x


def mixed(x: int) -> int:
    time.sleep(TASK_SECONDS)
    if x % 50 == 7:
        os._exit(3)
    if x % 50 == 23:
        time.sleep(3600)
    if x % 50 == 41:
        raise ValueError(x)
    return 2 * x


EXPECTED_ERROR = {7: corepool.WorkerCrashed, 23: corepool.TaskTimeout, 41: ValueError}


def check(results: list[object]) -> None:
    """Every position present, with the right value or the right typed error."""
    assert len(results) == TASKS
    for i, got in enumerate(results):
        want = EXPECTED_ERROR.get(i % 50)
        if want is None:
            assert got == 2 * i, (i, got)
        else:
            assert isinstance(got, want), (i, got)


def timed(fn: object, workers: int) -> float:
    started = time.perf_counter()
    results = corepool.map(
        fn,
        range(TASKS),
        workers=workers,
        timeout=TIMEOUT,  # type: ignore[arg-type]
        on_error="return",
    )
    elapsed = time.perf_counter() - started
    if fn is mixed:
        check(results)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    corepool.map(clean, range(10), workers=args.workers)  # start the default pool
    clean_times, mixed_times = [], []
    for _ in range(args.rounds):
        clean_times.append(timed(clean, args.workers))
        mixed_times.append(timed(mixed, args.workers))
    base = statistics.median(clean_times)
    hangs = TASKS // 50
    timeouts = hangs * TIMEOUT / args.workers
    budget = 2 * base + timeouts
    got = statistics.median(mixed_times)
    print(f"| clean map, median of {args.rounds} | {base:.2f} s |")
    print(f"| with 20 crashes, 20 hangs, 20 exceptions | {got:.2f} s |")
    print(
        f"| budget: 2 x clean + {hangs} x {TIMEOUT} s / {args.workers} workers | {budget:.2f} s |"
    )
    print(f"| within budget | {'yes' if got < budget else 'NO'} ({got / budget:.2f} of it) |")


if __name__ == "__main__":
    main()
