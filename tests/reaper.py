"""Kills every process a test run started once the run ends, however it ends.

``python reaper.py TAG PID``: started by ``conftest.py`` in a session of its own. While
the run (process PID) lives, it keeps a list of the run's processes: PID's descendants
and every process whose environment carries TAG in :data:`VARIABLE` (inherited by all
the run starts, also by what detaches, like ``ray start``), with their descendants.
The list is needed because a process that renames itself (Ray's ``ray::`` workers use
setproctitle, which overwrites its environment) and whose parent died first is found
neither by tag nor by ancestry. When PID dies (SIGKILL included) every listed process
still alive, and every tagged one, is killed. When the run ends normally (a line on
stdin) only the listed processes that left the run's tree (orphans, daemons) are.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

VARIABLE = "COREPOOL_TEST_RUNS"
LOOK_EVERY = 0.5  # seconds between two looks at the run's processes


def _table() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, start time in clock ticks)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in (b"Z", b"X"):  # a zombie is dead, only not yet waited for
            table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def _tagged_in(pids: list[int], tag: str) -> list[int]:
    prefix = f"{VARIABLE}=".encode()
    found = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as file:
                environ = file.read()
        except OSError:  # gone, or not ours
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(prefix) and tag.encode() in variable[len(prefix):].split():
                found.append(pid)
                break
    return found


def tagged(tag: str) -> list[int]:
    """Processes (other than this one) whose :data:`VARIABLE` names ``tag``."""
    return _tagged_in([int(e) for e in os.listdir("/proc") if e.isdigit()], tag)


def _closure(table: dict[int, tuple[int, int]], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


class Run:
    """What the reaper knows of the run's processes."""

    def __init__(self, tag: str, pid: int) -> None:
        self.tag, self.pid = tag, pid
        self.known: dict[int, int] = {}  # pid -> start time

    def look(self) -> dict[int, tuple[int, int]]:
        table = _table()
        for pid in _closure(table, {self.pid, *_tagged_in(list(table), self.tag)}):
            self.known[pid] = table[pid][1]
        self.known = {p: t for p, t in self.known.items() if table.get(p, (0, -1))[1] == t}
        self.known.pop(self.pid, None)
        self.known.pop(os.getpid(), None)
        return table

    def sweep(self, run_alive: bool, patience: float = 30.0) -> list[str]:
        """SIGKILL the run's processes (only those out of its tree if it is alive)
        until two looks in a row find none; the commands of those killed."""
        killed: list[str] = []
        quiet = 0
        deadline = time.monotonic() + patience
        while quiet < 2 and time.monotonic() < deadline:
            table = self.look()
            targets = _closure(table, set(self.known)) - {os.getpid(), self.pid}
            if run_alive:
                targets -= _closure(table, {self.pid})
            quiet = 0 if targets else quiet + 1
            for pid in targets:
                command = _command(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(f"{pid} {command}")
                except OSError:
                    pass
            time.sleep(0.1)
        return killed


def main() -> None:
    tag, pid = sys.argv[1], int(sys.argv[2])
    if not os.path.isdir("/proc"):  # not Linux: nothing to read the processes from
        return
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)  # the run's end is what ends this
    run = Run(tag, pid)
    watched = [sys.stdin.fileno()]
    try:
        watched.append(os.pidfd_open(pid))  # readable once the run exits
    except (AttributeError, OSError):
        pass  # not Linux 5.3+: the look below notices the run's end too
    while True:
        table = run.look()
        if pid not in table:
            killed = run.sweep(run_alive=False)
            break
        ready, _, _ = select.select(watched, [], [], LOOK_EVERY)
        if sys.stdin.fileno() in ready:  # a normal end: the teardowns ran
            killed = run.sweep(run_alive=True)
            break
    if killed:
        print(f"reaper: killed what test run {tag} left:", *killed, sep="\n  ", file=sys.stderr)


if __name__ == "__main__":
    main()
