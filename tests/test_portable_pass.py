"""CI's second pass (issue 17): the behaviour suite, the crash, timeout, Ctrl-C and
parent-kill tests and the CPython conformance tier again, with the portable transport
forced (``COREPOOL_TRANSPORT=portable``: spawn, sockets without descriptor passing,
named segments, the watchdog thread), in one pytest run of their own.

Afterwards nothing of that run may be left in ``/dev/shm``: no corepool segment whose
creator is gone, and no semaphore of its own (the run names its semaphores with a
prefix of its own, see conftest.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
# The subset: behaviour, crashes and timeouts, Ctrl-C and parent kill (test_engine.py),
# shared memory, interpreter exit, and the conformance tier.
PASS = [
    "tests/test_behaviour.py",
    "tests/test_crash_matrix.py",
    "tests/test_engine.py",
    "tests/test_engine_failures.py",
    "tests/test_interpreter_exit.py",
    "tests/test_sharedmem.py",
    "tests/test_transport.py",
    "tests/conformance",
]
_NAME = re.compile(r"^cpu?(\d+)_")


def _dead_owners_segments() -> list[str]:
    return [
        entry
        for entry in os.listdir("/dev/shm")
        if (match := _NAME.match(entry)) and not psutil.pid_exists(int(match.group(1)))
    ]


@pytest.mark.timeout(1800)
def test_the_suites_pass_again_with_the_portable_transport_forced(tmp_path: Path) -> None:
    if os.environ.get("COREPOOL_TRANSPORT"):
        pytest.skip("this run forces a transport already (it is the second pass)")
    import faulthandler

    # pytest's faulthandler_timeout would dump this test's stacks while the run goes
    # on; each test of the run has its own limits.
    faulthandler.cancel_dump_traceback_later()
    before = set(_dead_owners_segments())
    tag = f"mpcppass{os.getpid()}"
    env = {
        **os.environ,
        "COREPOOL_TRANSPORT": "portable",
        "COREPOOL_TEST_SEMPREFIX": f"/{tag}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PASS]
    log = tmp_path / "second-pass.log"  # read as it goes: a run past its limit says where
    with open(log, "w") as out:
        run = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            run.wait(timeout=1700)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)  # with the workers and runners it started
            run.wait()
            pytest.fail("the second pass ran past 1700 s:\n" + log.read_text()[-10000:])
    text = log.read_text()
    assert run.returncode == 0, text[-12000:]
    assert " passed" in text and "portable" in text  # the skips say why
    assert set(_dead_owners_segments()) - before == set()
    assert [e for e in os.listdir("/dev/shm") if e.startswith(f"sem.{tag}")] == []
