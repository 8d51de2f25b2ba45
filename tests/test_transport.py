"""The transports (issue 17): the portable path with every Linux-only call made
impossible, nothing left in /dev/shm after crashes, timeouts and ``kill -9``, and how
a transport is chosen and reported."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import scripts
from corepool._engine import transport

# Made the sitecustomize of a test's programs: this process and every worker it spawns
# run without the Linux transport's module, memfd_create, sched_getaffinity and
# descriptor passing; each attempt to use one is logged (and fails).
BLOCKER = """
import importlib.abc, os, socket, sys

def _log(what):
    with open(os.environ["BLOCK_LOG"], "a") as f:
        f.write(f"{os.getpid()} {what}\\n")

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "corepool._engine.transport.linux":
            _log(name)
            raise ImportError(f"{name} is blocked")
        return None

sys.meta_path.insert(0, _Block())
for _name in ("memfd_create", "sched_getaffinity"):
    if hasattr(os, _name):
        delattr(os, _name)

def _refused(self, *args, **kwargs):
    _log("descriptor passing")
    raise OSError("descriptor passing is blocked")

for _name in ("sendmsg", "recvmsg", "recvmsg_into"):
    setattr(socket.socket, _name, _refused)
"""

PROGRAM = """
import json, os, sys, time
import numpy as np
import corepool, tasks
from corepool._engine import transport

def crash(x):
    if x == 3:
        os._exit(7)
    return x

def big(n):
    return np.full(n, 2.0)

if __name__ == "__main__":
    out = {"transport": transport.current().name}
    a = np.ones(1_000_000)
    out["sums"] = [float(s) for s in corepool.map(np.sum, [a, a * 2], workers=2)]
    out["big"] = [float(r.sum()) for r in corepool.map(big, [500_000, 10], workers=2)]
    table = corepool.shared(a)
    out["shared"] = [float(s) for s in corepool.map(np.sum, [table, table], workers=2)]
    got = corepool.map(crash, range(6), workers=2, chunksize=1, on_error="return")
    out["crash"] = [type(r).__name__ for r in got]
    started = time.monotonic()
    got = corepool.map(tasks.sleep_for, [0, 60], workers=2, timeout=1, on_error="return")
    out["timeout"] = [type(r).__name__ for r in got]
    out["elapsed"] = time.monotonic() - started
    out["linux_loaded"] = "corepool._engine.transport.linux" in sys.modules
    print(json.dumps(out))
"""

_NAME = re.compile(r"^cpu?(\d+)_")


def _run(code: str, folder: Path, env: dict[str, str], **options: object) -> subprocess.Popen[str]:
    script = folder / "program.py"
    script.write_text(textwrap.dedent(code))
    path = os.pathsep.join([str(folder / "site"), scripts._SOURCE, scripts._TESTS])
    full = {**os.environ, "PYTHONPATH": path, **env}
    full.pop("COREPOOL_BACKEND", None)
    return subprocess.Popen(
        [sys.executable, str(script)], cwd=folder, env=full, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options,  # type: ignore[call-overload]
    )


def _blocked(folder: Path) -> dict[str, str]:
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(BLOCKER)
    return {"BLOCK_LOG": str(folder / "blocked.log")}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("setting", ["portable", "auto"])
def test_runs_with_every_linux_only_call_made_impossible(tmp_path: Path, setting: str) -> None:
    """Forced portable, or chosen automatically on a system without memfd_create and
    sched_getaffinity (posix-shm then, macOS's way); workers run under the block too."""
    env = {**_blocked(tmp_path), "COREPOOL_TRANSPORT": setting}
    if setting == "portable":  # no descriptor passing either, as on Windows
        pass
    else:
        (tmp_path / "site" / "sitecustomize.py").write_text(
            BLOCKER.split("def _refused")[0]  # keep SCM_RIGHTS: macOS has it
        )
    proc = _run(PROGRAM, tmp_path, env)
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["transport"] == ("portable" if setting == "portable" else "posix-shm")
    assert result["sums"] == [1e6, 2e6] and result["big"] == [1e6, 20.0]
    assert result["shared"] == [1e6, 1e6]
    assert result["crash"] == ["int"] * 3 + ["WorkerCrashed"] + ["int"] * 2
    assert result["timeout"] == ["int", "TaskTimeout"] and result["elapsed"] < 30
    assert not result["linux_loaded"]
    log = tmp_path / "blocked.log"
    assert not log.exists(), log.read_text()  # nothing even tried


def _names(pids: set[int]) -> list[str]:
    """corepool segment names in /dev/shm created by one of ``pids``."""
    found = []
    for entry in os.listdir("/dev/shm"):
        match = _NAME.match(entry)
        if match and int(match.group(1)) in pids:
            found.append(entry)
    return found


def _start_tagged(
    code: str, folder: Path, setting: str
) -> tuple[subprocess.Popen[str], str]:
    """Start a program on transport ``setting`` whose semaphores carry a tag of its own."""
    tag = f"cptest{os.getpid()}{setting[0]}{folder.name[-12:].replace('-', '')}"
    return _run(code.format(tag=tag), folder, {"COREPOOL_TRANSPORT": setting}), tag


def _semaphores(tag: str) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if e.startswith(f"sem.{tag}")]


