"""Task functions for the shared-memory tests (importable by worker processes)."""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np


def memfd_mappings(_: Any = None) -> int:
    """How many corepool shared-memory mappings this process has."""
    with open("/proc/self/maps") as f:
        return sum("memfd:corepool" in line for line in f)


def memfd_fds(_: Any = None) -> int:
    """How many open descriptors of corepool shared-memory files this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "memfd:corepool" in os.readlink(f"/proc/self/fd/{fd}"):
                count += 1
        except OSError:
            continue
    return count


def pid_and_segments(_: Any = None) -> tuple[int, tuple[int, int]]:
    return os.getpid(), (memfd_mappings(), memfd_fds())


def backed_by_mapping(obj: Any) -> bool:
    """Whether ``obj`` (an array or memoryview) is a view of a memory mapping."""
    base = obj
    for _ in range(10):
        if isinstance(base, mmap.mmap):
            return True
        if isinstance(base, memoryview):
            base = base.obj
        elif isinstance(base, np.ndarray):
            base = base.base
        else:
            return False
    return False


def describe(a: np.ndarray) -> tuple[float, bool, bool, str, tuple[int, ...], bool]:
    """The sum of ``a`` and how it arrived."""
    return (
        float(a.sum()),
        backed_by_mapping(a),
        bool(a.flags.writeable),
        str(a.dtype),
        a.shape,
        bool(a.flags.f_contiguous and not a.flags.c_contiguous),
    )


def filled(args: tuple[int, float]) -> np.ndarray:
    size, value = args
    return np.full(size, value)


def scribble_then_crash_once(args: tuple[np.ndarray, str]) -> float:
    """Write into the argument array, crash the worker the first time; return the sum
    as received (a retry must see the original data, not the scribbles)."""
    a, marker = args
    before = float(a.sum())
    a[:] = -1.0
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(3)
    return before


def crash(_: Any) -> None:
    os._exit(5)


def hang(_: Any) -> None:
    import time

    time.sleep(60)


def object_id_and_sum(args: tuple[Any, int]) -> tuple[int, int, float]:
    """(pid, id of the shared object, sum): the same id twice in one worker means it was
    mapped once and kept."""
    table, _ = args
    return os.getpid(), id(table), float(np.asarray(table).sum())


def sum_shared(args: tuple[np.ndarray, int]) -> tuple[float, bool, bool]:
    a, _ = args
    return float(a.sum()), backed_by_mapping(a), bool(a.flags.writeable)


def kind_and_size(x: Any) -> tuple[str, int]:
    return type(x).__name__, len(x)


def memoryview_info(m: memoryview) -> tuple[str, tuple[int, ...], bool, int, bool]:
    return m.format, m.shape, m.readonly, int(m.cast("B")[7]), backed_by_mapping(m)


def touch_pages(args: tuple[np.ndarray, int]) -> float:
    """Read every page of a shared array (so its pages count in this worker's memory)."""
    a, _ = args
    return float(a[:: 512].sum())
