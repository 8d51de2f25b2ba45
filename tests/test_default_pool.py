"""The default pool behind ``corepool.map`` when it is replaced (issue 19, items 3 and 4),
run as real programs: a replaced pool finishes the calls that use it, and a thread
that overran its timeout holds up neither a replacement, nor Ctrl-C, nor the exit."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

import corepool
import scripts
import shm_tasks

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_threads_with_different_workers_do_not_break_each_others_calls(
    tmp_path: Path, backend: str
) -> None:
    done = scripts.run(
        f"""
        import threading, time
        import corepool

        def slow_square(x):
            time.sleep(0.01)
            return x * x

        def caller(k, results):
            for round in range(5):
                got = corepool.map(slow_square, range(20), workers=1 + k % 2,
                                   backend={backend!r})
                results[k].append(got == [x * x for x in range(20)])

        if __name__ == "__main__":
            results = {{k: [] for k in range(4)}}
            threads = [threading.Thread(target=caller, args=(k, results), daemon=True)
                       for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(40)
            print(sum(t.is_alive() for t in threads), "hung;",
                  sum(map(sum, results.values())), "right")
        """,
        tmp_path,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 hung; 20 right", done.stderr[-3000:]


def test_an_abandoned_imap_lets_its_replaced_pool_go(tmp_path: Path) -> None:
    """A lazy call holds its pool until it is finished, closed or dropped; then a
    replaced pool stops (its workers exit)."""
    done = scripts.run(
        """
        import gc
        import corepool

        if __name__ == "__main__":
            results = corepool.imap(abs, range(-5, 5), workers=1)
            assert next(results) == 5
            first = corepool.api._default_pool(1, None)
            corepool.map(abs, [-1], workers=2)  # replaces it: still used by `results`
            assert not first.closed
            assert list(results) == [4, 3, 2, 1, 0, 1, 2, 3, 4]
            assert first.closed  # the last user finished
            unstarted = corepool.imap(abs, range(3), workers=1)
            second = corepool.api._default_pool(1, None)
            corepool.map(abs, [-1], workers=2)
            del unstarted
            gc.collect()
            assert second.closed
            print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


OVERRUN = """
import json, sys, time
import corepool

def sleepy(x):
    time.sleep(x)
    return x

if __name__ == "__main__":
    try:
        corepool.map(sleepy, [6], workers=1, backend="thread", timeout=0.3)
    except corepool.TaskTimeout:
        print("timed out", flush=True)
"""


def test_a_timed_out_thread_does_not_hold_up_the_next_call_with_other_workers(
    tmp_path: Path,
) -> None:
    done = scripts.run(
        OVERRUN
        + """
    started = time.monotonic()
    assert corepool.map(abs, [-1, -2], workers=2, backend="thread") == [1, 2]
    print(json.dumps(time.monotonic() - started))
""",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "timed out"
    assert json.loads(lines[1]) < 1.5  # was 4.5-6.5 s: the pool's shutdown waited for it


def test_exit_does_not_wait_for_a_thread_that_overran_its_timeout(tmp_path: Path) -> None:
    """As documented: it finishes in the background, and the program's exit does not
    wait for it (it is a daemon thread)."""
    started = time.monotonic()
    done = scripts.run(OVERRUN + "    print('end', flush=True)\n", tmp_path)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["timed", "out", "end"]
    assert elapsed < 4.0  # the task sleeps 6 s


def test_ctrl_c_after_a_timed_out_thread_stops_at_once(tmp_path: Path) -> None:
    proc = scripts.start(
        OVERRUN
        + """
    def forever(_):
        time.sleep(60)

    print("second call", flush=True)
    corepool.map(forever, [1], workers=1, backend="thread")
""",
        tmp_path,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "timed out"
        assert proc.stdout.readline().strip() == "second call"
        time.sleep(0.3)  # let the second call reach its wait; the signal is the test
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - sent
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
    assert "KeyboardInterrupt" in stderr
    assert elapsed < 2.0, stderr  # was 4.5-6.5 s


def test_the_default_pool_stops_before_the_backends_own_exit_handlers(tmp_path: Path) -> None:
    """Dask registers exit handlers that tear its cluster down; a default pool still
    open then lost its tasks ("marked as failed because 1 workers died")."""
    pytest.importorskip("distributed")
    done = scripts.run(
        """
        import corepool, tasks

        if __name__ == "__main__":
            print(corepool.map(tasks.square, range(3), timeout=5, workers=2, backend="dask"))
            print(corepool.map(tasks.square, range(3), workers=2, backend="dask"))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[0, 1, 4]"] * 2
    assert "ERROR" not in done.stderr, done.stderr


def test_the_default_pool_caps_blas_threads_as_a_pool_does() -> None:
    share = str(max(1, corepool.cpu_count() // 2))
    got = corepool.map(shm_tasks.blas_threads_here, range(4), workers=2, chunksize=1)
    assert {variable for variable, _ in got} == {share}
