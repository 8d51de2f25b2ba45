"""A soak: hundreds of thousands of tasks with injected failures through one pool.

One ``corepool.Pool`` lives for the whole run. A stream thread keeps ``imap`` and
``imap_unordered`` streams going (``on_error="return"``, no timeout: the fast path),
while the main thread interleaves ``map`` calls and batches of single calls
(``apply_async(..., timeout=...)``, tracked, and ``submit``, not). Each task's
fate is fixed by its id: most return ``3 * id + 1``; a few call ``os._exit``, segfault
(``ctypes.string_at(0)``), raise ``ValueError``, or (only where a timeout stops them)
sleep for an hour.

Every task id is checked: its outcome came back exactly once (none *lost*, none
*duplicated*), and it is the right one (*wrong*: another value, or another error type
than ``WorkerCrashed`` / ``TaskTimeout`` / ``ValueError`` as injected). A shared array
counts how often each task ran: a task that finished is never run again when its job
has a timeout (*re-run, tracked*: must be 0); without one, the tasks of a chunk whose
worker died run again on their own (*re-run, fast path*: by design, reported). A
sampler records the parent's memory, open descriptors and threads as it goes.

    python benchmarks/soak_pool.py [--tasks 200000] [--workers 2] [--timeout 0.3]

Exit status 1 if anything was lost, duplicated, wrong or re-run on the tracked path.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import threading
import time
from collections import Counter
from multiprocessing.sharedctypes import RawArray
from typing import Any

import corepool
from corepool.errors import TaskTimeout, WorkerCrashed

# Per 100,000 tasks: how many crash, segfault, hang (only where a timeout applies), raise.
RATES = {"exit": 40, "segfault": 20, "hang": 300, "raise": 400}
EXPECTED_ERROR = {
    "exit": WorkerCrashed,
    "segfault": WorkerCrashed,
    "hang": TaskTimeout,
    "raise": ValueError,
}

_runs: Any = None  # the shared counter of runs per task id, in each worker


def fate(task_id: int, can_hang: bool) -> str:
    """What task ``task_id`` does: "ok", or the failure injected into it."""
    h = (task_id * 2654435761) % 100_000
    for kind, rate in RATES.items():
        if h < rate:
            return "ok" if kind == "hang" and not can_hang else kind
        h -= rate
    return "ok"


def remember(runs: Any) -> None:
    """Worker initializer: keep the shared run counter."""
    global _runs
    _runs = runs


def work(task_id: int, can_hang: bool = False) -> int:
    """One task of the soak; its fate comes from its id."""
    _runs[task_id] += 1
    kind = fate(task_id, can_hang)
    if kind == "exit":
        os._exit(3)
    if kind == "segfault":
        ctypes.string_at(0)
    if kind == "hang":
        time.sleep(3600)
    if kind == "raise":
        raise ValueError(task_id)
    if task_id % 4 == 0:
        time.sleep(0.001 * (task_id % 7))  # one in four takes a few ms, the rest are tiny
    return 3 * task_id + 1


def task_index(error: BaseException) -> int | None:
    """The task index corepool noted on ``error`` ("corepool: task N, input ...")."""
    for note in getattr(error, "__notes__", ()):
        if note.startswith("corepool: task "):
            return int(note.split()[2].rstrip(","))
    return None


class Ledger:
    """What came back for each task id, and whether it was right.

    Preallocated byte arrays, so that the parent's memory measures the pool, not this.
    """

    UNTRACKED, TRACKED = 1, 2

    def __init__(self, tasks: int) -> None:
        self.lock = threading.Lock()
        self.issued = bytearray(tasks)  # 0: not issued (or dropped), else UNTRACKED/TRACKED
        self.seen = bytearray(tasks)  # results received, up to 255
        self.wrong: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.done = 0

    def fate(self, task_id: int) -> str:
        return fate(task_id, self.issued[task_id] == self.TRACKED)

    def issue(self, ids: range, can_hang: bool) -> None:
        mark = self.TRACKED if can_hang else self.UNTRACKED
        with self.lock:
            self.issued[ids.start : ids.stop] = bytes([mark]) * len(ids)

    def drop(self, task_id: int) -> None:
        with self.lock:
            self.issued[task_id] = 0

    def record(self, task_id: int, outcome: Any) -> None:
        with self.lock:
            self.seen[task_id] = min(255, self.seen[task_id] + 1)
            self.done += 1
            kind = self.fate(task_id)
            self.outcomes[kind] += 1
            if kind == "ok":
                right = outcome == 3 * task_id + 1
            else:
                right = isinstance(outcome, EXPECTED_ERROR[kind])
            if not right:
                self.wrong.append(f"task {task_id} ({kind}): {outcome!r}"[:200])

    def record_unordered(self, ids: range, results: list[Any]) -> None:
        for value in results:
            if isinstance(value, BaseException):
                index = task_index(value)
                task_id = ids[index] if index is not None else -1
            else:
                task_id = (value - 1) // 3
            if task_id in ids:
                self.record(task_id, value)
            else:
                with self.lock:
                    self.wrong.append(f"unattributable result {value!r}"[:200])


class Sampler(threading.Thread):
    """The parent's resident memory, descriptors and threads, every few seconds."""

    def __init__(self, ledger: Ledger, every: float) -> None:
        super().__init__(daemon=True)
        self.ledger = ledger
        self.every = every
        self.rows: list[tuple[float, int, float, int, int]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def sample(self) -> None:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        fds = len(os.listdir("/proc/self/fd"))
        threads = len(os.listdir("/proc/self/task"))
        done = self.ledger.done
        self.rows.append((time.monotonic() - self.started, done, rss, fds, threads))

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()


def stream_loop(pool: corepool.Pool, ledger: Ledger, ids: Any, stop: threading.Event) -> None:
    """Keep imap / imap_unordered streams going until ``stop``."""
    ordered = True
    while not stop.is_set():
        block = ids(5000)
        if block is None:
            return
        ledger.issue(block, can_hang=False)
        if ordered:
            results = pool.imap(work, block, on_error="return")
            for task_id, value in zip(block, results, strict=False):
                ledger.record(task_id, value)
        else:
            results = pool.imap_unordered(work, block, on_error="return")
            ledger.record_unordered(block, list(results))
        ordered = not ordered


def main_loop(
    pool: corepool.Pool, ledger: Ledger, ids: Any, timeout: float, waits: list[float]
) -> None:
    """Interleave maps and batches of single calls until the ids run out; ``waits``
    gets how long each map and each batch of calls took, next to the streams."""
    turn = 0
    began = time.monotonic()
    while True:
        if turn:
            waits.append(time.monotonic() - began)
        began = time.monotonic()
        turn += 1
        block = ids(60 if turn % 2 else 120)
        if block is None:
            return
        if turn % 2:
            ledger.issue(block, can_hang=False)
            try:
                values = pool.map(work, block)
            except Exception as exc:  # the first failure in order, as map promises
                index = task_index(exc)
                first = next(i for i in block if ledger.fate(i) != "ok")
                if index is None or block[index] != first:
                    ledger.wrong.append(f"map raised for task {index}, first failure is {first}")
                ledger.record(first, exc)
                for i in block:  # a map that raised drops its other results, by design
                    if i != first:
                        ledger.drop(i)
            else:
                for task_id, value in zip(block, values, strict=True):
                    ledger.record(task_id, value)
            continue
        tracked = range(block.start, block.start + len(block) // 2)
        fast = range(tracked.stop, block.stop)
        ledger.issue(tracked, can_hang=True)
        ledger.issue(fast, can_hang=False)
        calls = [(i, pool.apply_async(work, (i, True), timeout=timeout)) for i in tracked]
        futures = [(i, pool.submit(work, i)) for i in fast]
        for task_id, result in calls:
            try:
                ledger.record(task_id, result.get(120))
            except Exception as exc:
                ledger.record(task_id, exc)
        for task_id, future in futures:
            error = future.exception(120)
            ledger.record(task_id, future.result() if error is None else error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=0.3)
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    runs = RawArray("i", args.tasks)
    ledger = Ledger(args.tasks)
    next_id = 0
    id_lock = threading.Lock()

    def ids(count: int) -> range | None:
        nonlocal next_id
        with id_lock:
            if next_id >= args.tasks:
                return None
            block = range(next_id, min(args.tasks, next_id + count))
            next_id = block.stop
            return block

    sampler = Sampler(ledger, args.sample_every)
    waits: list[float] = []
    started = time.monotonic()
    with corepool.Pool(args.workers, initializer=remember, initargs=(runs,)) as pool:
        sampler.sample()
        sampler.start()
        stop = threading.Event()
        streams = threading.Thread(target=stream_loop, args=(pool, ledger, ids, stop))
        streams.start()
        try:
            main_loop(pool, ledger, ids, args.timeout, waits)
        finally:
            stop.set()
            streams.join()
        stats = pool.stats()
    sampler.stop.set()
    sampler.sample()
    elapsed = time.monotonic() - started

    lost = duplicated = rerun_tracked = rerun_fast = issued = 0
    for i in range(args.tasks):
        mark = ledger.issued[i]
        if not mark:
            continue
        issued += 1
        lost += ledger.seen[i] == 0
        duplicated += ledger.seen[i] > 1
        if runs[i] > 1 and ledger.fate(i) == "ok":
            if mark == ledger.TRACKED:
                rerun_tracked += 1
            else:
                rerun_fast += 1
    summary = {
        "tasks_run": next_id,
        "tasks_checked": issued,
        "seconds": round(elapsed, 1),
        "outcomes": dict(ledger.outcomes),
        "lost": lost,
        "duplicated": duplicated,
        "wrong": len(ledger.wrong),
        "rerun_tracked": rerun_tracked,
        "rerun_fast_path": rerun_fast,
        "worker_restarts": stats.restarts,
        "map_or_batch_seconds_median": round(statistics.median(waits), 3),
        "map_or_batch_seconds_max": round(max(waits), 3),
    }
    print(json.dumps(summary, indent=1))
    for line in ledger.wrong[:20]:
        print("WRONG:", line)
    print("\n| minute | tasks done | RSS (MiB) | open fds | threads |")
    print("|---:|---:|---:|---:|---:|")
    shown = sampler.rows[:: max(1, len(sampler.rows) // 12)] + sampler.rows[-1:]
    for t, done, rss, fds, threads in shown:
        print(f"| {t / 60:.1f} | {done:,} | {rss:.1f} | {fds} | {threads} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**summary, "samples": sampler.rows}, f)
    failed = lost or duplicated or ledger.wrong or rerun_tracked
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
