"""Soak of ``corepool run``: a long batch with injected failures, killed three times.

    python benchmarks/soak_runner.py                   # 300,000 lines, 3 SIGKILLs
    python benchmarks/soak_runner.py --lines 30000     # a quick look

One input of N JSON integers through ``python -m corepool run soak_tasks.py:work
in.jsonl -o out.jsonl --workers 2 --timeout 2``, where ``work`` raises on some inputs,
hangs (until the timeout) on others, and kills its worker with ``os._exit`` on others,
and returns a checksum of its input otherwise. The runner is killed with SIGKILL when
its journal holds 20%, 45% and 70% of the lines, and run again each time with the same
command; the fourth run finishes. Then the final OUTPUT is checked row by row:

lost        input lines with no output row
duplicated  output rows beyond one for the same index
wrong       rows whose result or failure kind is not what the input calls for

all of which must be 0; and every task's executions are counted (each worker appends
its input to a log), to show how many ran again after the kills: at most what was
running at a kill, since finished tasks are in the journal whatever their order.
While each run lasts, the runner process (not its workers) is sampled every second:
RSS, open file descriptors and threads, reported as first / peak / last.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent

TASKS = '''
import os, time

HANG, CRASH, RAISE = 4999, 1999, 997


def work(x):
    with open(os.environ["SOAK_LOG"], "a") as log:
        log.write(f"{x}\\n")
    if x % HANG == 7:
        time.sleep(30)
    if x % CRASH == 5:
        os._exit(3)
    result = (x * 7919) % 1000003
    with open(os.environ["SOAK_LOG"], "a") as log:
        log.write(f"d{x}\\n")  # finished: its result is on its way to the runner
    if x % RAISE == 3:
        raise ValueError(f"bad {x}")
    return result
'''


def expected(x: int) -> tuple[bool, object]:
    """``(True, result)`` or ``(False, error kind)`` for input ``x``."""
    if x % 4999 == 7:
        return False, "timeout"
    if x % 1999 == 5:
        return False, "crash"
    if x % 997 == 3:
        return False, "exception"
    return True, (x * 7919) % 1000003


def _query(db: Path, sql: str) -> list[tuple[int, ...]]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def journal_count(db: Path) -> int:
    found = _query(db, "SELECT count(*) FROM tasks")
    return int(found[0][0]) if found else 0


def journal_inputs(db: Path) -> set[int]:
    """The inputs the journal holds (input x is on line x + 1)."""
    return {int(line) - 1 for (line,) in _query(db, "SELECT line FROM tasks")}


def read_log(log: Path, start: int) -> tuple[collections.Counter[int], set[int], int]:
    """Executions started and tasks finished, logged from byte ``start`` on; the end."""
    started: collections.Counter[int] = collections.Counter()
    finished: set[int] = set()
    if not log.exists():
        return started, finished, start
    with open(log, "rb") as f:
        f.seek(start)
        data = f.read()
    for word in data.split():
        if word.startswith(b"d"):
            finished.add(int(word[1:]))
        else:
            started[int(word)] += 1
    return started, finished, start + len(data)


class Sampler:
    """RSS (MB), file descriptors and threads of one process, sampled over time."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float, int, int]] = []
        self.started = time.monotonic()

    def sample(self) -> None:
        try:
            with self.process.oneshot():
                self.samples.append((time.monotonic() - self.started,
                                     self.process.memory_info().rss / 2**20,
                                     self.process.num_fds(), self.process.num_threads()))
        except psutil.Error:
            pass


def one_run(workdir: Path, command: list[str], env: dict[str, str],
            kill_at: int | None, log_start: int) -> dict[str, Any]:
    """Run the batch; SIGKILL it once its journal holds ``kill_at`` tasks."""
    db = workdir / "out.jsonl.journal.db"
    before = journal_count(db)
    held_before = journal_inputs(db)
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    killed_with = None
    next_sample = 0.0
    while proc.poll() is None:
        now = time.monotonic()
        if now >= next_sample:
            sampler.sample()
            next_sample = now + 1.0
        if kill_at is not None:
            count = journal_count(db)
            if count >= kill_at:
                proc.send_signal(signal.SIGKILL)
                killed_with = count
                break
        time.sleep(0.2)
    _, err = proc.communicate(timeout=60)
    samples = sampler.samples[1:] or sampler.samples or [(0.0, 0.0, 0, 0)]  # from 1 s on
    held = journal_inputs(db)
    started, finished, log_end = read_log(workdir / "executions.log", log_start)
    return {
        "log_end": log_end,
        # Finished in a worker during this run, yet not in the journal after it: what a
        # kill lost (a task finishing in the last moment before the kill counts too).
        "finished_lost": len(finished - held),
        "executions": sum(started.values()),
        "new_in_journal": len(held - held_before),
        "journal_before": before,
        "journal_after": journal_count(db),
        "killed_with": killed_with,
        "exit": proc.returncode,
        "seconds": time.monotonic() - sampler.started,
        "rss": (samples[0][1], max(s[1] for s in samples), samples[-1][1]),
        "fds": (samples[0][2], max(s[2] for s in samples), samples[-1][2]),
        "threads": (samples[0][3], max(s[3] for s in samples), samples[-1][3]),
        "rss_every_5s": [round(s[1]) for s in sampler.samples[1::5]],
        "summary": [line for line in err.splitlines() if "rows:" in line]
        if proc.returncode in (0, 1) or killed_with is not None else err.splitlines()[-8:],
    }


