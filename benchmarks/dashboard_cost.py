"""What the live view costs a batch: ``corepool run`` with and without ``--dashboard``.

    python benchmarks/dashboard_cost.py                       # 200,000 lines, 7 rounds
    python benchmarks/dashboard_cost.py --lines 20000 --rounds 1          # smoke check
    python benchmarks/dashboard_cost.py --baseline-src /path/to/other/src  # + a third arm

Each round runs, in a shuffled order, fresh processes timed from outside on the same
input (one JSON integer per line, ``square(x) = x * x``, 2 workers, a fresh journal):

off    ``python -m corepool run bench_task.py:square in.jsonl -o out.jsonl --workers 2
       --no-progress``
live   the same with ``--dashboard``, and a client that fetches ``/api/view`` as often
       as an open page does (every POLL_SECONDS) while it runs.
base   (with ``--baseline-src``) ``off`` with another corepool source tree first on
       PYTHONPATH, e.g. the one before task timings were journalled.

The report gives each arm's median wall seconds and CPU seconds (the run and its
workers: user + system), and their ratios to ``off``. On a shared machine the CPU
seconds are the steadier measure.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from corepool.cli.htmlview import POLL_SECONDS

TASK = "def square(x):\n    return x * x\n"


def _poll(proc: subprocess.Popen[bytes], fetched: list[int]) -> None:
    """Read the URL the run prints, then fetch the view as a page does until it ends."""
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if "dashboard at " not in line:
        return
    url = line.rsplit(" ", 1)[1].strip() + "api/view"
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
            fetched[0] += 1
        except OSError:
            return  # the run ended between poll() and the fetch
        time.sleep(POLL_SECONDS)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(folder: Path, arm: str, env: dict[str, str]) -> tuple[float, float, int]:
    for name in os.listdir(folder):
        if name.startswith("out.jsonl"):
            os.remove(folder / name)
    command = [sys.executable, "-m", "corepool", "run", "bench_task.py:square", "in.jsonl",
               "-o", "out.jsonl", "--workers", "2", "--no-progress"]
    if arm == "live":
        command.append("--dashboard")
    fetched = [0]
    cpu = _cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    poller = threading.Thread(target=_poll, args=(proc, fetched))
    poller.start()
    code = proc.wait()
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu
    poller.join()
    assert proc.stderr is not None
    proc.stderr.close()
    if code != 0:
        raise SystemExit(f"{arm}: corepool run failed (exit {code})")
    return seconds, cpu, fetched[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline-src", default=None,
                        help="another corepool src/ directory for a third arm")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent.parent / "src")
    envs = {"off": here, "live": here}
    if args.baseline_src:
        envs["base"] = os.path.abspath(args.baseline_src)
    times: dict[str, list[float]] = {arm: [] for arm in envs}
    cpus: dict[str, list[float]] = {arm: [] for arm in envs}
    fetches: list[int] = []
    with tempfile.TemporaryDirectory(prefix="corepool-dashcost-") as tmp:
        folder = Path(tmp)
        (folder / "bench_task.py").write_text(TASK)
        (folder / "in.jsonl").write_text("".join(f"{i}\n" for i in range(args.lines)))
        for round_ in range(args.rounds):
            arms = list(envs)
            random.shuffle(arms)
            for arm in arms:
                env = dict(os.environ, PYTHONPATH=envs[arm])
                seconds, cpu, fetched = _once(folder, arm, env)
                times[arm].append(seconds)
                cpus[arm].append(cpu)
                if arm == "live":
                    fetches.append(fetched)
                print(f"round {round_ + 1} {arm:<4} {seconds:7.2f} s, CPU {cpu:6.2f} s"
                      + (f" ({fetched} fetches)" if arm == "live" else ""), flush=True)
    off, off_cpu = statistics.median(times["off"]), statistics.median(cpus["off"])
    print(f"\n{args.lines} lines, {args.rounds} rounds, medians:")
    for arm, values in times.items():
        median, cpu = statistics.median(values), statistics.median(cpus[arm])
        print(f"  {arm:<4} {median:7.2f} s  {args.lines / median:9.0f} rows/s  "
              f"x{median / off:.3f} of off;  CPU {cpu:6.2f} s  x{cpu / off_cpu:.3f}")
    print(f"  live view fetches per run: {fetches}")


if __name__ == "__main__":
    main()
