"""What tasks log and print reaches the caller: its handlers, its current streams.

On every backend: a record is handled by the caller's handlers for its logger's name,
with the worker's pid and the task's index and input; a record below the caller's
level is never made in the worker (so never sent); printed lines reach the caller's
*current* ``sys.stdout`` whole. Programs run as users run them: ``python program.py``
from a temporary folder, with a file handler, or with ``sys.stdout`` replaced by a
buffer as a notebook does.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import corepool
import scripts


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[_Keep]:
    """A handler on the logger ``forwarded`` at INFO, as a program would configure."""
    logger = logging.getLogger("forwarded")
    handler = _Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


class Tattle:
    """Formatting it leaves a file behind: proof that a record holding it was made."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __str__(self) -> str:
        with open(self.path, "a") as f:
            f.write("formatted\n")
        return "tattle"


def log_at_levels(folder: str, x: int) -> int:
    logger = logging.getLogger("forwarded.tasks")
    logger.debug("debug %s %s", x, Tattle(os.path.join(folder, f"debug-{x}")))
    logger.info("info %s %s", x, Tattle(os.path.join(folder, f"info-{x}")))
    if x == 3:
        try:
            raise ValueError("three")
        except ValueError:
            logger.exception("failed on %s", x)
    return os.getpid()


@pytest.mark.timeout(120)
def test_records_reach_the_callers_handlers_with_the_task(
    backend: str, kept: _Keep, tmp_path: Path
) -> None:
    folder = str(tmp_path)
    with corepool.Pool(2, backend=backend) as pool:
        pids = pool.map(lambda x: log_at_levels(folder, x), range(6), chunksize=2)
    infos = sorted(
        (r for r in kept.records if r.getMessage().startswith("info")),
        key=lambda r: r.corepool_task,  # type: ignore[attr-defined]
    )
    assert [r.getMessage() for r in infos] == [f"info {x} tattle" for x in range(6)]
    assert [r.corepool_task for r in infos] == list(range(6))  # type: ignore[attr-defined]
    assert [r.corepool_input for r in infos] == [repr(x) for x in range(6)]  # type: ignore[attr-defined]
    assert [r.process for r in infos] == pids
    assert all(r.name == "forwarded.tasks" for r in infos)
    [failed] = [r for r in kept.records if r.levelno == logging.ERROR]
    assert failed.corepool_task == 3  # type: ignore[attr-defined]
    text = logging.Formatter().format(failed)
    assert "failed on 3" in text and "ValueError: three" in text and "Traceback" in text
    # The caller is at INFO: no DEBUG record was ever made, so none could be sent.
    assert not any(r.levelno == logging.DEBUG for r in kept.records)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == [f"info-{x}" for x in range(6)]


def print_lines(x: int) -> int:
    print(f"line {x}", "x" * 50)
    print(f"err {x}", file=sys.stderr)
    print(f"partial {x}", end="")
    return x