# The start of a program whose semaphores have names of this test's own ({tag}).
HEADER = """
import json, os, signal, time
from multiprocessing import process
import numpy as np
import corepool
from corepool.sharedmem import zeros
process.current_process()._config["semprefix"] = "/{tag}"
"""

CRASHES = HEADER + """

def dies_holding_a_segment(how):
    keep = zeros(300_000)  # a segment of the worker's own, handed to nobody
    keep[:] = 1
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "exit":
        os._exit(3)
    if how == "hang":
        time.sleep(60)
    return np.full(300_000, 3.0)  # a large result: a handed-off segment

def names_of(pids):
    return [e for e in os.listdir("/dev/shm") if e.split("_")[0].lstrip("cpu") in pids]

if __name__ == "__main__":
    pids, left = set(), []
    with corepool.Pool(2, task_timeout=2) as pool:
        for how in ("kill", "exit", "hang", "ok"):
            pids.update(pool.pids())
            got = pool.map_async(dies_holding_a_segment, [how, "ok"], chunksize=1)
            got.wait(30)
            assert (how == "ok") == got.successful()
            # The pool runs on: what the dead workers made must be gone already.
            left += names_of({{str(p) for p in pids - set(pool.pids())}})
        pids.update(pool.pids())
    print(json.dumps([sorted(pids), left]))
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("setting", ["linux", "portable"])
def test_no_segment_or_semaphore_is_left_after_crashes_and_timeouts(
    tmp_path: Path, setting: str
) -> None:
    proc, tag = _start_tagged(CRASHES, tmp_path, setting)
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err
    seen, left_while_running = json.loads(out)
    pids = set(seen) | {proc.pid}
    assert len(pids) >= 5  # three workers replaced
    assert left_while_running == []
    assert _names(pids) == []
    assert _semaphores(tag) == []


KEPT = HEADER + """

KEPT = []

def keeps_one(i):
    # A scratch segment dropped at once, and one the worker keeps and returns again.
    scratch = zeros(300_000)
    scratch[:] = i
    del scratch
    if not KEPT:
        KEPT.append(zeros(300_000))
    KEPT[0][:] = i
    mine = sorted(e for e in os.listdir("/dev/shm") if e.startswith(f"cp{{os.getpid()}}_"))
    return KEPT[0], mine

if __name__ == "__main__":
    with corepool.Pool(1) as pool:
        got = pool.map(keeps_one, range(4), chunksize=1)
    print(json.dumps([[float(a[0]) for a, _ in got], [len(m) for _, m in got]]))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("setting", ["linux", "portable"])
def test_a_worker_array_can_be_returned_again_and_its_scratch_is_freed(
    tmp_path: Path, setting: str
) -> None:
    """A zeros() array a worker keeps may be returned by each task (the first time
    its descriptor was closed after sending, and the next send killed the worker);
    a named segment a worker drops without sending is removed at once, not at exit."""
    proc, _ = _start_tagged(KEPT, tmp_path, setting)
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    values, named_while_running = json.loads(out)
    if setting == "linux":
        assert values == [3.0] * 4  # every result maps the worker's own array
        assert named_while_running == [0] * 4
    else:
        # The first result maps the worker's array; a name travels once, so the
        # later ones are copies.
        assert values == [3.0, 1.0, 2.0, 3.0]
        # Only the kept array's name, until the parent took it with the first result.
        assert named_while_running == [1, 0, 0, 0]


