"""One version of corepool against another, on the measures a refactor must not slow.

    python benchmarks/versions.py 5d8ec54            # that commit against the work tree
    python benchmarks/versions.py 5d8ec54 HEAD --rounds 9
    python benchmarks/versions.py HEAD~1 --rounds 1 --lines 5000     # smoke check

Each version is a source tree: a git ref is exported with ``git archive`` into a
temporary directory (no checkout, the work tree is untouched) and byte-compiled there,
as an installed package is; ``.`` (the default second version) is this work tree's
``src/``. Every measurement runs in a fresh interpreter with ``PYTHONPATH`` on one
tree, and the rounds interleave the versions in a shuffled order (the machine is
shared; its speed drifts). Per round:

tiny        ``pool.map`` of 200,000 calls of ``x * x`` on a warm pool of 2 workers
            (the median of 5 in the same process)
first       time to the first result of ``pool.imap`` over tasks of 2 ms (median of
            30 jobs on one warm pool): the dispatch latency a user feels
start       ``corepool.Pool(2)`` until it has answered a first map (imports included)
run wall    ``python -m corepool run`` on ``--lines`` JSON integers, journal on, from
            outside (interpreter start, pool start and exit included)
run rate    the rows per second the runner itself reports for the same run (its
            throughput, start and exit left out)

The report gives each version's median and the ratio of the second to the first
(above 1: the second is slower, or for ``run rate`` faster).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TASK = "def double(x):\n    return 2 * x\n"

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import corepool

def square(x):
    return x * x

def two_ms(x):
    time.sleep(0.002)
    return x

if __name__ == "__main__":
    with corepool.Pool(2) as pool:
        pool.map(abs, [1, 2], chunksize=1)
        start = time.perf_counter() - t0
        pool.map(square, range(1000))
        tinies = []
        for _ in range(5):
            t = time.perf_counter()
            pool.map(square, range(200_000))
            tinies.append(time.perf_counter() - t)
        tiny = sorted(tinies)[2]
        firsts = []
        for _ in range(30):
            t = time.perf_counter()
            results = pool.imap(two_ms, range(50))
            next(results)
            firsts.append(time.perf_counter() - t)
            list(results)
    firsts.sort()
    print(json.dumps({"tiny": tiny, "first": firsts[len(firsts) // 2], "start": start}))
"""

RATE = re.compile(r"\(([\d.]+) tasks/s\)")


def export(ref: str, into: Path) -> Path:
    """The ``src/`` of ``ref`` (``.``: this work tree's), byte-compiled."""
    if ref == ".":
        src = ROOT / "src"
    else:
        into.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
        src = into / "src"
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(src)], check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )
    return src


def measure(src: Path, work: Path, lines: int) -> dict[str, float]:
    """One round on one version: the probe's figures and the runner's."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{work}"}
    env.pop("COREPOOL_BACKEND", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # use the compiled files, as installed
    probe = subprocess.run(
        [sys.executable, str(work / "probe.py")], env=env, cwd=work,
        capture_output=True, text=True, timeout=600, check=True,
    )
    got: dict[str, float] = json.loads(probe.stdout.strip().splitlines()[-1])
    out = work / "out.jsonl"
    for leftover in work.glob("out.jsonl*"):
        leftover.unlink()
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "corepool", "run", "bench_task:double", "in.jsonl",
         "-o", str(out), "--workers", "2", "--no-progress"],
        env=env, cwd=work, capture_output=True, text=True, timeout=600, check=True,
    )
    got["run wall"] = time.perf_counter() - started
    rate = RATE.search(run.stderr)
    if rate is None:
        raise RuntimeError(f"no rate in the runner's summary: {run.stderr[-500:]}")
    got["run rate"] = float(rate.group(1))
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="a git ref (the version before)")
    parser.add_argument("second", nargs="?", default=".", help="a git ref, or . (default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lines", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bench_task.py").write_text(TASK)
        (work / "probe.py").write_text(PROBE)
        (work / "in.jsonl").write_text("".join(f"{i}\n" for i in range(args.lines)))
        versions = {
            args.first: export(args.first, work / "first"),
            args.second: export(args.second, work / "second"),
        }
        if args.first == args.second:
            raise SystemExit("give two different versions")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
        for _ in range(args.rounds):
            for name in random.sample(list(versions), len(versions)):
                results[name].append(measure(versions[name], work, args.lines))
    report(results, args)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    first, second = results
    print(f"{args.rounds} rounds, interleaved; {args.lines} lines for the runner; "
          f"second / first (run rate: higher is faster)\n")
    print(f"| measure | {first} | {second} | ratio |")
    print("|---|---:|---:|---:|")
    units = {"tiny": ("s", 1), "first": ("ms", 1000), "start": ("ms", 1000),
             "run wall": ("s", 1), "run rate": ("rows/s", 1)}
    for measure_name, (unit, scale) in units.items():
        a = statistics.median(r[measure_name] for r in results[first])
        b = statistics.median(r[measure_name] for r in results[second])
        print(f"| {measure_name} | {a * scale:.4g} {unit} | {b * scale:.4g} {unit} "
              f"| {b / a:.2f} |")


if __name__ == "__main__":
    main()
