"""A user's program for the cluster tests, run the way users run theirs:
``python job.py KIND [ADDRESS]`` in a temporary directory that holds only this file
(as ``job.py``) and ``job_helpers.py``. Every function, class and exception it sends
is its own code, which the cluster's workers cannot import.

KIND: ``dask-address`` (a scheduler started on the command line), ``dask-local`` (a
LocalCluster corepool starts), ``ray-local`` (a Ray corepool starts), ``ray-address``
(a Ray started with ``ray start --head``). Each check prints ``ok <name>``; the run
ends with ``all ok`` and exit status 0.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import job_helpers

import corepool

OFFSET = 100
FACTOR = 0  # set on each worker by the initializer


class ScriptError(Exception):
    """An exception type defined in the script."""

    def __init__(self, value: int) -> None:
        super().__init__(f"bad value {value}")
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return ScriptError, (self.value,)


class Point:
    """A class defined in the script: its instances go out as inputs and come back."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def scaled(self, k: int) -> Point:
        return Point(self.x * k, self.y * k)


def square(x: int) -> int:
    return x * x


def where_am_i(_: object) -> tuple[bool, str | None, bool]:
    """Can this worker import the script's directory, whose __main__ does it run, and
    has it imported the helper module (rather than received it by value)?"""
    main = sys.modules.get("__main__")
    found = importlib.util.find_spec("job_helpers") is not None
    return found, getattr(main, "__file__", None), "job_helpers" in sys.modules


def fail_on_3(x: int) -> int:
    if x == 3:
        raise ScriptError(x)
    return x


def helper_cube(x: int) -> int:
    return job_helpers.cube(x)


def scale(point: Point) -> Point:
    return point.scaled(2)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def kill_my_worker(x: int) -> int:
    if x < 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def lazy_import(x: int) -> int:
    import job_helpers as helpers  # at run time, on the worker: not sent by value

    return helpers.cube(x)


def set_factor(factor: int) -> None:
    global FACTOR
    FACTOR = factor


def times_factor(x: int) -> int:
    return x * FACTOR


def look_up(args: tuple[job_helpers.Table, str]) -> int:
    table, key = args
    return table.lookup(key)


def naturals() -> Iterator[int]:
    yield from itertools.count()


def check(name: str, condition: bool, detail: object = "") -> None:
    if not condition:
        raise SystemExit(f"FAILED {name}: {detail}")
    # One write: Ray's log thread prints to stdout too, between a print's two writes.
    sys.stdout.write(f"ok {name}\n")
    sys.stdout.flush()


def main() -> None:
    kind = sys.argv[1]
    backend = kind.split("-")[0]
    options: dict[str, Any] = {"backend": backend, "workers": 2}
    if kind.endswith("-address"):
        options["address"] = sys.argv[2]

    can_import, their_main, _ = corepool.map(where_am_i, [0], **options)[0]
    print("workers import the script directory:", can_import, flush=True)
    print("workers' __main__:", their_main, flush=True)
    check("not-our-main", their_main != os.path.abspath(__file__) or kind == "dask-local")

    got = corepool.map(square, range(50), **options)
    check("ordered-map", got == [x * x for x in range(50)], got)

    results = corepool.imap(square, naturals(), **options)
    got = [next(results) for _ in range(30)]
    results.close()  # type: ignore[attr-defined]
    check("imap-generator", got == [x * x for x in range(30)], got)

    got = corepool.map(lambda x: x + OFFSET, range(5), **options)
    check("lambda", got == [100, 101, 102, 103, 104], got)

    got = corepool.map(scale, [Point(1, 2), Point(3, 4)], **options)
    check(
        "script-class",
        all(isinstance(p, Point) for p in got) and [(p.x, p.y) for p in got] == [(2, 4), (6, 8)],
        got,
    )

    got = corepool.map(helper_cube, range(4), **options)
    check("helper-module", got == [0, 1, 8, 27], got)
    if kind != "dask-local":  # whose workers import the script, and so job_helpers
        imported = [w[2] for w in corepool.map(where_am_i, range(4), chunksize=1, **options)]
        check("helpers-by-value", not any(imported), imported)

    try:
        corepool.map(fail_on_3, range(6), **options)
    except ScriptError as exc:
        notes = getattr(exc, "__notes__", [])
        check("script-exception", exc.value == 3 and any("task 3" in n for n in notes), notes)
    else:
        check("script-exception", False, "nothing raised")

    got = corepool.map(fail_on_3, range(6), on_error="return", **options)
    check(
        "on-error-return",
        got[:3] == [0, 1, 2] and isinstance(got[3], ScriptError) and got[4:] == [4, 5],
        got,
    )
    got = corepool.map(helper_cube, [1, -1, 2], on_error="return", **options)
    check("helper-exception", isinstance(got[1], job_helpers.HelperError), got)
    got = corepool.map(fail_on_3, range(6), on_error="skip", **options)
    check("on-error-skip", got == [0, 1, 2, 4, 5], got)

    began = time.monotonic()
    got = corepool.map(sleep_for, [0.0, 3.0], timeout=1.0, on_error="return", **options)
    took = time.monotonic() - began
    check(
        "timeout",
        got[0] == 0.0 and isinstance(got[1], corepool.TaskTimeout) and took < 2.9,
        (got, took),
    )

    got = corepool.map(kill_my_worker, [-1], on_error="return", chunksize=1, **options)
    check("killed-worker", isinstance(got[0], corepool.WorkerCrashed), got)
    got = corepool.map(square, range(10), **options)
    check("after-the-crash", got == [x * x for x in range(10)], got)

    table = corepool.shared(job_helpers.Table({"a": 1, "b": 2}))
    got = corepool.map(look_up, [(table, "a"), (table, "b")], **options)
    check("shared-script-object", got == [1, 2], got)

    if backend == "dask":  # the ray backend takes no initializer
        pool_options = {k: v for k, v in options.items() if k != "workers"}
        with corepool.Pool(2, set_factor, (7,), **pool_options) as pool:
            got = pool.map(times_factor, range(4))
        check("initializer-global", got == [0, 7, 14, 21], got)

    if kind != "dask-local":
        check_missing_modules(kind, options)

    corepool.api.shutdown_default_pool()
    print("all ok", flush=True)


def check_missing_modules(kind: str, options: dict[str, Any]) -> None:
    """A module the workers cannot import, which cannot go by value either, fails at
    once with an error that names it and says what to do."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "lib"))  # not the script's directory
    cases = [("missing-module", importlib.import_module("elsewhere_mod"))]
    if kind == "dask-address":  # on one machine Ray's workers import the script directory
        cases.append(("unpicklable-helper", importlib.import_module("job_locked")))
        got = corepool.map(lazy_import, [2], on_error="return", **options)
        check("lazy-import", isinstance(got[0], ModuleNotFoundError), got)
    for name, module in cases:
        try:
            corepool.map(module.work, [1], **options)
        except corepool.SerializationError as exc:
            message = str(exc)
            check(name, repr(module.__name__) in message and "install it" in message, message)
            if name == "unpicklable-helper":
                check("says-why", "could not go by value: TypeError: cannot pickle" in message)
        else:
            check(name, False, "no error")


if __name__ == "__main__":
    main()
