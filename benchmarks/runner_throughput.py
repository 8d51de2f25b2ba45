"""``corepool run`` (journal on) against ``corepool.map`` on the same function.

    python benchmarks/runner_throughput.py                  # 200,000 lines, 5 rounds
    python benchmarks/runner_throughput.py --lines 20000 --rounds 1     # smoke check
    python benchmarks/runner_throughput.py --rss-lines 1000000          # + peak RSS

Both sides do the whole job a user would run, each in a fresh process timed from
outside (interpreter start included), on the same input file of one JSON integer per
line and the same trivial function (``x * x``), with 2 workers:

runner   ``python -m corepool run bench_task.py:square in.jsonl -o out.jsonl
         --workers 2 --no-progress``, a fresh journal every round (nothing reused).
map      a script that reads the same file into a list (``json.loads`` per line),
         calls ``corepool.map(square, values, workers=2)`` and writes the same output
         rows (``{"index": i, "ok": true, "result": r}``): the same job without a
         journal, resume, or error rows, in one process.

A first untimed run of each side fills one bytecode cache (``PYTHONPYCACHEPREFIX``)
that both read afterwards, as an installed package would. Rounds interleave the two in
a shuffled order (the machine is shared and its speed drifts); the report gives the
median seconds of each, rows per second, and the ratio
of the runner's throughput to map's. ``--rss-lines N`` also runs the runner once on N
lines and reports its peak RSS (VmHWM of the runner process alone, which runs the
command in-process; its workers are not counted), the bounded-memory check of issue 5.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASK = "def square(x):\n    return x * x\n"

MAP_SCRIPT = """
import json, sys
import corepool
from bench_task import square

if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        values = [json.loads(line) for line in f if line.strip()]
    results = corepool.map(square, values, workers=2)
    with open(sys.argv[2], "w") as out:
        out.writelines(
            json.dumps({"index": i, "ok": True, "result": r}) + "\\n"
            for i, r in enumerate(results)
        )
"""

# The runner in-process, then its peak RSS: VmHWM of this process's memory (not
# ru_maxrss, which Linux carries over from the parent across exec).
RSS_SCRIPT = """
import re, sys
from corepool.cli.main import main

if __name__ == "__main__":
    code = main(sys.argv[2:])
    with open("/proc/self/status") as status:
        peak = re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)
    with open(sys.argv[1], "w") as f:
        f.write(peak)
    sys.exit(code)
"""


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, str(work), env.get("PYTHONPATH", "")])
    env.pop("COREPOOL_BACKEND", None)
    # Both sides read their modules' bytecode from one cache, filled by a first untimed
    # round, as an installed package does (not compiled again at every start).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def _write_input(path: Path, lines: int) -> None:
    with open(path, "w") as f:
        f.writelines(f"{i}\n" for i in range(lines))


def _clean(work: Path) -> None:
    for name in os.listdir(work):
        if name.startswith("out"):
            os.remove(work / name)


def _time(command: list[str], work: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=work, env=_env(work), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def runner_command() -> list[str]:
    """The runner side, as run from the work directory."""
    return [sys.executable, "-m", "corepool", "run", "bench_task.py:square", "in.jsonl",
            "-o", "out.jsonl", "--workers", "2", "--no-progress"]


def _check(work: Path, lines: int) -> None:
    with open(work / "out.jsonl", "rb") as f:
        count = sum(1 for _ in f)
    assert count == lines, f"expected {lines} output rows, got {count}"


def measure(lines: int, rounds: int, work: Path) -> dict[str, list[float]]:
    """Seconds per round for each side."""
    (work / "bench_task.py").write_text(TASK)
    (work / "map_script.py").write_text(MAP_SCRIPT)
    _write_input(work / "in.jsonl", lines)
    sides = {
        "runner": runner_command(),
        "map": [sys.executable, "map_script.py", "in.jsonl", "out.jsonl"],
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for command in sides.values():  # untimed: fills the bytecode cache
        _clean(work)
        _time(command, work)
    for _ in range(rounds):
        order = list(sides)
        random.shuffle(order)
        for name in order:
            _clean(work)
            times[name].append(_time(sides[name], work))
            _check(work, lines)
    return times


def peak_rss(lines: int, work: Path) -> tuple[int, float]:
    """The runner's own peak RSS in KiB, and seconds, on ``lines`` lines."""
    (work / "bench_task.py").write_text(TASK)
    (work / "rss_script.py").write_text(RSS_SCRIPT)
    _write_input(work / "big.jsonl", lines)
    _clean(work)
    started = time.perf_counter()
    subprocess.run([sys.executable, "rss_script.py", "out.rss", "run", "bench_task.py:square",
                    "big.jsonl", "-o", "out.jsonl", "--workers", "2", "--no-progress"],
                   cwd=work, env=_env(work), check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    _check(work, lines)
    return int((work / "out.rss").read_text()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-lines", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corepool-bench-") as tmp:
        work = Path(tmp)
        times = measure(args.lines, args.rounds, work)
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"{args.lines} lines, {args.rounds} rounds, {os.cpu_count()} CPUs, "
              f"Python {sys.version.split()[0]}")
        print("| side | median s | rows/s | every round (s) |")
        print("|---|---|---|---|")
        for name, values in times.items():
            print(f"| {name} | {medians[name]:.2f} | {args.lines / medians[name]:,.0f} | "
                  + ", ".join(f"{v:.2f}" for v in values) + " |")
        print(f"throughput ratio runner / map: {medians['map'] / medians['runner']:.2f}")
        if args.rss_lines:
            rss, seconds = peak_rss(args.rss_lines, work)
            print(f"runner on {args.rss_lines} lines: {seconds:.1f} s, peak RSS "
                  f"{rss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
