"""What watching costs: ``corepool run`` with and without ``--dashboard``, the runner's
per-task timing, and a ``Pool.map`` with and without :func:`corepool.watch`.

    python benchmarks/dashboard_cost.py                       # 200,000 tasks, 7 rounds
    python benchmarks/dashboard_cost.py --lines 20000 --rounds 1          # smoke check
    python benchmarks/dashboard_cost.py --baseline-src /path/to/other/src  # + a "base" arm

Each round runs every arm once, in a shuffled order, as a fresh process timed from
outside (wall seconds, and CPU seconds of it and its workers: user + system), on the
same tiny task (``square(x) = x * x``) and 2 workers:

off        ``corepool run bench_task.py:square in.jsonl -o out.jsonl --workers 2
           --no-progress`` (one JSON integer per line, a fresh journal)
live       the same with ``--dashboard``, and a client that fetches ``/api/view`` as
           often as an open page does (every POLL_SECONDS) while it runs
untimed    ``off`` on a copy of this source tree whose runner does not read the clock
           around each task (``call_to_json`` returns a duration of 0): what the two
           clock reads per task cost
notiming   ``off`` on a copy whose runner journals no duration at all (no clock read,
           NULL in the column). The task wrapper stays: since the workers write each
           result as JSON, it is no longer the timing's alone
base       (with ``--baseline-src``) ``off`` on another source tree
map        ``Pool(2).map(square, range(N))`` in a script
map-watch  the same with ``corepool.watch(pool)`` on, and a client polling its page

The report gives each arm's median wall and CPU seconds and their ratios to ``off``
(the runner arms) or to ``map`` (the library arm). On a shared machine the CPU
seconds are the steadier measure; interleaving spreads the drift over every arm.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from corepool._watch.html import POLL_SECONDS

TASK = "def square(x):\n    return x * x\n"
MAP_SCRIPT = '''
import sys, threading, time, urllib.request
import corepool
from bench_task import square

if __name__ == "__main__":
    n, watched = int(sys.argv[1]), sys.argv[2] == "watch"
    with corepool.Pool(2) as pool:
        page = corepool.watch(pool) if watched else None
        if page is not None:
            print(page.url, file=sys.stderr, flush=True)
        results = pool.map(square, range(n))
        assert results[-1] == (n - 1) ** 2
        if page is not None:
            page.close()
'''
SRC = Path(__file__).resolve().parent.parent / "src"


def _poll(proc: subprocess.Popen[bytes], fetched: list[int]) -> None:
    """Read the URL the process prints, then fetch the view as a page does until it ends."""
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"http://\S+", line)
    if found is None:
        return
    url = found.group(0)
    url = url.replace("/?", "/api/view?") if "?" in url else url + "api/view"
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
            fetched[0] += 1
        except OSError:
            return  # the process ended between poll() and the fetch
        time.sleep(POLL_SECONDS)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command(arm: str, lines: int) -> list[str]:
    if arm.startswith("map"):
        return [sys.executable, "bench_map.py", str(lines),
                "watch" if arm == "map-watch" else "off"]
    command = [sys.executable, "-m", "corepool", "run", "bench_task.py:square", "in.jsonl",
               "-o", "out.jsonl", "--workers", "2", "--no-progress"]
    return [*command, "--dashboard"] if arm == "live" else command


def _once(folder: Path, arm: str, lines: int, src: str) -> tuple[float, float, int]:
    for name in os.listdir(folder):
        if name.startswith("out.jsonl"):
            os.remove(folder / name)
    env = dict(os.environ, PYTHONPATH=src)
    fetched = [0]
    cpu = _cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(_command(arm, lines), cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    poller = threading.Thread(target=_poll, args=(proc, fetched))
    poller.start()
    code = proc.wait()
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu
    poller.join()
    assert proc.stderr is not None
    proc.stderr.close()
    if code != 0:
        raise SystemExit(f"{arm}: the run failed (exit {code})")
    return seconds, cpu, fetched[0]


def _patched_copy(folder: Path, name: str, patches: dict[str, list[tuple[str, str]]]) -> str:
    """This source tree, copied with some texts replaced (each must be found)."""
    copy = folder / name
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for module, replacements in patches.items():
        path = copy / "corepool" / "cli" / module
        text = path.read_text()
        for old, new in replacements:
            assert old in text, f"{module}: {old!r} not found"
            text = text.replace(old, new)
        path.write_text(text)
    return str(copy)


def _untimed_copy(folder: Path) -> str:
    """A runner whose tasks still return (payload, duration), with no clock read."""
    return _patched_copy(folder, "untimed-src", {"jsonl.py": [
        ("    start = clock()\n    result = fn(value)\n"
         "    micros = (clock() - start) // 1000\n",
         "    result = fn(value)\n    micros = 0\n")]})


def _notiming_copy(folder: Path) -> str:
    """A runner that journals no durations: no clock read, and NULL in the column."""
    return _patched_copy(folder, "notiming-src", {"jsonl.py": [
        ("    start = clock()\n    result = fn(value)\n"
         "    micros = (clock() - start) // 1000\n",
         "    result = fn(value)\n    micros = None\n")]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline-src", default=None,
                        help="another corepool src/ directory for a base arm")
    parser.add_argument("--arms", default="off,live,untimed,notiming,map,map-watch",
                        help="comma-separated arms to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corepool-dashcost-") as tmp:
        folder = Path(tmp)
        (folder / "bench_task.py").write_text(TASK)
        (folder / "bench_map.py").write_text(MAP_SCRIPT)
        (folder / "in.jsonl").write_text("".join(f"{i}\n" for i in range(args.lines)))
        srcs = {arm: str(SRC) for arm in args.arms.split(",")}
        if "untimed" in srcs:
            srcs["untimed"] = _untimed_copy(folder)
        if "notiming" in srcs:
            srcs["notiming"] = _notiming_copy(folder)
        if args.baseline_src:
            srcs["base"] = os.path.abspath(args.baseline_src)
        times: dict[str, list[float]] = {arm: [] for arm in srcs}
        cpus: dict[str, list[float]] = {arm: [] for arm in srcs}
        fetches: dict[str, list[int]] = {arm: [] for arm in srcs}
        for round_ in range(args.rounds):
            arms = list(srcs)
            random.shuffle(arms)
            for arm in arms:
                seconds, cpu, fetched = _once(folder, arm, args.lines, srcs[arm])
                times[arm].append(seconds)
                cpus[arm].append(cpu)
                fetches[arm].append(fetched)
                print(f"round {round_ + 1} {arm:<9} {seconds:7.2f} s, CPU {cpu:6.2f} s"
                      + (f" ({fetched} fetches)" if fetched else ""), flush=True)
    print(f"\n{args.lines} tasks, {args.rounds} rounds, medians:")
    for arm in srcs:
        reference = "map" if arm.startswith("map") and "map" in srcs else "off"
        if reference not in srcs:
            reference = arm
        wall, cpu = statistics.median(times[arm]), statistics.median(cpus[arm])
        ref_wall = statistics.median(times[reference])
        ref_cpu = statistics.median(cpus[reference])
        print(f"  {arm:<9} {wall:7.2f} s  x{wall / ref_wall:.3f} of {reference:<4} "
              f"CPU {cpu:6.2f} s  x{cpu / ref_cpu:.3f}"
              + (f"  fetches {fetches[arm]}" if any(fetches[arm]) else ""))


if __name__ == "__main__":
    main()
