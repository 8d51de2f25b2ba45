"""How workers start: forked straight from a single-threaded program first, from the
fork server after; never fast-forked from unguarded main-module code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from corepool._engine import startup

pytestmark = pytest.mark.timeout(60)

TESTS = os.path.dirname(__file__)


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    path = os.pathsep.join([TESTS, *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=50,
        env={**os.environ, "PYTHONPATH": path},
    )


@pytest.mark.linux_transport  # the fork server and forked first workers
def test_first_workers_are_forked_from_the_program_and_replacements_from_the_server(
    tmp_path: Path,
) -> None:
    done = _run(
        """
        import json, os
        import corepool, tasks

        def parent(_):
            return os.getppid()

        if __name__ == "__main__":
            with corepool.Pool(2) as pool:
                first = set(pool.map(parent, range(8), chunksize=1))
                crashed = pool.map_async(tasks.crash_on, [3]).wait() or None
                pids = pool.pids()
                later = set(pool.map(parent, range(8), chunksize=1))
                square = pool.map(tasks.square, range(5))
            print(json.dumps({"me": os.getpid(), "first": sorted(first),
                              "later": sorted(later), "square": square}))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["first"] == [got["me"]]  # forked here: no fork server was needed
    assert got["me"] in got["later"] and len(got["later"]) == 2  # one replaced by the server
    assert got["square"] == [0, 1, 4, 9, 16]


@pytest.mark.linux_transport  # the fork server and forked first workers
def test_a_program_with_threads_starts_every_worker_from_the_fork_server(
    tmp_path: Path,
) -> None:
    done = _run(
        """
        import os, threading
        import corepool

        def parent(_):
            return os.getppid()

        if __name__ == "__main__":
            stop = threading.Event()
            threading.Thread(target=stop.wait).start()
            with corepool.Pool(2) as pool:
                print(os.getpid() in set(pool.map(parent, range(8), chunksize=1)))
            stop.set()
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_objects_from_get_context_reach_fork_and_fork_server_workers(tmp_path: Path) -> None:
    done = _run(
        """
        import threading
        import corepool

        def init(lock, counter):
            global LOCK, COUNTER
            LOCK, COUNTER = lock, counter

        def bump(_):
            with LOCK:
                COUNTER.value += 1

        def count(threads):
            ctx = corepool.get_context()
            lock, counter = ctx.Lock(), ctx.Value("i", 0, lock=False)
            with corepool.Pool(2, initializer=init, initargs=(lock, counter)) as pool:
                pool.map(bump, range(200))
            return counter.value

        if __name__ == "__main__":
            print(count(threads=False))
            stop = threading.Event()
            threading.Thread(target=stop.wait).start()
            print(count(threads=True))
            stop.set()
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "200"]


def test_a_forked_worker_does_not_keep_the_programs_shared_memory(tmp_path: Path) -> None:
    done = _run(
        """
        import numpy as np
        import corepool, shm_tasks

        if __name__ == "__main__":
            handle = corepool.shared(np.ones(1 << 20))
            with corepool.Pool(1) as pool:
                print(pool.apply(shm_tasks.memfd_fds))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


GUARDED = '''\
import corepool

def work():
    return 1

if __name__ == "__main__":
    a = 1
    b = 2
'''


def test_guarded_lines_are_those_inside_the_main_block() -> None:
    def lines(source: str) -> frozenset[int]:
        return startup._guarded_lines(compile(source, "script.py", "exec"))

    assert lines(GUARDED) == frozenset({7, 8})
    assert lines('if "__main__" == __name__:\n    x = 1\n') == frozenset({2})
    assert lines('if __name__ != "__main__":\n    x = 1\nif DEBUG:\n    y = 2\n') == frozenset()


def test_thread_count_sees_threads_started_by_anyone() -> None:
    import threading

    before = startup.thread_count()
    assert before is not None and before >= 1
    stop = threading.Event()
    extra = threading.Thread(target=stop.wait)
    extra.start()
    try:
        assert startup.thread_count() == before + 1
    finally:
        stop.set()
        extra.join()


MAIN_ANYWHERE = '''\
import corepool
from corepool._engine import startup

print("top level", startup.main_is_guarded())

if __name__ == "__main__":
    print("guarded", startup.main_is_guarded())
    with corepool.Pool(2) as pool:
        print(pool.map(int, ["1", "4", "9"]))
'''


@pytest.mark.linux_transport  # the fork server and forked first workers
@pytest.mark.parametrize("form", ["script", "pyc", "directory", "zip"])
def test_the_guard_is_seen_without_the_source_file(tmp_path: Path, form: str) -> None:
    """A main program run from a .pyc only, a directory or a zip file: the guard check
    reads the running code, so the pool starts fast and works (no source needed)."""
    import py_compile
    import zipfile

    source = tmp_path / "main.py"
    source.write_text(MAIN_ANYWHERE)
    target = source
    if form == "pyc":
        target = tmp_path / "main.pyc"
        py_compile.compile(str(source), cfile=str(target), doraise=True)
        source.unlink()
    elif form == "directory":
        target = tmp_path / "app"
        target.mkdir()
        source.rename(target / "__main__.py")
    elif form == "zip":
        target = tmp_path / "app.zip"
        with zipfile.ZipFile(target, "w") as archive:
            archive.write(source, "__main__.py")
        source.unlink()
    done = subprocess.run(
        [sys.executable, str(target)], capture_output=True, text=True, timeout=50,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["top level False", "guarded True", "[1, 4, 9]"]