@pytest.mark.timeout(120)
def test_printed_lines_reach_the_callers_current_streams(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with corepool.Pool(2, backend=backend) as pool:
        pool.map(abs, range(4))  # workers started before the streams are replaced
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        assert pool.map(print_lines, range(8), chunksize=1) == list(range(8))
    for x in range(8):
        assert f"line {x} {'x' * 50}\n" in out.getvalue()
        assert f"partial {x}" in out.getvalue()
        assert f"err {x}\n" in err.getvalue()


SCRIPT_BACKENDS = ["process", "thread", "serial", "dask"]


def run_program(code: str, backend: str, folder: Path, request: pytest.FixtureRequest) -> str:
    """``python program.py BACKEND [ADDRESS]`` (Dask: the session's cluster) to a clean
    exit; what it printed."""
    arguments = [backend]
    if backend == "dask":
        pytest.importorskip("distributed")
        arguments.append(request.getfixturevalue("dask_cluster").address)
    done = scripts.run(code, folder, timeout=150, arguments=arguments)
    assert done.returncode == 0, done.stderr
    return done.stdout


_NOTEBOOK = """
import io, re, sys, time
import corepool

class Cell(io.StringIO):
    '''What a notebook kernel puts in place of sys.stdout (its write lets other
    threads run, as a kernel's stream does when it takes its lock).'''

    def write(self, text):
        time.sleep(0)
        return super().write(text)

def shout(x):
    for n in range(40):
        print(f"<{x}:{n}:" + "ab" * 1500 + ">")
    return x

if __name__ == "__main__":
    real = sys.stdout
    sys.stdout = cell = Cell()
    backend = sys.argv[1]
    options = {"address": sys.argv[2]} if len(sys.argv) > 2 else {}
    with corepool.Pool(2, backend=backend, **options) as pool:
        pool.map(shout, range(40), chunksize=1)
    sys.stdout = real
    lines = cell.getvalue().splitlines()
    whole = re.compile(r"^<(\\d+):(\\d+):(ab){1500}>$")
    broken = [line[:40] for line in lines if not whole.match(line)]
    seen = {whole.match(line).group(1, 2) for line in lines if whole.match(line)}
    print(f"lines {len(lines)} whole {len(seen)} broken {len(broken)} {broken[:3]}")
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", SCRIPT_BACKENDS)
def test_a_notebook_like_caller_sees_every_line_whole(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = run_program(_NOTEBOOK, backend, tmp_path, request)
    assert out.strip() == "lines 1600 whole 1600 broken 0 []", out


_UNFINISHED = """
import io, os, sys, time
import corepool

def task(args):
    x, marker = args
    if x == 0:
        print("tail of 0", end="")
        return x
    deadline = time.monotonic() + 60
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.005)  # the caller has task 0's result (and so its output) first
    print("line of 1")
    print("tail of 1", end="")
    return x

