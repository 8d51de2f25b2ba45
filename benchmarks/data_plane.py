"""The data-plane workloads of ``compare.py``: large numpy arrays in and out, one large
array shared by many tasks, and the cost of a second small map on a warm pool.

arrays-in    ``map(array_sum, arrays)``: 8 tasks, each given a distinct 32 MB float64
             array, returning its sum; on a warm pool.
arrays-out   ``map(make_array, ...)``: 8 tasks, each returning a new 32 MB array; on a
             warm pool; the results are checked, then dropped outside the timer.
shared       64 tasks that each read (sum) all of one 256 MB array, each library its
             nearest way to share it: ``corepool.shared`` on a warm pool; a module
             global inherited by a ``fork`` pool created after it was set; joblib's
             automatic memory mapping of large arguments; mpire's ``shared_objects``
             (fork). The timer runs from "the array exists" to "all results are in", so
             it includes corepool's copy into shared memory and the fork pools' start.
             A second table gives how much the processes' memory (PSS, which counts a
             shared page once) grew meanwhile.
second map   ``map(square, range(2))`` on a warm pool, 20 times per round: the
             latency of a small call in a program that already mapped once.

Dask (a ``LocalCluster`` of 2 single-threaded worker processes) joins the array
workloads when it is installed.
"""

from __future__ import annotations

import math
import random
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import psutil
from common import Settings, Table, close_all, interleave, log, open_all, shuffled, timed
from libraries import WORKERS, Library
from workloads import array_sum, make_array, mpire_shared_sum, shared_sum, square

MB = 2**20


class Dask(Library):
    """``Client.map`` + ``gather`` on a ``LocalCluster`` of 2 worker processes."""

    name = "dask (LocalCluster)"

    def open(self) -> None:
        from distributed import Client, LocalCluster

        self._cluster = LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self._client = Client(self._cluster)
        # Dask warns about every large argument ("Sending large graph"): expected here.
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        self.map(square, range(4))

    def map(self, fn: Callable[[Any], Any], items: Any) -> list[Any]:
        return list(self._client.gather(self._client.map(fn, list(items), pure=False)))

    def close(self) -> None:
        self._client.close()
        self._cluster.close()


def _open_with_dask() -> dict[str, Library]:
    """Every library's pool, warm: each worker has imported numpy already (untimed)."""
    import numpy

    libraries = open_all()
    try:
        import distributed  # noqa: F401
    except ImportError:
        log("  (dask not installed: left out)")
    else:
        dask = Dask()
        dask.open()
        libraries[dask.name] = dask
    for library in libraries.values():
        library.map(array_sum, [numpy.zeros(8)] * 8)
    return libraries


def _close(got: Any, expected: list[float]) -> bool:
    """Equal sums, up to the rounding a differently aligned buffer gives numpy's SIMD sum."""
    return isinstance(got, list) and len(got) == len(expected) and all(
        math.isclose(a, b, rel_tol=1e-9) for a, b in zip(got, expected, strict=True)
    )


def _random_arrays(count: int, size: int) -> list[Any]:
    import numpy

    return [numpy.random.default_rng(i).random(size) for i in range(count)]


def bench_arrays_in(settings: Settings, rng: random.Random) -> Table:
    size = settings.array_mb * MB // 8
    arrays = _random_arrays(settings.array_tasks, size)
    expected = [array_sum(a) for a in arrays]
    table = Table(
        "Large arrays as arguments", f"`map(array_sum, arrays)`: {settings.array_tasks} "
        f"tasks, each given a distinct {settings.array_mb} MB float64 array, returning its "
        "sum; warm pool; wall time of the map.", "s", higher_is_better=False,
    )

    def check(name: str, out: object) -> None:
        if not _close(out, expected):
            raise RuntimeError(f"{name} returned wrong sums")

    libraries = _open_with_dask()
    try:
        runners = {
            name: (lambda lib=library: lib.map(array_sum, arrays))
            for name, library in libraries.items()
        }
        interleave(settings, rng, table, runners, check, "arrays-in")
    finally:
        close_all(libraries)
    table.notes.append(
        "corepool sends each array through shared memory (one copy, into a memfd the "
        "worker maps, reused from map to map); the others pickle it into a pipe or socket."
    )
    return table


