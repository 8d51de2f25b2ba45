"""The engine under failures, run as users run it: a script of their own in a fresh
directory, real worker processes, real crashes and hangs (issue 19, engine items).

Each test runs a small program with ``python program.py`` and reads what it printed
as JSON, so the program's functions live in its own ``__main__``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

SRC = str(Path(__file__).resolve().parent.parent / "src")


def run_program(tmp_path: Path, code: str, timeout: float = 100) -> Any:
    """Run ``code`` as ``program.py`` in ``tmp_path``; the JSON of its last stdout line."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_leaving_an_imap_early_costs_only_the_running_task(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import json, time, corepool

        def task(x):
            if x == 1:
                time.sleep(2)
            return x

        if __name__ == "__main__":
            pool = corepool.Pool(2)
            for value in pool.imap(task, range(4)):
                break
            started = time.monotonic()
            pool.close()
            pool.join()
            print(json.dumps({"join": time.monotonic() - started,
                              "workers": len(pool.stats().workers)}))
        """,
    )
    assert out["workers"] == 2  # no replacement was needed, let alone hundreds
    assert out["join"] < 3.5  # the running 2 s task, not more


def test_an_executor_map_that_timed_out_leaves_quickly(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import json, time, corepool

        if __name__ == "__main__":
            started = time.monotonic()
            with corepool.Executor(2) as ex:
                try:
                    list(ex.map(time.sleep, [2, 0, 0, 0, 2, 2], timeout=0.5))
                except TimeoutError:
                    pass
                workers = ex.stats
            print(json.dumps({"total": time.monotonic() - started,
                              "workers": len(workers().workers)}))
        """,
    )
    assert out["workers"] <= 2
    # The stdlib's own ProcessPoolExecutor needs about 4 s here.
    assert out["total"] < 4.5


def test_finished_tasks_of_a_crashed_chunk_never_run_again(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import json, os, corepool

        LOG = os.path.abspath("runs.log")

        def task(x):
            with open(LOG, "a") as f:
                f.write(f"{x}\\n")
            if x == 5:
                os._exit(3)
            return x * 10

        if __name__ == "__main__":
            results = corepool.map(task, range(8), workers=1, timeout=5.0, chunksize=8,
                                   on_error="return")
            runs = [int(line) for line in open(LOG).read().split()]
            print(json.dumps({"results": [r if isinstance(r, int) else type(r).__name__
                                          for r in results],
                              "runs": sorted(runs)}))
        """,
    )
    assert out["results"] == [0, 10, 20, 30, 40, "WorkerCrashed", 60, 70]
    assert out["runs"] == list(range(8))  # each input exactly once


def test_a_task_timeout_starts_when_the_task_does(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import ctypes, json, time, corepool

        def task(x):
            return x + 1

        def segfault(x):
            ctypes.string_at(0)

        if __name__ == "__main__":
            outcomes = []
            for _ in range(4):
                with corepool.Pool(1, task_timeout=0.5, initializer=time.sleep,
                                   initargs=(0.8,)) as pool:
                    try:
                        outcomes.append(pool.apply_async(task, (1,)).get(30))
                    except Exception as exc:
                        outcomes.append(type(exc).__name__)
                    try:
                        pool.apply_async(segfault, (1,)).get(30)
                    except Exception as exc:
                        outcomes.append(type(exc).__name__)
            print(json.dumps(outcomes))
        """,
    )
    assert out == [2, "WorkerCrashed"] * 4


