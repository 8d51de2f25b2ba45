"""Real clusters for the tests: a ``dask scheduler`` and two ``dask worker`` processes
started with Dask's command line on 127.0.0.1, a local Ray, and a Ray head started
with ``ray start --head``.

The Dask cluster and the local Ray are started once per test session (see
``conftest.py``) and torn down at its end; their processes are registered in
:data:`SESSION_ROOTS` so that the no-process-left check does not count them (or the
worker processes Dask's nannies restart). Should the run die before its teardown
(SIGKILL, ``os._exit``), the run's reaper (``reaper.py``, started by
:func:`start_reaper`) kills whatever it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

import reaper

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


def start_reaper() -> subprocess.Popen[bytes]:
    """Tag this test run's environment (inherited by every process it starts) and start
    the reaper that kills the tagged processes when the run ends, however it ends."""
    tag = uuid.uuid4().hex[:16]
    # Appended: a test run started by a test run is tagged for both.
    runs = os.environ.get(reaper.VARIABLE, "").split()
    os.environ[reaper.VARIABLE] = " ".join([*runs, tag])
    env = {k: v for k, v in os.environ.items() if k != reaper.VARIABLE}  # not tagged itself
    return subprocess.Popen(
        [sys.executable, os.path.join(TESTS, "reaper.py"), tag, str(os.getpid())],
        stdin=subprocess.PIPE,
        env=env,
        start_new_session=True,  # outside the run's process group and its signals
    )


def stop_reaper(process: subprocess.Popen[bytes]) -> None:
    """The run ends normally: the reaper sweeps (finding nothing, normally) and exits."""
    assert process.stdin is not None
    try:
        process.stdin.write(b"end\n")
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(40)
    except subprocess.TimeoutExpired:
        process.kill()


def run_tag() -> str:
    """The tag of this test run (the last one in the reaper's variable)."""
    return os.environ[reaper.VARIABLE].split()[-1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def script_environment() -> dict[str, str]:
    """The environment of a user's program: corepool importable, nothing of tests/."""
    import corepool

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COREPOOL_BACKEND", "DASK_", "RAY_ADDRESS"))
    }
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(corepool.__file__)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RayHead:
    """A Ray head node on this machine, started as users start one: ``ray start --head``
    (with ``--block``, so that the command stays the parent of what it starts)."""

    workdir: Path
    address: str = ""
    process: subprocess.Popen[bytes] | None = None
    temp_dir: str = field(default_factory=lambda: f"/tmp/corepool-ray-{uuid.uuid4().hex[:8]}")

    def start(self) -> RayHead:
        port = free_port()
        log = open(self.workdir / "ray.log", "wb")  # noqa: SIM115 - the child holds it
        env = script_environment()
        env["RAY_AUTH_MODE"] = "disabled"  # a loopback test cluster: no token to hand out
        command = [
            os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
            "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
            "--dashboard-agent-listen-port", str(free_port()),
            "--object-store-memory", str(100 * 2**20), "--disable-usage-stats",
            # Its own short temporary directory: Unix socket paths must stay short.
            "--temp-dir", self.temp_dir,
        ]  # fmt: skip
        with log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        text = self.workdir / "ray.log"
        _wait_for(
            lambda: "Ray runtime started" in text.read_text() or self.process.poll() is not None,
            "ray start --head",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"ray start failed:\n{text.read_text()}")
        self.address = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """SIGTERM: ``ray start --block`` stops what it started; then kill what is left."""
        if self.process is None:
            return
        group = self.process.pid
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(group, signal.SIGKILL)  # whatever of its session survived
        except ProcessLookupError:
            pass
        self.process.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