def check_output(path: Path, n: int) -> dict[str, int]:
    seen: collections.Counter[int] = collections.Counter()
    wrong = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            index = row["index"]
            seen[index] += 1
            ok, want = expected(index)
            if row["ok"] != ok or (ok and row["result"] != want) or (
                    not ok and row["error"]["kind"] != want):
                wrong += 1
    return {"lost": sum(1 for i in range(n) if i not in seen),
            "duplicated": sum(c - 1 for c in seen.values() if c > 1),
            "wrong": wrong, "rows": sum(seen.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--kills", type=float, nargs="*", default=[0.20, 0.45, 0.70],
                        help="journal fill (share of the lines) at each SIGKILL")
    parser.add_argument("--src", default=str(REPO / "src"),
                        help="the corepool sources to run (to compare two versions)")
    options = parser.parse_args()
    n = options.lines
    with tempfile.TemporaryDirectory(prefix="corepool-soak-") as tmp:
        workdir = Path(tmp)
        (workdir / "soak_tasks.py").write_text(TASKS)
        with open(workdir / "in.jsonl", "w") as f:
            f.writelines(f"{i}\n" for i in range(n))
        log = workdir / "executions.log"
        env = {**os.environ, "SOAK_LOG": str(log),
               "PYTHONPATH": os.pathsep.join([options.src, os.environ.get(
                   "PYTHONPATH", "")])}
        command = [sys.executable, "-m", "corepool", "run", "soak_tasks.py:work", "in.jsonl",
                   "-o", "out.jsonl", "--workers", "2", "--timeout", "2", "--no-progress"]
        runs = []
        began = time.monotonic()
        log_start = 0
        for share in [*options.kills, None]:
            runs.append(one_run(workdir, command, env,
                                None if share is None else int(share * n), log_start))
            log_start = int(runs[-1]["log_end"])
        total = time.monotonic() - began
        if not (workdir / "out.jsonl").exists():
            print(json.dumps(runs, indent=1, default=str))
            return 2
        result = check_output(workdir / "out.jsonl", n)
        executed = read_log(log, 0)[0]
    again = sum(c - 1 for c in executed.values() if c > 1)
    print(f"corepool run soak: {n:,} lines, {len(options.kills)} SIGKILLs, "
          f"{total:.0f} s in all; command: {' '.join(command[1:])}")
    print()
    print("| run | journal at start | journal at end | ended | seconds | executions | "
          "finished, not in journal | runner RSS MB (1 s / peak / last) | fds | threads |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for number, run in enumerate(runs, start=1):
        ended = f"SIGKILL at {run['killed_with']:,}" if run["killed_with"] is not None \
            else f"exit {run['exit']}"
        rss, fds, threads = run["rss"], run["fds"], run["threads"]
        print(f"| {number} | {run['journal_before']:,} | {run['journal_after']:,} | {ended} | "
              f"{run['seconds']:.0f} | {run['executions']:,} | {run['finished_lost']:,} | "
              f"{rss[0]:.0f} / {rss[1]:.0f} / {rss[2]:.0f} | "
              f"{fds[0]} / {fds[1]} / {fds[2]} | {threads[0]} / {threads[1]} / {threads[2]} |")
    print()
    print(f"rows {result['rows']:,} of {n:,}: lost {result['lost']}, duplicated "
          f"{result['duplicated']}, wrong {result['wrong']}")
    print(f"tasks run more than once: {again:,} extra executions of {len(executed):,} "
          f"tasks ({sum(executed.values()):,} executions in all; the kills, and each crash "
          "or timeout re-running the other tasks of its chunk)")
    print("runner RSS MB every 5 s:")
    for number, run in enumerate(runs, start=1):
        print(f"  run {number}: " + " ".join(map(str, run["rss_every_5s"])))
    for run in runs:
        for line in run["summary"]:
            print("  " + line)
    return 0 if result["lost"] == result["duplicated"] == result["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