def bench_arrays_out(settings: Settings, rng: random.Random) -> Table:
    size = settings.array_mb * MB // 8
    items = [i * 2**32 + size for i in range(settings.array_tasks)]
    want = [(size, i, i) for i in range(settings.array_tasks)]
    table = Table(
        "Large arrays as results", f"`map(make_array, ...)`: {settings.array_tasks} tasks, "
        f"each returning a new {settings.array_mb} MB float64 array (`numpy.full`); warm "
        "pool; wall time of the map, results received.", "s", higher_is_better=False,
    )

    def check(name: str, out: Any) -> None:
        if not isinstance(out, list):  # mpire concatenates numpy results
            out = list(out.reshape(settings.array_tasks, size))
        if [(len(a), a[0], a[-1]) for a in out] != want:
            raise RuntimeError(f"{name} returned wrong arrays")

    libraries = _open_with_dask()
    try:
        runners = {
            name: (lambda lib=library: lib.map(make_array, items))
            for name, library in libraries.items()
        }
        interleave(settings, rng, table, runners, check, "arrays-out")
    finally:
        close_all(libraries)
    table.notes.append(
        "mpire, by default (`concatenate_numpy_output=True`), returns the arrays "
        "concatenated into one, an extra copy included in its time."
    )
    return table


def _pss_total() -> float:
    """PSS of this process and all its descendants, in MB (a shared page counts once)."""
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / MB


def _children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _maps_segments(proc: psutil.Process) -> bool:
    try:
        with open(f"/proc/{proc.pid}/maps") as f:
            return any("memfd:corepool" in line for line in f)
    except OSError:
        return False


class _SharedRunner:
    """One library's way to share the big array with ``tasks`` tasks that read it."""

    name = ""

    def prepare(self) -> None:
        """Untimed set-up (a warm pool, for the libraries whose pool can be warm)."""

    def run(self, big: Any, tasks: int) -> list[float]:
        raise NotImplementedError

    def finish(self) -> None:
        """Untimed tear-down after each run."""


class _Corepool(_SharedRunner):
    name = "corepool (shared)"

    def prepare(self) -> None:
        import corepool

        corepool.map(square, range(4), workers=WORKERS)

    def run(self, big: Any, tasks: int) -> list[float]:
        import corepool

        self._handle = corepool.shared(big)
        return corepool.map(shared_sum, [(self._handle, i) for i in range(tasks)],
                            workers=WORKERS)

    def finish(self) -> None:
        self._handle.release()  # the workers are told to unmap it; wait until they did
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_maps_segments(c) for c in _children()):
            time.sleep(0.01)


class _ForkGlobal(_SharedRunner):
    name = "fork + module global"

    def run(self, big: Any, tasks: int) -> list[float]:
        import multiprocessing

        import workloads

        workloads.BIG = big
        self._pool = multiprocessing.get_context("fork").Pool(WORKERS)
        return self._pool.map(workloads.global_sum, range(tasks))

    def finish(self) -> None:
        import workloads

        self._pool.terminate()
        self._pool.join()
        workloads.BIG = None


class _Joblib(_SharedRunner):
    name = "joblib (memmapping)"

    def prepare(self) -> None:
        from joblib import Parallel, delayed

        Parallel(n_jobs=WORKERS)(delayed(square)(x) for x in range(4))

    def run(self, big: Any, tasks: int) -> list[float]:
        from joblib import Parallel, delayed

        result: list[float] = Parallel(n_jobs=WORKERS)(
            delayed(array_sum)(big) for _ in range(tasks)
        )
        return result


