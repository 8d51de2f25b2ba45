"""Lambdas, closures and unpicklable arguments: what multiprocessing refuses, and corepool.

``multiprocessing`` pickles a function by its importable name, so a lambda or a
function defined inside another function cannot be sent to a worker. corepool sends
functions with cloudpickle (by value). An argument that cannot be pickled at all (a
lock, an open socket) fails in both; corepool says which task and lets the rest finish.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable

import corepool


# --8<-- [start:setup]
def make_scaler(factor: int) -> Callable[[int], int]:
    def scale(x: int) -> int:
        return x * factor  # a closure: `factor` lives in the enclosing call

    return scale


def describe(x: object) -> str:
    return type(x).__name__


# --8<-- [end:setup]


def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def main() -> None:
    inputs = [1, 2, 3]
    # --8<-- [start:stdlib]
    with multiprocessing.Pool(2) as pool:
        for label, fn in [("lambda", lambda x: x + 1), ("closure", make_scaler(10))]:
            try:
                pool.map(fn, inputs)
            except Exception as error:
                print(f"multiprocessing, {label}: {first_line(error)}")
        try:
            pool.map(describe, [1, threading.Lock(), 3])
        except Exception as error:
            print(f"multiprocessing, a Lock as input: {first_line(error)}")
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    print("corepool, lambda:", corepool.map(lambda x: x + 1, inputs, workers=2))
    print("corepool, closure:", corepool.map(make_scaler(10), inputs, workers=2))
    results = corepool.map(describe, [1, threading.Lock(), 3], workers=2, on_error="return")
    print("corepool, a Lock as input, on_error='return':")
    for result in results:
        print("   ", first_line(result) if isinstance(result, BaseException) else result)
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
