"""A program that leaves its Pool or Executor open exits as it would with the stdlib's.

Each case is a real ``python script.py`` run from a temporary directory, with the pool
left open in one state: work pending, finished, consumed, a task still running, or shut
down (closed) without waiting for it. The
same script runs with the stdlib's class (``ProcessPoolExecutor``,
``multiprocessing.Pool``) as the reference: an Executor finishes what it was given and
exits (its tasks' output is all there); a Pool is terminated at exit (what had not run
is dropped). No case may hang: each run has a time limit, well under the test's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

COMMON = """\
import sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
import corepool

def show(x, delay=0.2):
    time.sleep(delay)
    sys.stdout.write(f"task {x}\\n")  # one write: two processes share the pipe
    sys.stdout.flush()
    return x * 2

def make_executor():
    if sys.argv[1] == "stdlib":
        return ProcessPoolExecutor(2)
    return corepool.Executor(2, backend=sys.argv[1])

# The serial backend runs a Pool's task in the calling thread: a long one blocks the script.
LONG = 1 if sys.argv[1] == "serial" else 30

def make_pool():
    if sys.argv[1] == "stdlib":
        return multiprocessing.Pool(2)
    return corepool.Pool(2, backend=sys.argv[1])

if __name__ == "__main__":
"""

# state -> the body of the main block (the pool is never closed).
EXECUTOR = {
    "pending": "ex = make_executor()\n[ex.submit(show, i) for i in range(4)]",
    "finished": "ex = make_executor()\nprint('result', ex.submit(show, 7).result())",
    "consumed": "ex = make_executor()\nprint('results', list(ex.map(show, range(3))))",
    "running": "ex = make_executor()\nex.submit(show, 'apple', 1.0)\ntime.sleep(0.2)",
    "closed-no-wait": "ex = make_executor()\n[ex.submit(show, i) for i in range(4)]\n"
    "ex.shutdown(wait=False)",
}
POOL = {
    "pending": "pool = make_pool()\npool.map_async(time.sleep, [LONG] * 6)",
    "finished": "pool = make_pool()\nprint('result', pool.apply(show, (7,)))",
    "consumed": "pool = make_pool()\nprint('results', list(pool.imap(show, range(3))))",
    "running": "pool = make_pool()\npool.apply_async(time.sleep, (LONG,))\ntime.sleep(0.5)",
    "closed-no-wait": "pool = make_pool()\npool.apply_async(time.sleep, (LONG,))\npool.close()",
}
LIMIT = 40.0  # seconds for one run; a task of the scripts sleeps 30 s at most

_reference: dict[tuple[str, str], tuple[int, list[str]]] = {}


def run(tmp_path: Path, face: str, state: str, backend: str) -> tuple[int, list[str], float]:
    body = (EXECUTOR if face == "executor" else POOL)[state]
    script = tmp_path / f"{face}_{state}.py"
    script.write_text(COMMON + textwrap.indent(body, "    ") + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("COREPOOL_BACKEND", None)
    began = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, script.name, backend],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=LIMIT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{face} left {state} on {backend}: the program did not exit in {LIMIT} s")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, sorted(done.stdout.splitlines()), time.monotonic() - began


def reference(tmp_path: Path, face: str, state: str) -> tuple[int, list[str]]:
    if (face, state) not in _reference:
        code, lines, _ = run(tmp_path, face, state, "stdlib")
        _reference[face, state] = (code, lines)
    return _reference[face, state]


@pytest.mark.timeout(2 * LIMIT + 20)
@pytest.mark.parametrize("backend", ["process", "thread", "serial"])
@pytest.mark.parametrize("state", list(EXECUTOR))
@pytest.mark.parametrize("face", ["executor", "pool"])
def test_left_open_exits_like_the_stdlib(
    tmp_path: Path, face: str, state: str, backend: str
) -> None:
    """An Executor as ProcessPoolExecutor: its work finishes (all its output is there),
    then exit 0. A Pool as multiprocessing.Pool: terminated at exit, so a 30 s task does
    not hold it, exit 0."""
    code, lines, seconds = run(tmp_path, face, state, backend)
    expected_code, expected_lines = reference(tmp_path, face, state)
    assert code == expected_code == 0
    if face == "pool" and backend == "serial" and state not in ("finished", "consumed"):
        return  # the serial backend ran the task in the calling thread, to its end
    assert lines == expected_lines
    if face == "pool":
        assert seconds < 20, f"exiting took {seconds:.1f} s: the 30 s task held it"


@pytest.mark.timeout(2 * LIMIT + 20)
@pytest.mark.parametrize("face", ["executor", "pool"])
def test_dask_backend_left_open_exits_like_the_stdlib(tmp_path: Path, face: str) -> None:
    """On a LocalCluster the script starts itself: the same exit as the process backend."""
    pytest.importorskip("distributed", reason="the dask extra is part of the test extra")
    state = "pending" if face == "executor" else "finished"
    code, lines, _ = run(tmp_path, face, state, "dask")
    assert (code, lines) == reference(tmp_path, face, state)
    assert code == 0