class _Mpire(_SharedRunner):
    name = "mpire (shared_objects, fork)"

    def run(self, big: Any, tasks: int) -> list[float]:
        from mpire import WorkerPool

        self._pool = WorkerPool(n_jobs=WORKERS, shared_objects=big, start_method="fork")
        return list(self._pool.map(mpire_shared_sum, range(tasks)))

    def finish(self) -> None:
        self._pool.terminate()


SHARED_RUNNERS: list[type[_SharedRunner]] = [_Corepool, _ForkGlobal, _Joblib, _Mpire]


def bench_shared(settings: Settings, rng: random.Random) -> list[Table]:
    import numpy

    big = numpy.random.default_rng(7).random(settings.shared_mb * MB // 8)
    expected = [array_sum(big)] * settings.shared_tasks
    timing = Table(
        "One large array shared by many tasks", f"{settings.shared_tasks} tasks each "
        f"summing all of one {settings.shared_mb} MB float64 array, each library its "
        "nearest way to share it; wall time from the array existing in the parent to all "
        "results in.", "s", higher_is_better=False,
    )
    memory = Table(
        "Memory while sharing", f"Growth of the total PSS of the parent and all its "
        f"descendants across the same run, in MB (the array is {settings.shared_mb} MB; "
        "PSS counts a page shared by several processes once in total).",
        "MB", higher_is_better=False,
    )
    runners = {cls.name: cls() for cls in SHARED_RUNNERS}
    for runner in runners.values():
        runner.prepare()
    try:
        for round_no in range(settings.rounds):
            for name in shuffled(rng, list(runners)):
                runner = runners[name]
                before = _pss_total()
                seconds, out = timed(lambda r=runner: r.run(big, settings.shared_tasks))
                grew = _pss_total() - before
                runner.finish()
                if not _close(out, expected):
                    raise RuntimeError(f"{name} returned wrong sums")
                timing.samples.setdefault(name, []).append(seconds)
                memory.samples.setdefault(name, []).append(grew)
                log(f"  shared round {round_no + 1} {name}: {seconds:.3f} s, +{grew:.0f} MB")
    finally:
        from corepool.api import shutdown_default_pool

        shutdown_default_pool()
    timing.reference = memory.reference = "corepool (shared)"
    timing.notes.append(
        "corepool's pool is warm and its time includes `corepool.shared(array)` (one copy "
        "into shared memory); the fork and mpire rows include starting their pool, "
        "since a pool forked before the array existed could not see it; joblib's pool is "
        "warm and it memory-maps the array by itself."
    )
    memory.notes.append(
        "The fork rows start their workers inside the measured run, so their growth "
        "includes two fresh workers' own memory; corepool's and joblib's workers existed "
        "before."
    )
    return [timing, memory]


def bench_second(settings: Settings, rng: random.Random) -> Table:
    table = Table(
        "Second map", "`map(square, range(2))` on a pool that has mapped before (for "
        "corepool: `corepool.map`, whose default pool stays warm between calls); "
        "milliseconds per call, median of 20 calls per round.", "ms", higher_is_better=False,
    )
    libraries = open_all()
    try:
        for round_no in range(settings.rounds):
            for name in shuffled(rng, list(libraries)):
                library = libraries[name]
                times = []
                for _ in range(20):
                    seconds, out = timed(lambda lib=library: lib.map(square, range(2)))
                    if out != [0, 1]:
                        raise RuntimeError(f"{name} returned {out!r}")
                    times.append(seconds * 1000)
                table.samples.setdefault(name, []).append(statistics.median(times))
                log(f"  second map round {round_no + 1} {name}: "
                    f"{statistics.median(times):.2f} ms")
    finally:
        close_all(libraries)
    table.notes.append(
        "mpire's default `keep_alive=False` starts new workers for every map, which is "
        "what its figure shows."
    )
    return table


DATA_WORKLOADS: dict[str, Callable[[Settings, random.Random], Table | list[Table]]] = {
    "arrays-in": bench_arrays_in,
    "arrays-out": bench_arrays_out,
    "shared": bench_shared,
    "second": bench_second,
}
