"""Kills every process a test run started once the run ends, however it ends.

``python reaper.py TAG PID``: started by ``conftest.py`` in a session of its own, it
waits until process PID (the test run) exits, by SIGKILL included, or writes a line to
its stdin (a normal end), then kills every process whose environment carries TAG in
:data:`VARIABLE`: the run's descendants inherit the variable, also the ones that
detached (``ray start``), that a crash orphaned, or that a nanny restarted meanwhile.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

VARIABLE = "COREPOOL_TEST_RUNS"


def tagged(tag: str) -> list[int]:
    """Processes (other than this one) whose :data:`VARIABLE` names ``tag``."""
    prefix = f"{VARIABLE}=".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                environ = file.read()
        except OSError:  # gone, or not ours
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(prefix) and tag.encode() in variable[len(prefix):].split():
                found.append(int(entry))
                break
    return found


def sweep(tag: str, patience: float = 30.0) -> int:
    """SIGKILL the tagged processes until two looks in a row find none; how many."""
    killed: set[int] = set()
    quiet = 0
    deadline = time.monotonic() + patience
    while quiet < 2 and time.monotonic() < deadline:
        found = tagged(tag)
        quiet = 0 if found else quiet + 1
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.1)
    return len(killed)


def wait_for_the_end(pid: int) -> None:
    """Until ``pid`` exits or a line (or end of file) arrives on stdin."""
    try:
        watched = [sys.stdin.fileno(), os.pidfd_open(pid)]
        timeout = None
    except (AttributeError, OSError):  # no pidfd (not Linux 5.3+): look twice a second
        watched, timeout = [sys.stdin.fileno()], 0.5
    while True:
        ready, _, _ = select.select(watched, [], [], timeout)
        if ready:
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return


def main() -> None:
    tag, pid = sys.argv[1], int(sys.argv[2])
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # the run's end is what ends this
    wait_for_the_end(pid)
    killed = sweep(tag)
    if killed:
        print(f"reaper: killed {killed} process(es) left by test run {tag}", file=sys.stderr)


if __name__ == "__main__":
    main()
