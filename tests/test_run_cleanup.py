"""Every process a test run starts dies with the run, however the run ends (issue 19,
item 17: a run that died during the Ray tests left a Dask scheduler and two workers
running for 20 minutes, their session fixture's teardown never reached).

A real pytest run is started with this suite's ``conftest.py``; its one test brings up
the session's command-line Dask cluster and local Ray, and a program running a
LocalCluster, then sleeps. The run is killed with SIGKILL, so no teardown runs: the
run's reaper must kill every process it had started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import clusters
import reaper

pytest.importorskip("distributed")
pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc"), reason="the reaper reads the processes from /proc (Linux)"
)

CHILD_TEST = '''
import os, subprocess, sys, time

LOCAL_CLUSTER = """
import time, corepool
with corepool.Pool(2, backend="dask") as pool:
    print(pool.map(abs, [-1]), flush=True)
    time.sleep(600)
"""


def test_start_everything_then_wait(dask_cluster, ray_session):
    program = subprocess.Popen(
        [sys.executable, "-c", LOCAL_CLUSTER], stdout=subprocess.PIPE, text=True
    )
    assert program.stdout.readline().strip() == "[1]"
    print("READY", os.environ["COREPOOL_TEST_RUNS"].split()[-1], flush=True)
    time.sleep(600)
'''


def _alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.add(pid)
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.own_ray
@pytest.mark.timeout(240)
def test_a_test_run_killed_with_sigkill_leaves_no_process(tmp_path: Path) -> None:
    (tmp_path / "test_child.py").write_text(CHILD_TEST)
    command = [
        sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
        "-s", "-q", "-o", "timeout=0", "test_child.py",
    ]  # fmt: skip
    run = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=clusters.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert run.stdout is not None
    seen = []
    tag = None
    try:
        for line in run.stdout:
            seen.append(line)
            if line.startswith("READY"):
                tag = line.split()[1]
                break
        assert tag is not None, "".join(seen)
        started = {p.pid for p in psutil.Process(run.pid).children(recursive=True)}
        started |= set(reaper.tagged(tag))
        commands = " ".join(" ".join(psutil.Process(pid).cmdline()) for pid in _alive(started))
        for part in ("dask scheduler", "dask worker", "raylet", "corepool.Pool"):
            assert part in commands, (part, commands)
    finally:
        run.kill()  # SIGKILL: no fixture teardown, no atexit, nothing
        run.wait(30)
    deadline = time.monotonic() + 60
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: psutil.Process(pid).cmdline() for pid in _alive(started)}
    assert not left, left
    assert not reaper.tagged(tag)
