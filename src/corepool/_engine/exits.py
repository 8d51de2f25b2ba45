"""Saying in words why a worker process ended.

A worker killed by SIGKILL was most often killed by the kernel's out-of-memory killer.
The kernel counts those kills per cgroup (``oom_kill`` in cgroup v2's
``memory.events``, v1's ``memory.oom_control``); when that count grew since the pool
started, the reason says "likely out of memory".
"""

from __future__ import annotations

import signal
from pathlib import Path

from ..cpus import parse_proc_cgroup

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def describe_exit(exitcode: int | None) -> str:
    """'exit code 3' or 'signal SIGSEGV' from a process exit code."""
    if exitcode is None:
        return "an unknown cause"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _oom_counter_files() -> list[Path]:
    try:
        v2, v1 = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        return []
    files: list[Path] = []
    if v2 is not None:
        own = _CGROUP_ROOT / v2.lstrip("/")
        files += [own / "memory.events", _CGROUP_ROOT / "memory.events"]
    if v1 is not None:
        files.append(_CGROUP_ROOT / "memory" / v1.lstrip("/") / "memory.oom_control")
        files.append(_CGROUP_ROOT / "memory" / "memory.oom_control")
    return files


def read_oom_kills(files: list[Path]) -> int:
    """The largest ``oom_kill`` count among ``files`` (0 where none is readable)."""
    best = 0
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                best = max(best, int(value))
    return best


class ExitExplainer:
    """Explains worker exits; remembers the OOM-kill count when the pool started."""

    def __init__(self) -> None:
        self._files = _oom_counter_files()
        self._baseline = read_oom_kills(self._files)

    def __call__(self, exitcode: int | None, pid: int | None) -> str:
        text = describe_exit(exitcode)
        if exitcode == -getattr(signal, "SIGKILL", 9):
            kills = read_oom_kills(self._files)
            if kills > self._baseline:
                self._baseline = kills
                return f"{text}, likely out of memory (the kernel's OOM killer)"
            return f"{text} (sent by another process, or the kernel's OOM killer)"
        if exitcode == -signal.SIGSEGV:
            return f"{text} (a segmentation fault, usually in C code)"
        if exitcode == -getattr(signal, "SIGABRT", 6):
            return f"{text} (abort(), usually a failed assertion in C code)"
        return text
