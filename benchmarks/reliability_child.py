"""The child side of ``reliability.py``: one scenario, one library, one fresh process.

    python benchmarks/reliability_child.py SCENARIO LIBRARY [VARIANT]

The driver starts this program in a new session and reads its standard output. Every
observation is printed at once as one line ``@@rel {json}``, so that whatever was seen
before a hang or a crash still reaches the driver. Each blocking phase (the map, the
follow-up task on the same pool, closing the pool) is watched by a timer: if a phase
has not returned in time, the timer reports the hang, probes whether the pool still
runs a new task, and ends this process with ``os._exit(3)``; the driver then kills what
is left of the session.

The task functions live in this module and are always used through the imported
module ``reliability_child`` (not ``__main__``), so that every library's workers can
import them by name, and so that ``BadInput`` raised in a worker is the same class the
parent catches.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

WORKERS = 2
N_TASKS = 20
BAD = 5  # the index of the task that misbehaves
TASK_SECONDS = 0.05  # every other task sleeps this long, so tasks are in flight together
TIMEOUT = 0.5  # the per-task timeout, for the libraries that have one
USER_TIMEOUT = 2.0  # a whole-map timeout, for the libraries that have no per-task one
LONG_TASK_SECONDS = 30  # scenarios 8 and 9
MAP_LIMIT = 8.0  # a phase that runs longer than this is reported as hanging
PHASE_LIMIT = 5.0
PROBE_LIMIT = 4.0
MARKER = "@@rel "


class BadInput(ValueError):
    """The exception of scenario 1; a subclass, so that a preserved type can be told."""


# --- tasks ---------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def _raise_in_worker(x: int) -> None:
    # The name of this function appears only in a traceback taken in a worker.
    raise BadInput(f"bad input {x}")


def _misbehave(kind: str, x: int) -> None:
    mark = os.environ.get("REL_MARK")
    if mark:  # the driver and this process look up the misbehaving worker by its pid
        with open(mark, "w") as f:
            f.write(str(os.getpid()))
    if kind == "raise":
        _raise_in_worker(x)
    elif kind == "exit":
        os._exit(1)
    elif kind == "segfault":
        ctypes.string_at(0)
    elif kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "hang":
        time.sleep(3600)
    else:
        raise AssertionError(kind)


def expected(x: Any) -> Any:
    return x * x if isinstance(x, int) else repr(x)


def task(kind: str, x: Any) -> Any:
    """Sleeps a little and returns ``expected(x)``; input ``BAD`` misbehaves as ``kind`` says."""
    if x == BAD and kind != "none":
        _misbehave(kind, x)
    time.sleep(TASK_SECONDS)
    return expected(x)


def long_task(x: int) -> int:
    time.sleep(LONG_TASK_SECONDS)
    return x


# --- the libraries, each used as its documentation shows -----------------------------


class Library:
    """``open`` starts the pool and warms it with one tiny map; ``map`` is the plain,
    all-or-nothing map; ``map_with_timeout`` the map of scenario 5; ``salvage`` the
    library's way to keep the good results of a map in which one task failed, as
    ``(results, errors)``; ``close`` does what leaving the pool's ``with`` block does."""

    name = ""
    native_timeout = ""  # how the per-task timeout is spelled, or "" when there is none

    def open(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def map(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        raise NotImplementedError

    def map_with_timeout(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        raise NotImplementedError

    def salvage(self, fn: Callable[[Any], Any], xs: list[Any], got: list[Any]) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _drain(results: Iterator[Any], got: list[Any], errors: list[str]) -> None:
    """Iterate ``results``, keeping going after an exception as far as the iterator will."""
    while True:
        try:
            got.append(next(results))
        except StopIteration:
            return
        except Exception as e:
            errors.append(type(e).__name__)


class Corepool(Library):
    name = "corepool"
    native_timeout = "corepool.map(..., timeout=0.5)"

    def open(self, timeout: float | None = None) -> None:
        import corepool

        self.cp = corepool
        self.timeout = timeout
        corepool.map(square, range(4), workers=WORKERS)

    def map(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return self.cp.map(fn, xs, workers=WORKERS)

    def map_with_timeout(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return self.cp.map(fn, xs, workers=WORKERS, timeout=self.timeout)

    def salvage(self, fn: Callable[[Any], Any], xs: list[Any], got: list[Any]) -> list[str]:
        out = self.cp.map(fn, xs, workers=WORKERS, on_error="return")
        got.extend(r for r in out if not isinstance(r, BaseException))
        return [type(r).__name__ for r in out if isinstance(r, BaseException)]

    # close: nothing; the default pool stops when the program exits.


class Multiprocessing(Library):
    name = "multiprocessing.Pool"

    def open(self, timeout: float | None = None) -> None:
        import multiprocessing

        self.pool = multiprocessing.Pool(WORKERS)
        self.pool.map(square, range(4))

    def map(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return self.pool.map(fn, xs)

    def map_with_timeout(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return self.pool.map_async(fn, xs).get(timeout=USER_TIMEOUT)

    def salvage(self, fn: Callable[[Any], Any], xs: list[Any], got: list[Any]) -> list[str]:
        errors: list[str] = []
        _drain(self.pool.imap(fn, xs), got, errors)
        return errors

    def close(self) -> None:
        self.pool.terminate()  # what ``with multiprocessing.Pool() as pool:`` does


class ProcessPoolExecutor(Library):
    name = "ProcessPoolExecutor"

    def open(self, timeout: float | None = None) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(max_workers=WORKERS)
        list(self.ex.map(square, range(4)))

    def map(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return list(self.ex.map(fn, xs))

    def map_with_timeout(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return list(self.ex.map(fn, xs, timeout=USER_TIMEOUT))

    def salvage(self, fn: Callable[[Any], Any], xs: list[Any], got: list[Any]) -> list[str]:
        # ``Executor.map``'s iterator ends at the first exception; futures are the way.
        errors: list[str] = []
        for future in [self.ex.submit(fn, x) for x in xs]:
            try:
                got.append(future.result())
            except Exception as e:
                errors.append(type(e).__name__)
        return errors

    def close(self) -> None:
        self.ex.shutdown(wait=True)  # what the ``with`` block does


class Joblib(Library):
    name = "joblib"
    native_timeout = "Parallel(n_jobs=2, timeout=0.5)"

    def open(self, timeout: float | None = None) -> None:
        import joblib

        self.joblib = joblib
        self.timeout = timeout
        self._run(square, range(4))

    def _run(self, fn: Callable[[Any], Any], xs: Iterable[Any], **kw: Any) -> Any:
        call = self.joblib.delayed(fn)
        return self.joblib.Parallel(n_jobs=WORKERS, **kw)(call(x) for x in xs)

    def map(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return list(self._run(fn, xs))

    def map_with_timeout(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return list(self._run(fn, xs, timeout=self.timeout))

    def salvage(self, fn: Callable[[Any], Any], xs: list[Any], got: list[Any]) -> list[str]:
        errors: list[str] = []
        _drain(iter(self._run(fn, xs, return_as="generator")), got, errors)
        return errors

    # close: nothing; loky's reusable executor stays for the next Parallel call.


class Pebble(Library):
    name = "pebble"
    native_timeout = "pool.map(..., timeout=0.5)"

    def open(self, timeout: float | None = None) -> None:
        import pebble

        self.timeout = timeout
        self.pool = pebble.ProcessPool(max_workers=WORKERS)
        list(self.pool.map(square, range(4)).result())

    def map(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return list(self.pool.map(fn, xs).result())

    def map_with_timeout(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return list(self.pool.map(fn, xs, timeout=self.timeout).result())

    def salvage(self, fn: Callable[[Any], Any], xs: list[Any], got: list[Any]) -> list[str]:
        errors: list[str] = []
        _drain(self.pool.map(fn, xs).result(), got, errors)
        return errors

    def close(self) -> None:
        self.pool.close()  # what the ``with`` block does
        self.pool.join()


class Mpire(Library):
    name = "mpire"
    native_timeout = "pool.map(..., task_timeout=0.5)"

    def open(self, timeout: float | None = None) -> None:
        import mpire

        self.timeout = timeout
        self.pool = mpire.WorkerPool(n_jobs=WORKERS)
        self.pool.map(square, range(4))

    def map(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return self.pool.map(fn, xs)

    def map_with_timeout(self, fn: Callable[[Any], Any], xs: list[Any]) -> list[Any]:
        return self.pool.map(fn, xs, task_timeout=self.timeout)

    def salvage(self, fn: Callable[[Any], Any], xs: list[Any], got: list[Any]) -> list[str]:
        errors: list[str] = []
        _drain(self.pool.imap(fn, xs), got, errors)
        return errors

    def close(self) -> None:
        self.pool.terminate()  # what the ``with`` block does


LIBRARIES: dict[str, type[Library]] = {
    cls.name: cls for cls in (Corepool, Multiprocessing, ProcessPoolExecutor, Joblib, Pebble, Mpire)
}


# --- reporting -----------------------------------------------------------------------

_print_lock = threading.Lock()
_hung = threading.Event()  # set by the watchdog: from then on only it reports


def report(event: str, **fields: Any) -> None:
    if _hung.is_set() and not isinstance(threading.current_thread(), threading.Timer):
        if threading.current_thread() is threading.main_thread():
            time.sleep(3600)  # the watchdog ends the process
        return
    with _print_lock:
        line = json.dumps({"event": event, "t": time.time(), **fields}, default=repr)
        sys.stdout.write(MARKER + line + "\n")
        sys.stdout.flush()


def descendants() -> list[list[Any]]:
    """``[pid, role]`` of every process below this one; role "helper" for a resource
    tracker or a fork server, "worker" otherwise."""
    import psutil

    me = psutil.Process()
    found = []
    for proc in me.children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            helper = "resource_tracker" in cmd or ("forkserver" in cmd and proc.ppid() == me.pid)
        except psutil.Error:
            continue
        found.append([proc.pid, "helper" if helper else "worker"])
    return sorted(found)


def pid_alive(pid: int | None) -> bool:
    import psutil

    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def misbehaving_pid() -> int | None:
    try:
        with open(os.environ["REL_MARK"]) as f:
            return int(f.read() or 0) or None
    except (KeyError, OSError, ValueError):
        return None


def describe(e: BaseException) -> dict[str, Any]:
    """What the caller gets: the type, whether it is the task's own, and the traceback."""
    text = "".join(traceback.format_exception(e))
    return {
        "type": f"{type(e).__module__}.{type(e).__qualname__}".removeprefix("builtins."),
        "is_bad_input": isinstance(e, BadInput),
        "message": str(e)[:300],
        "worker_traceback": "_raise_in_worker" in text,
        "cause": type(e.__cause__).__name__ if e.__cause__ else None,
    }


class Watchdog:
    """Reports a phase that does not return in time, probes the pool, ends the process."""

    def __init__(self, lib: Library) -> None:
        self.lib = lib
        self.timer: threading.Timer | None = None
        self.probed = False
        self.progress: list[Any] = []

    @contextlib.contextmanager
    def phase(self, name: str, limit: float) -> Iterator[None]:
        self.timer = threading.Timer(limit, self._fire, (name, limit))
        self.timer.daemon = True
        self.timer.start()
        try:
            yield
        finally:
            self.timer.cancel()

    def _fire(self, name: str, limit: float) -> None:
        report("hang", phase=name, after=limit, results_so_far=len(self.progress))
        _hung.set()
        if not self.probed and name != "close":
            probe_pool(self.lib, from_watchdog=True)
        report("misbehaving_worker", alive=pid_alive(misbehaving_pid()))
        os._exit(3)


def probe_pool(lib: Library, from_watchdog: bool = False) -> None:
    """Scenario 10: does the same pool run a new task? Bounded by a thread join."""
    box: dict[str, Any] = {}

    def attempt() -> None:
        t0 = time.perf_counter()
        try:
            box["ok"] = lib.map(square, [1, 2, 3]) == [1, 4, 9]
        except BaseException as e:
            box["error"] = describe(e)
        box["seconds"] = round(time.perf_counter() - t0, 3)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(PROBE_LIMIT)
    if thread.is_alive():
        box["hang"] = PROBE_LIMIT
    report("again", from_watchdog=from_watchdog, **box)  # from the watchdog's thread, if so


# --- scenarios -----------------------------------------------------------------------

KINDS = {"1": "raise", "2": "exit", "3": "segfault", "4": "sigkill", "5": "hang"}


def run_map_scenario(scenario: str, lib: Library, variant: str) -> None:
    """Scenarios 1-7 (and the 'same pool' probe of 10)."""
    xs: list[Any] = list(range(N_TASKS))
    fn: Callable[[Any], Any] = functools.partial(task, KINDS.get(scenario, "none"))
    if scenario == "6":
        xs[BAD] = threading.Lock()
    if scenario == "7":
        fn = lambda x: x * x  # noqa: E731  (the point of the scenario)
    dog = Watchdog(lib)
    with dog.phase("open", 30):
        lib.open(timeout=TIMEOUT if scenario == "5" else None)
    report("opened", children=descendants())

    with dog.phase("map", MAP_LIMIT):
        t0 = time.perf_counter()
        try:
            if variant == "salvage":
                errors = lib.salvage(fn, xs, dog.progress)
                good = len(set(map(repr, dog.progress)) & {repr(expected(x)) for x in xs})
                report("map", ok=True, salvaged=good, errors=errors, total=len(xs))
            else:
                run = lib.map_with_timeout if scenario == "5" else lib.map
                results = run(fn, xs)
                correct = results == [expected(x) for x in xs]
                report("map", ok=True, correct=correct)
        except BaseException as e:
            report("map", ok=False, error=describe(e))
        report("map_seconds", seconds=round(time.perf_counter() - t0, 3))

    time.sleep(0.5)  # a stopped worker has a moment to go
    report("misbehaving_worker", alive=pid_alive(misbehaving_pid()), children=descendants())
    if variant != "salvage":
        dog.probed = True
        with dog.phase("again", PROBE_LIMIT + 1):
            probe_pool(lib)
    with dog.phase("close", PHASE_LIMIT):
        t0 = time.perf_counter()
        lib.close()
        report("closed", seconds=round(time.perf_counter() - t0, 3))
    report("done")


def run_long_map(lib: Library) -> None:
    """Scenarios 8 and 9: a map of long tasks; the driver signals once 'running' is out."""
    lib.open()
    report("opened", children=descendants())

    def tell_running() -> None:
        time.sleep(1.0)
        report("running", children=descendants())

    threading.Thread(target=tell_running, daemon=True).start()
    try:
        lib.map(long_task, list(range(N_TASKS)))
    finally:
        report("closing")
        lib.close()
        report("closed")


def main() -> None:
    scenario, name = sys.argv[1], sys.argv[2]
    variant = sys.argv[3] if len(sys.argv) > 3 else "plain"
    lib = LIBRARIES[name]()
    report("start", pid=os.getpid(), python=sys.version.split()[0])
    if scenario in ("8", "9"):
        run_long_map(lib)
    else:
        run_map_scenario(scenario, lib, variant)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reliability_child  # the tasks must be pickled by this name, not ``__main__``

    reliability_child.main()
