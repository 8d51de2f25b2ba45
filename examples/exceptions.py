"""Exceptions raised in workers: remote tracebacks, which input failed, and an
exception class that multiprocessing cannot bring back.

An exception is pickled in the worker and re-created in the parent by calling its
class with ``self.args``. A class whose ``__init__`` takes other arguments than it
passes to ``Exception`` cannot be re-created: in ``multiprocessing.Pool`` that kills
the thread that collects results, and the map never returns.
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback

import corepool


# --8<-- [start:setup]
class OutOfRange(Exception):
    def __init__(self, value: int, limit: int) -> None:
        super().__init__(f"{value} is above {limit}")  # args are not (value, limit)
        self.value, self.limit = value, limit


def parse(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


def check(x: int) -> int:
    if x == 3:
        raise OutOfRange(x, 2)
    return x


# --8<-- [end:setup]


def quiet_thread_death(args: threading.ExceptHookArgs) -> None:
    thread = args.thread.name if args.thread else "?"
    print(f"  (thread {thread} died: {args.exc_type.__name__}: {args.exc_value})")


def main() -> None:
    # --8<-- [start:stdlib]
    with multiprocessing.Pool(2) as pool:
        try:
            pool.map(parse, range(6))
        except ValueError as error:
            print(f"multiprocessing: {type(error).__name__}: {error}")
            print(f"  cause: {type(error.__cause__).__name__}; which input? not said")

    threading.excepthook = quiet_thread_death  # print one line instead of a traceback
    pool = multiprocessing.Pool(2)
    try:
        pool.map_async(check, range(6)).get(timeout=2)
    except multiprocessing.TimeoutError:
        print("multiprocessing: OutOfRange(value, limit): no result after 2 s (forever)")
    try:
        pool.terminate()
    except AssertionError as error:
        print(f"  and terminate() fails: AssertionError: {error}")
    threading.excepthook = threading.__excepthook__
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    try:
        corepool.map(parse, range(6), workers=2)
    except ValueError as error:  # the task's own exception type
        print("corepool:")
        print("".join(traceback.format_exception(error)).rstrip())  # what Python prints
        print("the note, as data:", getattr(error, "__notes__", None))

    try:
        corepool.map(check, range(6), workers=2)
    except corepool.TaskError as error:  # could not be re-created: a TaskError instead
        print(f"corepool, OutOfRange(value, limit): TaskError: {error}")
        print(
            f"  type_name={error.type_name!r}; traceback_text ends with: "
            f"{error.traceback_text.strip().splitlines()[-1]!r}"
        )

    try:
        corepool.map(parse, range(6), backend="serial")  # or COREPOOL_BACKEND=serial
    except ValueError as error:
        frames = traceback.extract_tb(error.__traceback__)
        print(
            f"corepool, backend='serial': a plain local traceback, "
            f"{len(frames)} frames, the last in {frames[-1].name}()"
        )
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
