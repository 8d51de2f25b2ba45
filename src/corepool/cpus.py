"""How many CPUs this process may really use.

``os.cpu_count()`` counts the machine's CPUs. A process may be pinned to fewer
(``taskset``, ``sched_setaffinity``) or throttled by a container's cgroup CPU quota
(``docker run --cpus 2``): starting one worker per machine CPU then oversubscribes.
:func:`cpu_count` takes the smallest of the three, and :func:`cpu_report` says why.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import NamedTuple

__all__ = ["CpuReport", "blas_thread_limit", "cpu_count", "cpu_report"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


class CpuReport(NamedTuple):
    """The figures behind :func:`cpu_count`; ``None`` where a limit does not apply."""

    machine: int
    affinity: int | None
    cgroup_quota: float | None
    usable: int

    def reasons(self) -> list[str]:
        """One line per limit that applies, for ``corepool info``."""
        lines = [f"machine CPUs: {self.machine}"]
        if self.affinity is not None:
            lines.append(f"CPU affinity allows: {self.affinity}")
        if self.cgroup_quota is not None:
            lines.append(f"cgroup CPU quota: {self.cgroup_quota:g} CPUs")
        lines.append(f"usable: {self.usable}")
        return lines


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        pass
    # Python 3.13+: the affinity mask where the system has one (Windows), else the count.
    counter = getattr(os, "process_cpu_count", None)
    count = counter() if counter is not None else None
    return count if isinstance(count, int) else None


def _quota_v2(cgroup_dir: Path) -> float | None:
    """Smallest ``cpu.max`` quota on the way from this cgroup up to the root."""
    best: float | None = None
    directory = cgroup_dir
    while True:
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            quota = "max"
            period = "1"
        if quota != "max":
            cpus = int(quota) / int(period)
            best = cpus if best is None else min(best, cpus)
        if directory == _CGROUP_ROOT or directory.parent == directory:
            return best
        directory = directory.parent


def _quota_v1(cgroup_dir: Path) -> float | None:
    try:
        quota = int((cgroup_dir / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_dir / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """The v2 path and the v1 ``cpu`` controller path from ``/proc/self/cgroup``."""
    v2 = v1 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _cgroup_quota() -> float | None:
    if not sys.platform.startswith("linux"):
        return None  # cgroups are Linux's
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    v2, v1 = parse_proc_cgroup(text)
    quotas: list[float] = []
    if v2 is not None and (_CGROUP_ROOT / "cgroup.controllers").exists():
        own = _CGROUP_ROOT / v2.lstrip("/")
        # Inside a container the cgroup namespace makes our own cgroup the root.
        found = _quota_v2(own if own.is_dir() else _CGROUP_ROOT)
        if found is not None:
            quotas.append(found)
    if v1 is not None:
        for base in (_CGROUP_ROOT / "cpu,cpuacct", _CGROUP_ROOT / "cpu"):
            for candidate in (base / v1.lstrip("/"), base):
                found = _quota_v1(candidate)
                if found is not None:
                    quotas.append(found)
                    break
            else:
                continue
            break
    return min(quotas) if quotas else None


def cpu_report() -> CpuReport:
    """Machine CPUs, the affinity mask, the cgroup quota, and the usable count."""
    machine = os.cpu_count() or 1
    affinity = _affinity()
    quota = _cgroup_quota()
    usable = affinity if affinity is not None else machine
    if quota is not None:
        usable = min(usable, max(1, math.ceil(quota)))
    return CpuReport(machine, affinity, quota, max(1, usable))


def cpu_count() -> int:
    """CPUs this process may really use: affinity mask and cgroup v1/v2 quota applied.

    The default number of workers of every pool. ``os.cpu_count()`` counts the
    machine's CPUs instead; :func:`cpu_report` says which limit applied.

    Examples:
        >>> import corepool, os
        >>> 1 <= corepool.cpu_count() <= os.cpu_count()
        True
    """
    return cpu_report().usable


def blas_thread_limit(setting: int | str | None, workers: int) -> int | None:
    """Threads each worker's BLAS/OpenMP pools may use, for ``blas_threads=``.

    ``"auto"``: the usable CPUs shared out between the workers (at least 1), so that
    N workers each running a multi-threaded numpy call do not oversubscribe the
    machine; an int: that many; ``None``: leave the libraries alone.
    """
    if setting is None:
        return None
    if setting == "auto":
        return max(1, cpu_count() // max(1, workers))
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ValueError(
        f'blas_threads must be "auto", a positive int or None (no limit), got {setting!r}'
    )