KILLED = HEADER + """

def busy_with_a_segment(n):
    keep = zeros(n)
    keep[:] = 1
    time.sleep(60)
    return keep

if __name__ == "__main__":
    table = corepool.shared(np.ones(500_000))  # the parent's own named segments too
    pool = corepool.Pool(2)
    print(*pool.pids(), flush=True)
    pool.map(busy_with_a_segment, [300_000] * 2, chunksize=1)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("setting", ["linux", "portable"])
def test_kill_9_of_the_parent_leaves_no_worker_segment_or_semaphore(
    tmp_path: Path, setting: str
) -> None:
    proc, tag = _start_tagged(KILLED, tmp_path, setting)
    assert proc.stdout is not None
    pids = {int(p) for p in proc.stdout.readline().split()}
    parent = psutil.Process(proc.pid)
    family = [psutil.Process(p) for p in pids]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # each worker holds its segment, busy
        if setting == "linux" or len(_names(pids)) == 2:
            break
        time.sleep(0.05)
    family += [c for c in parent.children(recursive=True) if c.pid not in pids]
    if setting == "portable":
        assert len(_names(pids)) == 2 and _names({proc.pid})  # before: the parent's too
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=20)  # workers, tracker, fork server
    for orphan in alive:
        orphan.kill()
    assert not alive, [p.pid for p in alive]
    assert _names(pids | {proc.pid}) == []
    assert _semaphores(tag) == []


def test_choosing_a_transport() -> None:
    assert transport.choose("portable").name == "portable"
    assert transport.choose("portable").start_method == "spawn"
    assert not transport.choose("portable").passes_fds
    assert transport.choose("posix-shm").memory == "shm-unlinked"
    assert transport.choose("auto").name == "linux"  # this machine has everything
    assert "forced by" in transport.choose("portable").reason
    with pytest.raises(ValueError, match="COREPOOL_TRANSPORT must be"):
        transport.choose("carrier-pigeon")


def test_info_names_the_transport_and_why(tmp_path: Path) -> None:
    for setting, line in [
        ("portable", "transport: portable (forced by COREPOOL_TRANSPORT=portable)"),
        ("", "transport: linux (Linux: memfd_create and SCM_RIGHTS available)"),
        ("nope", "transport: invalid (COREPOOL_TRANSPORT must be"),
    ]:
        env = {**os.environ, "COREPOOL_TRANSPORT": setting, "PYTHONPATH": scripts._SOURCE}
        done = subprocess.run(
            [sys.executable, "-m", "corepool", "info"], env=env, capture_output=True,
            text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert line in done.stdout


def test_an_invalid_setting_fails_at_pool_start_with_the_choices(tmp_path: Path) -> None:
    proc = _run(
        "import corepool\nif __name__ == '__main__':\n    corepool.map(abs, [1])\n",
        tmp_path, {"COREPOOL_TRANSPORT": "nope"},
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "COREPOOL_TRANSPORT must be auto, linux, posix-shm, portable" in err


def test_sweeper_removes_segments_of_dead_creators_only() -> None:
    from corepool._engine.transport import named

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    import _posixshmem

    mine = f"/cp{dead_pid}_0_abcdef"
    alive = f"/cp{os.getpid()}_999999_abcdef"
    for name in (mine, alive):
        os.close(_posixshmem.shm_open(name, os.O_CREAT | os.O_RDWR, 0o600))
    try:
        named.sweep_dead()
        assert not os.path.exists("/dev/shm" + mine)
        assert os.path.exists("/dev/shm" + alive)  # its creator (this process) lives
    finally:
        for name in (mine, alive):
            try:
                _posixshmem.shm_unlink(name)
            except OSError:
                pass


def test_the_watchdog_ends_a_busy_worker_whose_parent_died(tmp_path: Path) -> None:
    """Portable: no prctl; the worker's watchdog thread sees the parent's sentinel."""
    proc = _run(
        """
        import corepool, tasks
        if __name__ == "__main__":
            pool = corepool.Pool(1)
            print(*pool.pids(), flush=True)
            pool.map(tasks.sleep_for, [60])
        """,
        tmp_path, {"COREPOOL_TRANSPORT": "portable"},
    )
    assert proc.stdout is not None
    worker = psutil.Process(int(proc.stdout.readline()))
    deadline = time.monotonic() + 30
    while worker.status() != psutil.STATUS_SLEEPING and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the task (the test fails if the worker outlives the parent)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        worker.wait(timeout=10)
    except psutil.TimeoutExpired:
        worker.kill()
        pytest.fail("the worker outlived its parent")
