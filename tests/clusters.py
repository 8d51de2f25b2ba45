"""Real clusters for the tests: a ``dask scheduler`` and two ``dask worker`` processes
started with Dask's command line on 127.0.0.1, and a local Ray.

Each is started once per test session (see ``conftest.py``) and torn down at its end;
their processes are registered in :data:`SESSION_ROOTS` so that the no-process-left
check does not count them (or the worker processes Dask's nannies restart).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

TESTS = os.path.dirname(os.path.abspath(__file__))
START_TIMEOUT = 60.0

#: Processes (and their descendants) that live for the whole session.
SESSION_ROOTS: set[int] = set()


def environment() -> dict[str, str]:
    """This environment, with PYTHONPATH set so cluster processes import what we do."""
    env = dict(os.environ)
    # The workers import corepool and tests/tasks.py, as the caller does.
    paths = [TESTS, *[p for p in sys.path if p and os.path.isdir(p)]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for(condition: object, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Kill the test cluster's process trees (nothing of theirs needs a clean exit)."""
    for proc in processes:
        try:
            tree = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
        except psutil.NoSuchProcess:
            tree = []
        for member in tree:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
    for proc in processes:
        proc.wait(10)  # the grandchildren, killed too, are reaped by init


@dataclass
class DaskCluster:
    """A scheduler and two single-threaded workers, each a ``dask`` command."""

    workdir: Path
    address: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log: IO[bytes] | None = None

    def _run(self, arguments: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "dask", *arguments.split()]
        assert self.log is not None
        proc = subprocess.Popen(
            command, env=environment(), stdout=self.log, stderr=self.log, cwd=self.workdir
        )
        self.processes.append(proc)
        SESSION_ROOTS.add(proc.pid)
        return proc

    def start(self) -> DaskCluster:
        """Start the scheduler, then the workers; return once both workers joined."""
        from distributed import Client

        scheduler_file = self.workdir / "scheduler.json"
        self.log = open(self.workdir / "dask.log", "ab")  # noqa: SIM115 - closed in stop()
        self._run(
            "scheduler --host 127.0.0.1 --port 0 --dashboard-address :0 "
            f"--scheduler-file {scheduler_file}"
        )
        _wait_for(
            lambda: scheduler_file.exists() and scheduler_file.stat().st_size > 0,
            "the dask scheduler's address file",
        )
        self.address = json.loads(scheduler_file.read_text())["address"]
        for name in ("w1", "w2"):
            self._run(
                f"worker --scheduler-file {scheduler_file} --name {name} --host 127.0.0.1 "
                "--nthreads 1 --nworkers 1 --no-dashboard --death-timeout 60"
            )
        with Client(self.address, set_as_default=False, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
        return self

    def stop(self) -> None:
        """Kill every process of the cluster."""
        _stop(list(reversed(self.processes)))
        if self.log is not None:
            self.log.close()


def start_local_ray() -> set[int]:
    """``ray.init`` on this machine; the processes it started (to exclude and to stop)."""
    import ray

    before = {p.pid for p in psutil.Process().children()}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": environment()["PYTHONPATH"]}},
    )
    started = {p.pid for p in psutil.Process().children()} - before
    SESSION_ROOTS.update(started)
    return started


def in_session_tree(pid: int) -> bool:
    """Whether ``pid`` is a session cluster process or a descendant of one."""
    try:
        process = psutil.Process(pid)
        chain = [process, *process.parents()]
    except psutil.NoSuchProcess:
        return True
    return any(p.pid in SESSION_ROOTS for p in chain)
