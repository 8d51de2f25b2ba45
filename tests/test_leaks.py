"""Nothing left behind: no shared-memory entries, semaphores or resource_tracker
warnings after crashes, timeouts and terminate; no memory growth over many tasks."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import corepool
import tasks

# Names multiprocessing gives what it puts in /dev/shm: semaphores, SharedMemory, heaps.
OURS = ("sem.mp-", "psm_", "pym-", "mp-")

SCENARIO = textwrap.dedent(
    """
    import corepool, tasks
    if __name__ == "__main__":
        corepool.map(tasks.crash_on, range(8), workers=2, on_error="return")
        corepool.map(tasks.hang_on, range(8), workers=2, timeout=0.3, on_error="return")
        ctx = corepool.get_context()
        lock, value = ctx.Lock(), ctx.Value("i", 0)
        with corepool.Pool(2) as pool:
            pool.apply_async(tasks.hang_on, (3,))
            pool.map(tasks.square, range(100))
        ex = corepool.Executor(2)
        ex.submit(tasks.square, 3)
        ex.shutdown(wait=True, cancel_futures=True)
        print("done")
    """
)


def _shm_entries() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith(OURS)}
    except FileNotFoundError:
        return set()


@pytest.mark.timeout(120)
def test_crashes_timeouts_and_terminate_leave_nothing(tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    before = _shm_entries()
    done = subprocess.run(
        [sys.executable, "-W", "always", str(script)], capture_output=True, text=True,
        timeout=100, env={**os.environ, "PYTHONPATH": os.path.dirname(__file__)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert "resource_tracker" not in done.stderr, done.stderr
    assert "leaked" not in done.stderr, done.stderr
    assert _shm_entries() - before == set()


@pytest.mark.timeout(120)
def test_many_tasks_do_not_grow_the_parent() -> None:
    me = psutil.Process()
    with corepool.Pool(2) as pool:
        pool.map(tasks.square, range(100_000))
        gc.collect()
        first = me.memory_info().rss
        pool.map(tasks.square, range(100_000))
        for _ in pool.imap_unordered(tasks.square, range(100_000)):
            pass
        gc.collect()
        second = me.memory_info().rss
    assert second - first < 8 * 1024 * 1024, (first, second)


@pytest.mark.timeout(120)
def test_many_submits_do_not_grow_the_parent() -> None:
    me = psutil.Process()
    with corepool.Executor(2) as ex:
        for f in [ex.submit(tasks.square, i) for i in range(5_000)]:
            f.result()
        gc.collect()
        first = me.memory_info().rss
        for f in [ex.submit(tasks.square, i) for i in range(5_000)]:
            f.result()
        gc.collect()
        second = me.memory_info().rss
    assert second - first < 8 * 1024 * 1024, (first, second)