if __name__ == "__main__":
    backend = sys.argv[1]
    options = {"address": sys.argv[2]} if len(sys.argv) > 2 else {}
    marker = os.path.abspath("seen-0")
    real, sys.stdout = sys.stdout, io.StringIO()
    with corepool.Pool(2, backend=backend, **options) as pool:
        for x in pool.imap_unordered(task, [(0, marker), (1, marker)], chunksize=1):
            if x == 0:
                open(marker, "w").close()
    cell, sys.stdout = sys.stdout, real
    print(repr(cell.getvalue()))
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["process", "thread", "dask"])
def test_a_tasks_unfinished_last_line_is_ended_before_another_workers_line(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A task's unfinished line goes when the task ends, with a newline: the next text in
    # the caller's stream is another worker's, and must start a line of its own.
    out = run_program(_UNFINISHED, backend, tmp_path, request)
    assert out.strip() == repr("tail of 0\nline of 1\ntail of 1\n")


_SCRIPT = """
import json, logging, os, sys
import corepool

log = logging.getLogger("myapp.work")

def work(x):
    log.debug("not wanted %s", x)
    log.info("working on %s", x)
    if x == 2:
        log.warning("two is odd")
    return os.getpid()

if __name__ == "__main__":
    logging.basicConfig(
        filename="run.log", level=logging.INFO,
        format="%(levelname)s|%(name)s|%(process)d|%(corepool_task)s|%(corepool_input)s|%(message)s",
    )
    backend = sys.argv[1]
    options = {"address": sys.argv[2]} if len(sys.argv) > 2 else {}
    pids = corepool.map(work, ["a", "b", 2, "d"], workers=2, backend=backend, **options)
    print(json.dumps({"pids": pids, "me": os.getpid()}))
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", SCRIPT_BACKENDS)
def test_a_script_with_a_file_handler_gets_every_tasks_records(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ran = json.loads(run_program(_SCRIPT, backend, tmp_path, request))
    lines = sorted((tmp_path / "run.log").read_text().splitlines(), key=lambda s: s.split("|")[3])
    inputs = ["'a'", "'b'", "2", "'d'"]
    expected = []
    for index, (shown, pid) in enumerate(zip(inputs, ran["pids"], strict=True)):
        expected.append(f"INFO|myapp.work|{pid}|{index}|{shown}|working on {shown.strip(chr(39))}")
        if index == 2:
            expected.append(f"WARNING|myapp.work|{pid}|2|2|two is odd")
    assert lines == expected
    if backend == "process":
        assert ran["me"] not in ran["pids"]


_DASK_THREADS = """
import io, json, logging, re, sys
import corepool

log = logging.getLogger("myapp.work")

def work(x):
    log.debug("not wanted %s", x)
    log.info("working on %s", x)
    for n in range(20):
        print(f"<{x}:{n}:" + "ab" * 3000 + ">")
    return x

if __name__ == "__main__":
    from distributed import Client
    logging.basicConfig(
        filename="run.log", level=logging.INFO,
        format="%(name)s|%(corepool_task)s|%(corepool_input)s|%(message)s",
    )
    with Client(processes=False, n_workers=1, threads_per_worker=2,
                dashboard_address=None) as client:
        real, sys.stdout = sys.stdout, io.StringIO()
        corepool.map(work, ["a", "b"], backend="dask", client=client, chunksize=1)
        corepool.map(work, [3, 4], backend="dask", client=client, chunksize=1, timeout=60)
        cell, sys.stdout = sys.stdout, real
    whole = re.compile(r"^<(.+?):(\\d+):(ab){3000}>$")
    lines = cell.getvalue().splitlines()
    print(json.dumps({"lines": len(lines), "whole": sum(bool(whole.match(l)) for l in lines)}))
"""


@pytest.mark.timeout(120)
def test_a_dask_cluster_of_threads_in_the_caller_names_the_tasks(tmp_path: Path) -> None:
    """Its tasks log straight to the caller's handlers: with the task's attributes, as
    on the thread backend (a format naming them failed: "Logging error", no line)."""
    pytest.importorskip("distributed")
    done = scripts.run(_DASK_THREADS, tmp_path, timeout=100)
    assert done.returncode == 0, done.stderr
    assert "Logging error" not in done.stderr
    assert json.loads(done.stdout) == {"lines": 80, "whole": 80}
    assert sorted((tmp_path / "run.log").read_text().splitlines()) == [
        "myapp.work|0|'a'|working on a",
        "myapp.work|0|3|working on 3",
        "myapp.work|1|'b'|working on b",
        "myapp.work|1|4|working on 4",
    ]


_SWITCHED_OFF = """
import logging, sys
import corepool

class Cell:
    def __init__(self): self.text = ""
    def write(self, s): self.text += s
    def flush(self): pass

def work(x):
    print("raw", x)
    sys.stdout.flush()
    logging.getLogger("w").warning("plain %s", x)
    return x

if __name__ == "__main__":
    cell = sys.stdout = Cell()
    corepool.map(work, range(3), workers=2)
    sys.stdout = sys.__stdout__
    print("caught", cell.text.count("raw"))
"""


@pytest.mark.timeout(120)
def test_the_environment_switches_forwarding_off(tmp_path: Path) -> None:
    done = scripts.run(
        _SWITCHED_OFF, tmp_path, env={"COREPOOL_FORWARD_OUTPUT": "0", "COREPOOL_FORWARD_LOGS": "0"}
    )
    assert done.returncode == 0, done.stderr
    # The workers wrote to file descriptor 1 (the pipe), not to the replaced stream; raw
    # descriptors, so two workers' writes may land inside one line.
    assert done.stdout.count("raw") == 3
    assert "caught 0" in done.stdout
    assert sorted(line for line in done.stderr.splitlines() if "plain" in line) == [
        "plain 0", "plain 1", "plain 2"
    ]
    forwarded = scripts.run(_SWITCHED_OFF, tmp_path)
    assert "caught 3" in forwarded.stdout, forwarded.stderr


def log_index(x: int) -> int:
    logging.getLogger("forwarded").info("task %s", x)
    return x


@pytest.mark.timeout(120)
def test_a_tasks_records_arrive_before_its_result(backend: str, kept: _Keep) -> None:
    with corepool.Pool(2, backend=backend) as pool:
        for x in pool.imap_unordered(log_index, range(40), chunksize=3):
            handled = {r.corepool_task for r in kept.records}  # type: ignore[attr-defined]
            assert x in handled


def log_then_fail(x: int) -> int:
    logging.getLogger("forwarded").info("started %s", x)
    if x == 5:
        raise ValueError("five")
    return x


@pytest.mark.timeout(120)
def test_tasks_with_a_timeout_and_retries_are_named_too(backend: str, kept: _Keep) -> None:
    """The careful path (a slot per task, or a helper thread on a cluster worker)."""
    # A pool of its own: a pool takes the levels when it starts (the default pool may
    # have started earlier in the session).
    with corepool.Pool(2, backend=backend, task_timeout=60, retries=1) as pool:
        out = list(pool.imap(log_then_fail, range(8), chunksize=4, on_error="return"))
    assert isinstance(out[5], ValueError)
    named = sorted((r.corepool_task, r.getMessage()) for r in kept.records)  # type: ignore[attr-defined]
    assert named == sorted([(x, f"started {x}") for x in range(8)] + [(5, "started 5")])


def log_in_initializer() -> None:
    logging.getLogger("forwarded").warning("initializer ran")


@pytest.mark.timeout(120)
def test_an_initializers_records_arrive_without_a_task(kept: _Keep) -> None:
    with corepool.Pool(2, initializer=log_in_initializer) as pool:
        assert pool.map(abs, range(4)) == list(range(4))
    started = [r for r in kept.records if r.getMessage() == "initializer ran"]
    assert len(started) == 2
    assert all(not hasattr(r, "corepool_task") for r in started)
    assert all(r.process != os.getpid() for r in started)


def print_unfinished() -> None:
    print("initializer ran", end="")


@pytest.mark.timeout(120)
def test_an_initializers_unfinished_line_is_ended_before_the_tasks_print(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with corepool.Pool(1, initializer=print_unfinished) as pool:
        assert pool.map(print, ["task printed"]) == [None]
    assert out.getvalue() == "initializer ran\ntask printed\n"


def log_then_exit(x: int) -> int:
    logging.getLogger("forwarded").warning("last words of %s", x)
    if x == 1:
        os._exit(3)
    return x


@pytest.mark.timeout(120)
def test_a_crashed_tasks_last_records_still_arrive(kept: _Keep) -> None:
    with corepool.Pool(2) as pool:
        out = list(pool.imap(log_then_exit, range(3), chunksize=1, on_error="return"))
    assert isinstance(out[1], corepool.WorkerCrashed)
    words = [r for r in kept.records if r.getMessage() == "last words of 1"]
    assert words and all(r.corepool_task == 1 for r in words)  # type: ignore[attr-defined]


_CONFIGURED_LATER = """
import logging, sys
import corepool

def work(x):
    logging.getLogger("late").info("task %s", x)
    return x

if __name__ == "__main__":
    backend = sys.argv[1]
    options = {"address": sys.argv[2]} if len(sys.argv) > 2 else {}
    corepool.map(work, range(2), workers=2, backend=backend, **options)  # pool started
    logging.basicConfig(filename="late.log", level=logging.INFO, format="%(message)s")
    corepool.map(work, range(3), workers=2, backend=backend, **options)  # the same pool
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["process", "dask"])
def test_logging_configured_after_the_pool_started_applies_to_the_next_map(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_program(_CONFIGURED_LATER, backend, tmp_path, request)
    assert sorted((tmp_path / "late.log").read_text().splitlines()) == [
        "task 0", "task 1", "task 2"
    ]


@pytest.mark.timeout(120)
def test_the_forwarding_cost_benchmark_runs() -> None:
    """A smoke run of benchmarks/forwarding_cost.py (docs/benchmarks.md quotes it): its
    timing of the worker's hooks called a function the run loop no longer has."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "benchmarks/forwarding_cost.py", "--rounds", "1", "--n", "2000"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
    )
    assert done.returncode == 0, done.stderr
    assert "ratio on/off" in done.stdout and "us per chunk in a worker" in done.stdout
