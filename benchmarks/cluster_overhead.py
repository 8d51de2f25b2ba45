"""What a task costs on the cluster backends, and what chunking saves there.

    python benchmarks/cluster_overhead.py                # full run (a few minutes)
    python benchmarks/cluster_overhead.py --quick        # smoke check, small sizes
    python benchmarks/cluster_overhead.py --rounds 7

Two measurements, each on a local 2-worker cluster (Dask: a ``LocalCluster`` of two
single-threaded worker processes; Ray: ``ray.init(num_cpus=2)``; process: corepool's
own 2 workers), pools started and warmed outside the timed region:

chunking      100,000 calls of ``x*x`` through ``corepool.map(..., backend="dask")`` on
              the cluster, against plain ``Client.map`` of the same function over the same
              list (one Dask task per input, no chunking), then ``Client.gather``.
per task      the cost of one task when it travels alone (``chunksize=1``; 300 tasks of
              ``x*x``), and per task of 100,000 with corepool's chunking, for each of
              process / dask / ray.

Rounds are interleaved: each round runs every contender once, in a shuffled order, and
the table gives medians over the rounds, so a slow spell of this shared machine hits
every contender of a round alike and the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
)

from workloads import square  # noqa: E402

import corepool  # noqa: E402

WORKERS = 2


def _timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 round, small sizes")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    many = 10_000 if args.quick else 100_000
    alone = 50 if args.quick else 300

    import ray
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    pools = {
        "process": corepool.Pool(WORKERS),
        "dask": corepool.Pool(WORKERS, backend="dask", client=client),
        "ray": corepool.Pool(WORKERS, backend="ray"),
    }
    inputs = list(range(many))
    for pool in pools.values():  # warm: workers started, function imported
        pool.map(square, range(100))
        pool.map(square, range(20), chunksize=1)
    client.gather(client.map(square, range(100)))

    def plain_dask() -> object:
        return client.gather(client.map(square, inputs, pure=False))

    contenders: dict[str, Callable[[], object]] = {"Client.map (no chunking)": plain_dask}
    for name, pool in pools.items():
        contenders[f"{name}: {many:,} tasks, chunked"] = lambda p=pool: p.map(square, inputs)
        contenders[f"{name}: {alone} tasks, chunksize=1"] = lambda p=pool: p.map(
            square, range(alone), chunksize=1
        )
    times: dict[str, list[float]] = {name: [] for name in contenders}
    seed = random.randrange(1 << 20)
    shuffle = random.Random(seed)
    began = time.monotonic()
    for number in range(rounds):
        order = list(contenders)
        shuffle.shuffle(order)
        for name in order:
            times[name].append(_timed(contenders[name]))
        print(f"round {number + 1}/{rounds} done", file=sys.stderr)
    total = time.monotonic() - began

    for pool in pools.values():
        pool.terminate()
    client.close()
    cluster.close()
    ray.shutdown()

    command = "python benchmarks/cluster_overhead.py" + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    )
    print(f"Command: `{command}`; {rounds} interleaved rounds (seed {seed}), {total:.0f} s.")
    print(f"2 workers each; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}.\n")
    plain = _median(times["Client.map (no chunking)"])
    chunked = _median(times[f"dask: {many:,} tasks, chunked"])
    print(f"### {many:,} tiny tasks on a 2-worker Dask LocalCluster\n")
    print("| how | median (s) | min-max (s) | per task (µs) | speedup |")
    print("|---|---:|---:|---:|---:|")
    for name, label in (
        ("Client.map (no chunking)", "`Client.map` + `gather`, one Dask task per input"),
        (f"dask: {many:,} tasks, chunked", '`corepool.map(..., backend="dask")`'),
    ):
        values = times[name]
        median = _median(values)
        print(
            f"| {label} | {median:.3f} | {min(values):.3f}-{max(values):.3f} | "
            f"{median / many * 1e6:.1f} | {plain / median:.1f}x |"
        )
    print("\n### Per-task overhead, tasks of `x*x`\n")
    print(
        "| backend | alone (chunksize=1), µs/task | ratio vs process | "
        f"chunked ({many:,} tasks), µs/task | ratio vs process |"
    )
    print("|---|---:|---:|---:|---:|")
    base_alone = _median(times[f"process: {alone} tasks, chunksize=1"]) / alone
    base_many = _median(times[f"process: {many:,} tasks, chunked"]) / many
    for name in pools:
        per_alone = _median(times[f"{name}: {alone} tasks, chunksize=1"]) / alone
        per_many = _median(times[f"{name}: {many:,} tasks, chunked"]) / many
        print(
            f"| {name} | {per_alone * 1e6:,.0f} | {per_alone / base_alone:.1f} | "
            f"{per_many * 1e6:,.2f} | {per_many / base_many:.1f} |"
        )
    print(f"\nchunking speedup over plain Client.map: {plain / chunked:.1f}x")


if __name__ == "__main__":
    main()
