"""The ``corepool`` command line, run for real as a subprocess: ``demo`` and ``info``."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import corepool
from corepool.cli import demo

MODES = ("serial", "thread", "process")


def run_cli(*args: str, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    """``python -m corepool ARGS`` with captured text output."""
    return subprocess.run([sys.executable, "-m", "corepool", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def check_results(workload: dict[str, Any], tasks: int) -> None:
    assert workload["tasks"] == tasks
    assert isinstance(workload["title"], str) and workload["title"]
    assert list(workload["results"]) == list(MODES)
    for mode, m in workload["results"].items():
        assert m["mode"] == mode
        assert isinstance(m["workers"], int) and m["workers"] >= 1
        assert m["seconds"] > 0
        assert m["speedup"] > 0
    assert workload["results"]["serial"]["speedup"] == 1.0


@pytest.mark.timeout(120)
def test_demo_quick_json_reports_every_mode() -> None:
    proc = run_cli("demo", "--quick", "--json", timeout=100)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    usable = data["usable_cpus"]
    assert usable == corepool.cpu_count()
    assert data["quick"] is True
    assert data["start_method"] in ("fork", "forkserver", "spawn")
    assert data["pool_start_seconds"] > 0
    check_results(data["cpu"], max(4, 2 * usable))
    check_results(data["io"], demo.QUICK_IO_TASKS)
    assert data["cpu"]["loop_size"] > 0
    assert data["cpu"]["results"]["process"]["workers"] == usable
    assert data["io"]["results"]["thread"]["workers"] == demo.IO_THREADS
    # The process-based CPU speedup is reported (its size depends on the machine's load).
    assert data["cpu"]["results"]["process"]["speedup"] > 0


@pytest.mark.timeout(120)
def test_demo_quick_table_explains_the_gil() -> None:
    proc = run_cli("demo", "--quick", timeout=100)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"usable CPUs: {corepool.cpu_count()}" in out
    assert "CPU-bound" in out and "I/O-bound" in out
    for label in ("serial loop", "threads", "processes"):
        assert out.count(label) >= 2, label
    assert "GIL" in out and "own interpreter" in out
    assert "speedup" in out and "wall time" in out


@pytest.mark.timeout(60)
def test_info_json() -> None:
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["corepool"] == corepool.__version__
    assert data["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert data["python"]["implementation"]
    assert data["cpus"]["usable"] == corepool.cpu_count()
    assert data["cpus"]["reasons"][-1] == f"usable: {corepool.cpu_count()}"
    assert data["start_method"] in ("fork", "forkserver", "spawn")
    assert data["default_backend"]
    assert set(data["packages"]) == {"cloudpickle", "psutil", "threadpoolctl", "tqdm", "numpy"}
    assert data["packages"]["cloudpickle"]  # a required dependency
    backends = data["backends"]
    assert list(backends) == ["process", "thread", "serial", "dask", "ray"]
    for name in ("process", "thread", "serial"):
        assert backends[name]["available"] is True
    for name in ("dask", "ray"):
        if not backends[name]["available"]:
            assert backends[name]["detail"].startswith(("not installed", "import"))
        if backends[name]["detail"].startswith("not installed"):
            assert f"pip install 'corepool[{name}]'" in backends[name]["detail"]


@pytest.mark.timeout(60)
def test_info_text_lists_cpu_reasons() -> None:
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    for reason in corepool.cpus.cpu_report().reasons():
        assert reason in proc.stdout
    assert f"corepool {corepool.__version__}" in proc.stdout
    assert "start method:" in proc.stdout
    assert "backends:" in proc.stdout


@pytest.mark.timeout(60)
def test_no_subcommand_prints_help_and_exits_2() -> None:
    proc = run_cli()
    assert proc.returncode == 2
    assert "usage: corepool" in proc.stderr
    assert "demo" in proc.stderr and "info" in proc.stderr


@pytest.mark.timeout(60)
def test_console_script_is_the_same_command() -> None:
    script = Path(sys.executable).parent / "corepool"
    assert script.exists(), "pip install -e '.[test]' puts the corepool script beside python"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=50, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"corepool {corepool.__version__}"


def test_demo_task_functions_are_importable_by_workers() -> None:
    assert pickle.loads(pickle.dumps(demo.spin)) is demo.spin
    assert pickle.loads(pickle.dumps(demo.wait)) is demo.wait
    assert demo.spin(1000) == demo.spin(1000)
    assert demo.wait(0.0) == 0.0
