"""Task functions for the shared-memory tests (importable by worker processes)."""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

# How a corepool segment shows in /proc/self/maps and /proc/self/fd: a memfd (Linux
# transport), or a /dev/shm name (portable: "cp<pid>_..."; posix-shm: "cpu<pid>_...").
SEGMENT_MARKS = ("memfd:corepool", "/dev/shm/cp")


def _is_segment(text: str, name: str = "corepool") -> bool:
    if name != "corepool":  # one kind of Linux segment only
        return f"memfd:{name}" in text
    return any(mark in text for mark in SEGMENT_MARKS)


def memfd_mappings(_: Any = None, name: str = "corepool") -> int:
    """How many corepool shared-memory mappings this process has (``name``: those of
    that name only, e.g. ``corepool (`` for arguments, ``corepool-result`` for results
    a worker keeps to fill again)."""
    with open("/proc/self/maps") as f:
        return sum(_is_segment(line, name) for line in f)


def memfd_fds(_: Any = None, name: str = "corepool") -> int:
    """How many open descriptors of corepool shared-memory files this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if _is_segment(os.readlink(f"/proc/self/fd/{fd}"), name):
                count += 1
        except OSError:
            continue
    return count


def pid_and_segments(_: Any = None) -> tuple[int, tuple[int, int]]:
    """This worker's pid, and the argument segments it maps and holds."""
    return os.getpid(), (memfd_mappings(name="corepool ("), memfd_fds(name="corepool ("))


def result_segments(_: Any = None) -> tuple[int, int]:
    """The result segments this worker maps (to fill again) and holds (lent or kept)."""
    return memfd_mappings(name="corepool-result"), memfd_fds(name="corepool-result")


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


def blas_threads_here(_: Any = None) -> tuple[str | None, int]:
    """OMP_NUM_THREADS in this worker, and the threads its BLAS would use."""
    from threadpoolctl import threadpool_info

    blas = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    return os.environ.get("OMP_NUM_THREADS"), max(blas, default=0)


_model: dict[str, Any] | None = None


def load_model(log_path: str) -> None:
    """A pool initializer: build the expensive object once per worker, keep it global."""
    global _model
    with open(log_path, "a") as log:
        log.write(f"{os.getpid()}\n")
    _model = {"factor": 2}


def predict(x: int) -> int:
    assert _model is not None, "the initializer did not run in this worker"
    return x * _model["factor"]


_kept: list[np.ndarray] = []


def keep(a: np.ndarray) -> None:
    """Keep the argument array past the task (so its memory stays mapped)."""
    _kept.append(a)


def kept_sum(_: Any = None) -> float | None:
    return float(_kept[0].sum()) if _kept else None


def memfd_inodes(_: Any = None) -> set[int]:
    """Inodes of the corepool shared-memory files this process maps."""
    found = set()
    with open("/proc/self/maps") as f:
        for line in f:
            if _is_segment(line):
                found.add(int(line.split()[4]))
    return found


def inodes_of_argument(a: np.ndarray) -> tuple[set[int], float]:
    return memfd_inodes(), float(a.sum())


def zeros_result(args: tuple[int, float]) -> np.ndarray:
    """A result made in shared memory; kept here too, to write into it later."""
    from corepool.sharedmem import zeros

    size, value = args
    out = zeros(size)
    out[:] = value
    _kept.append(out)
    return out


def write_into_kept(value: float) -> None:
    _kept[-1][:] = value


def sum_all(handles: list[np.ndarray], arrays: list[np.ndarray]) -> tuple[float, float]:
    return float(sum(h.sum() for h in handles)), float(sum(a.sum() for a in arrays))


def fill_shared(args: tuple[np.ndarray, float]) -> float:
    """Write ``value`` all over the shared array this task got; its sum afterwards."""
    a, value = args
    a[:] = value
    return float(a.sum())


def convolve_peak(args: tuple[np.ndarray, int]) -> int:
    """Peak bytes numpy allocated while scipy.signal.convolve2d filtered the array."""
    import tracemalloc

    from scipy import signal

    a, _ = args
    tracemalloc.start()
    try:
        signal.convolve2d(a, np.ones((2, 2)), mode="valid")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def mapped_sum(table: np.ndarray, _: Any = None) -> tuple[float, bool]:
    """The sum of ``table`` and whether it is a view of a mapping (not a copy)."""
    return float(table.sum()), backed_by_mapping(table)
