"""Module-level task functions shared by the compatibility tests.

They live in an importable module (not in the test files) so that the reference
implementations, ``multiprocessing.Pool`` and ``ProcessPoolExecutor``, can pickle them
by reference, also for workers started with ``spawn`` or ``forkserver``.
"""

from __future__ import annotations

import os
import time
from typing import Any

# Set by ``init_worker`` in each worker process; read back by ``read_worker_value``.
WORKER_VALUE: Any = None


class CustomError(Exception):
    """An exception type the standard library does not know about."""


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def add3(a: int, b: int, c: int) -> int:
    return a + b + c


def describe(a: Any, b: Any = None, *, c: Any = None) -> tuple[Any, Any, Any]:
    return (a, b, c)


def sleep_return(value: Any, delay: float) -> Any:
    """Return ``value`` after ``delay`` seconds (a deliberately slow task)."""
    time.sleep(delay)
    return value


def sleep_square(x: int, delay: float) -> int:
    time.sleep(delay)
    return x * x


def slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


def fail_on(x: int, bad: int = 3) -> int:
    """``x * x``, except for ``bad``, which raises ValueError."""
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x * x


# Each kind of error the compatibility tests raise in a worker, with its message.
ERRORS = [
    ("ValueError", "bad value"),
    ("KeyError", "missing"),
    ("ZeroDivisionError", "divided"),
    ("TypeError", "wrong type"),
    ("CustomError", "custom"),
]
ERROR_TYPES: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "ZeroDivisionError": ZeroDivisionError,
    "TypeError": TypeError,
    "CustomError": CustomError,
}


def raise_error(kind: str, message: str) -> None:
    """Raise an exception of the named kind with ``message``."""
    raise ERROR_TYPES[kind](message)


def raise_error_item(item: tuple[str, str]) -> None:
    raise_error(*item)


def init_worker(value: Any) -> None:
    global WORKER_VALUE
    WORKER_VALUE = value


def read_worker_value(_: Any = None) -> Any:
    return WORKER_VALUE


def get_pid(_: Any = None) -> int:
    return os.getpid()


def wait_for_gate(gate: Any, started: Any, value: Any, limit: float = 30.0) -> Any:
    """Report ``value`` on ``started`` (a Manager Queue), then block until ``gate`` (a
    Manager Event) is set, at most ``limit`` seconds."""
    started.put(value)
    if not gate.wait(limit):
        raise TimeoutError("the gate was never opened")
    return value


# The situations of the error table (docs/guide/errors.md), as tasks and arguments.
class ReduceRaises:
    """An argument whose pickling raises RuntimeError (from ``__reduce__``)."""

    def __reduce__(self) -> Any:
        raise RuntimeError("cannot pickle this")


class UnpickleRaises:
    """An argument that pickles, but whose unpickling raises in the other process."""

    def __reduce__(self) -> Any:
        return (raise_error, ("ValueError", "cannot unpickle this"))


def identity(x: Any) -> Any:
    return x


def exit_now(code: int = 3) -> None:
    """Ends the worker process at once, as a crash in C code would."""
    os._exit(code)


def sys_exit(code: int = 4) -> None:
    raise SystemExit(code)


def unpicklable_result(_: Any = None) -> Any:
    """A result no pickler can send back: a lock."""
    import threading

    return threading.Lock()


class Box:
    """A fresh object per call: a result that only the caller holds."""


def make_box(_: Any = None) -> Box:
    return Box()