@pytest.mark.linux_transport  # spawn (portable) imports the script in every worker
def test_replacement_workers_do_not_rerun_the_main_script(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import json, os, time
        import numpy  # a heavy import at the top, as real scripts have
        import corepool

        with open("top-level.log", "a") as f:  # one line per run of the top level
            f.write(f"{os.getpid()}\\n")

        def task(x):
            if x % 2:
                os._exit(1)
            return x

        if __name__ == "__main__":
            started = time.monotonic()
            results = corepool.map(task, range(40), workers=2, chunksize=1, on_error="return")
            elapsed = time.monotonic() - started
            runs = open("top-level.log").read().split()
            print(json.dumps({"runs": len(runs), "elapsed": elapsed,
                              "ok": sum(isinstance(r, int) for r in results)}))
        """,
    )
    assert out["ok"] == 20
    # The program itself, and the fork server that the replacements come from; not once
    # per replacement (20 of them).
    assert out["runs"] <= 2, out


def test_imap_goes_on_after_a_failed_task_as_multiprocessing_does(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import json, multiprocessing, corepool

        def task(x):
            if x == 3:
                raise ValueError(x)
            return x

        def drain(results):
            seen = []
            while True:
                try:
                    seen.append(next(results))
                except StopIteration:
                    return seen
                except ValueError as exc:
                    seen.append(f"ValueError({exc})")

        if __name__ == "__main__":
            out = {}
            for name, pool in (("stdlib", multiprocessing.Pool(2)), ("corepool", corepool.Pool(2))):
                with pool:
                    out[name] = [drain(pool.imap(task, range(10))),
                                 sorted(map(str, drain(pool.imap_unordered(task, range(10)))))]
            with corepool.Pool(2) as pool:
                out["on_error"] = sorted(
                    map(str, pool.imap_unordered(task, range(10), on_error="skip")))
            print(json.dumps(out))
        """,
    )
    assert out["corepool"] == out["stdlib"]
    assert out["corepool"][0] == [0, 1, 2, "ValueError(3)", 4, 5, 6, 7, 8, 9]
    assert out["on_error"] == ["0", "1", "2", "4", "5", "6", "7", "8", "9"]


def test_a_small_call_is_not_starved_by_a_stream_with_failures(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import itertools, json, os, statistics, threading, time, corepool

        def task(x):
            if x % 500 == 499:
                time.sleep(60)  # hangs: stopped by the stream's 0.5 s timeout
            if x % 700 == 350:
                os._exit(1)
            return x

        if __name__ == "__main__":
            corepool.map(abs, [-1], workers=2)
            stop = threading.Event()
            seen = []

            def stream():
                results = corepool.imap(task, itertools.count(), workers=2, timeout=0.5,
                                        on_error="return")
                for value in results:
                    seen.append(value)
                    if stop.is_set():
                        break

            thread = threading.Thread(target=stream)
            thread.start()
            while len(seen) < 2000:
                time.sleep(0.05)
            latencies = []
            for _ in range(12):
                started = time.monotonic()
                assert corepool.map(abs, [-1], workers=2, timeout=0.5) == [1]
                latencies.append(time.monotonic() - started)
                time.sleep(0.1)
            stop.set()
            thread.join()
            print(json.dumps({"max": max(latencies), "median": statistics.median(latencies),
                              "stream": len(seen)}))
        """,
    )
    # Alone, such a call takes about a millisecond; behind the stream it may wait for a
    # worker to finish its chunk (or its hung task's 0.5 s), never for the stream.
    assert out["median"] < 0.8, out
    assert out["max"] < 2.5, out


def test_a_map_that_failed_after_its_input_was_read_stops_its_feeder(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import json, os, threading, time, corepool

        def task(x):
            if x == 0:
                os._exit(1)  # fails at once; the other tasks take a second
            time.sleep(1)
            return x

        def feeders():
            return sum(t.name == "corepool-feeder" for t in threading.enumerate())

        if __name__ == "__main__":
            with corepool.Pool(2) as pool:
                # Eleven inputs in chunks of two: the sixth chunk is short, so the input
                # is known to be over while the window (six chunks) is full.
                try:
                    pool.map(task, range(11), chunksize=2)
                except corepool.WorkerCrashed:
                    pass
                deadline = time.monotonic() + 5
                while feeders() and time.monotonic() < deadline:
                    time.sleep(0.01)
                print(json.dumps({"feeders": feeders()}))
        """,
    )
    assert out["feeders"] == 0


def test_results_of_a_chunk_larger_than_the_result_log_survive_a_crash(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
        import json, os, corepool
        from multiprocessing.sharedctypes import RawArray

        N = 30_000  # results of ~100 bytes: about three times what a result log holds

        def remember(array):
            global runs
            runs = array

        def task(x):
            runs[x] += 1
            if x == N - 1:
                os._exit(1)
            return "x" * 90 + str(x)

        if __name__ == "__main__":
            counts = RawArray("i", N)
            with corepool.Pool(1, task_timeout=60, initializer=remember,
                               initargs=(counts,)) as pool:
                results = list(pool.imap(task, range(N), chunksize=N, on_error="return"))
            print(json.dumps({
                "right": sum(r == "x" * 90 + str(i) for i, r in enumerate(results[:-1])),
                "last": type(results[-1]).__name__,
                "ran_twice": sum(c > 1 for c in counts[: N - 1]),
            }))
        """,
    )
    assert out == {"right": 29_999, "last": "WorkerCrashed", "ran_twice": 0}
