"""User programs on real clusters, run the way users run them (issue 12).

``cluster_job.py`` is copied as ``job.py`` into a temporary directory, with
``job_helpers.py`` beside it, and run as ``python job.py KIND``: its functions,
lambdas, classes and exceptions live in its own ``__main__`` and in a module next to
it, which the cluster's workers cannot import. One program per kind of cluster runs
every essential (ordered map, imap over a generator, a lambda, a script class, an
exception of a type defined in the script, ``on_error``, a timeout, a task that kills
its worker, a shared object, an initializer that sets a global), so that the whole
tier costs a few cluster start-ups and no more.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import clusters

pytest.importorskip("distributed")

TESTS = Path(__file__).parent
ESSENTIALS = (
    "ordered-map", "imap-generator", "lambda", "script-class", "helper-module",
    "script-exception", "on-error-return", "helper-exception", "on-error-skip",
    "timeout", "killed-worker", "after-the-crash", "shared-script-object",
)  # fmt: skip


@pytest.fixture
def program(tmp_path: Path) -> Path:
    """A directory holding the user's program and its helper module, and nothing else."""
    home = tmp_path / "program"
    home.mkdir()
    shutil.copy(TESTS / "cluster_job.py", home / "job.py")
    shutil.copy(TESTS / "cluster_job_helpers.py", home / "job_helpers.py")
    # A module of the user's that holds a lock, so cannot go by value.
    (home / "job_locked.py").write_text(
        "import threading\nLOCK = threading.Lock()\n\n\n"
        "def work(x):\n    with LOCK:\n        return x\n"
    )
    # A module from a directory that the program puts on sys.path itself.
    (home / "lib").mkdir()
    (home / "lib" / "elsewhere_mod.py").write_text("def work(x):\n    return x\n")
    return home


def run_program(home: Path, *arguments: str, env: dict[str, str] | None = None) -> str:
    """``python job.py ARGUMENTS`` in ``home``; its output, once it passed every check."""
    done = subprocess.run(
        [sys.executable, "job.py", *arguments],
        cwd=home,
        env=env or clusters.script_environment(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "all ok" in done.stdout, output
    # Anywhere in a line: Ray's log thread writes to the same stdout, and a line of its
    # own without its end can come first (seen once: a check passed, its line not found).
    passed = set(re.findall(r"(?<![\w-])ok ([a-z][\w-]*)", done.stdout))
    missing = set(ESSENTIALS) - passed
    assert not missing, (missing, output[-4000:])
    return done.stdout


@pytest.mark.timeout(180)
def test_a_script_on_a_dask_cluster_started_on_the_command_line(
    dask_cluster: clusters.DaskCluster, program: Path
) -> None:
    """(a) ``dask scheduler`` + two ``dask worker`` commands in their own directory."""
    from distributed import Client

    out = run_program(program, "dask-address", dask_cluster.address)
    assert "workers import the script directory: False" in out
    for name in (
        "not-our-main", "helpers-by-value", "initializer-global", "missing-module",
        "unpicklable-helper", "says-why", "lazy-import",
    ):  # fmt: skip
        assert f"ok {name}" in out
    with Client(dask_cluster.address, set_as_default=False, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)  # the killed worker was replaced


@pytest.mark.timeout(180)
def test_a_script_on_a_local_cluster_that_corepool_starts(program: Path) -> None:
    """(b) ``backend="dask"`` with no address: a LocalCluster of two worker processes.
    Its workers are spawned from the script, so they run it as ``__mp_main__``."""
    out = run_program(program, "dask-local")
    assert "ok initializer-global" in out


@pytest.mark.own_ray
@pytest.mark.timeout(180)
def test_a_script_on_a_local_ray_that_corepool_starts(program: Path) -> None:
    """(c) ``backend="ray"`` with no Ray running: corepool starts one and stops it.

    On one machine Ray itself puts the driver's script directory on its workers'
    ``sys.path``; the program checks that its helper module still went by value (the
    workers never imported it), as it must for a worker on another host."""
    out = run_program(program, "ray-local")
    for name in ("not-our-main", "helpers-by-value", "missing-module"):
        assert f"ok {name}" in out


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[clusters.RayHead]:
    head = clusters.RayHead(tmp_path)
    try:
        yield head.start()
    finally:
        head.stop()


@pytest.mark.own_ray
@pytest.mark.timeout(180)
def test_a_script_on_a_ray_started_with_ray_start(
    ray_head: clusters.RayHead, program: Path
) -> None:
    """(d) ``ray start --head`` as a separate command; the program joins by address."""
    env = clusters.script_environment()
    env["RAY_AUTH_MODE"] = "disabled"
    out = run_program(program, "ray-address", ray_head.address, env=env)
    for name in ("not-our-main", "helpers-by-value", "missing-module"):
        assert f"ok {name}" in out


@pytest.mark.timeout(120)
def test_corepool_run_sends_a_target_file_to_a_dask_cluster(
    dask_cluster: clusters.DaskCluster, program: Path, tmp_path: Path
) -> None:
    """``corepool run path/to/module.py:func --backend dask --address ...``: the
    workers cannot import the file's module, so it goes by value."""
    work = tmp_path / "batch"
    work.mkdir()
    (work / "inputs.jsonl").write_text("1\n2\n-3\n4\n")
    command = [
        sys.executable, "-m", "corepool", "run", f"{program / 'job_helpers.py'}:cube",
        "inputs.jsonl", "-o", "out.jsonl", "--backend", "dask",
        "--address", dask_cluster.address, "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=work,
        env=clusters.script_environment(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # one task failed, as it should
    rows = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]
    assert [row.get("result") for row in rows] == [1, 8, None, 64], rows
    assert rows[2]["error"]["type"] == "job_helpers.HelperError", rows[2]
