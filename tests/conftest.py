"""Shared fixtures: the backend matrix, and a check that no test leaves a process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/tasks.py for the workers too

import clusters
import corepool
from corepool.api import shutdown_default_pool

LOCAL_BACKENDS = ["process", "thread", "serial"]
CLUSTER_BACKENDS = ["dask", "ray"]


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[clusters.DaskCluster]:
    """A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, per session."""
    pytest.importorskip("distributed", reason="the dask extra is part of the test extra")
    cluster = clusters.DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


# The user programs of tests/cluster_job.py: scripts to copy and run, not test modules.
collect_ignore = ["cluster_job.py", "cluster_job_helpers.py", "reaper.py"]

_reaper: subprocess.Popen[bytes] | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; start the reaper that kills whatever this run started
    when it ends, also when it dies before its fixtures' teardown (issue 19, item 17)."""
    global _reaper
    config.addinivalue_line(
        "markers", "own_ray: starts a Ray of its own (runs before the session's Ray starts)"
    )
    config.addinivalue_line(
        "markers",
        "linux_transport: checks the Linux transport itself (fork server, descriptors); "
        "skipped when COREPOOL_TRANSPORT forces another",
    )
    if _reaper is None:
        _reaper = clusters.start_reaper()
    prefix = os.environ.get("COREPOOL_TEST_SEMPREFIX")
    if prefix:  # semaphores of this run get names of their own (test_portable_pass.py)
        from multiprocessing import process

        process.current_process()._config["semprefix"] = prefix


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip the Linux transport's own checks when another transport is forced."""
    if item.get_closest_marker("linux_transport") is not None:
        from corepool._engine import transport

        if transport.current().name != "linux":
            pytest.skip(f"checks the Linux transport; {transport.current().describe()}")


def pytest_unconfigure(config: pytest.Config) -> None:
    global _reaper
    if _reaper is not None:
        clusters.stop_reaper(_reaper)
        _reaper = None


def _ray_group(item: pytest.Item) -> int:
    """0: no Ray; 1: a Ray of its own; 2: the session's Ray."""
    if item.get_closest_marker("own_ray") is not None:
        return 1
    callspec = getattr(item, "callspec", None)
    in_ray_file = item.nodeid.startswith("tests/test_backend_ray.py")
    uses_session_ray = callspec is not None and callspec.params.get("backend") == "ray"
    return 2 if in_ray_file or uses_session_ray else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the Ray tests last: ``ray.init`` leaves signal handlers in this process that
    forked worker processes inherit, which would slow every later ``fork`` pool test.
    The tests that start a Ray of their own go before the session's Ray starts: one Ray
    at a time on the machine."""
    items.sort(key=_ray_group)  # stable: the order within each group is kept


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray (2 CPUs), initialised once per session and shut down at its end."""
    ray = pytest.importorskip("ray", reason="the ray extra is part of the test extra")
    clusters.start_local_ray()
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(params=LOCAL_BACKENDS + CLUSTER_BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test taking ``backend`` runs once per backend (the shared behaviour suite).

    ``dask`` runs on the session's command-line cluster, found through Dask's own
    ``scheduler-address`` setting as a user's program would; ``ray`` on the session's
    local Ray, which the backend finds already initialised.
    """
    if request.param == "dask":
        import dask

        address = request.getfixturevalue("dask_cluster").address
        with dask.config.set({"scheduler-address": address}):
            yield "dask"
        return
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    yield request.param


@pytest.fixture
def pool(backend: str) -> Iterator[corepool.Pool]:
    with corepool.Pool(2, backend=backend) as p:
        yield p


# multiprocessing's own long-lived helpers, shared by every pool of the test session.
_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _descendants() -> set[int]:
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if any(helper in command for helper in _HELPERS) or clusters.in_session_tree(child.pid):
            continue
        found.add(child.pid)
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail a test that leaves a worker (or any descendant) running after it ends."""
    before = _descendants()
    yield
    shutdown_default_pool()
    deadline = time.monotonic() + 5.0
    left = _descendants() - before
    while left and time.monotonic() < deadline:
        psutil.wait_procs([psutil.Process(pid) for pid in left if psutil.pid_exists(pid)],
                          timeout=0.2)
        left = _descendants() - before
    assert not left, f"processes left behind: {sorted(left)}"
