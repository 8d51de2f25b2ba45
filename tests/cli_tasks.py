"""Task functions for the ``corepool run`` tests (imported by name and by file path)."""

from __future__ import annotations

import os
import time
from typing import Any


def square(x: int) -> int:
    """x squared."""
    return x * x


def add(a: int, b: int = 0) -> int:
    """a + b (for --star and --kwargs)."""
    return a + b


def logged(x: int, log: str, delay: float = 0.0) -> int:
    """Append ``x`` to the file ``log`` (counts executions), wait ``delay``, return 2x."""
    with open(log, "a") as f:
        f.write(f"{x}\n")
    if delay:
        time.sleep(delay)
    return 2 * x


def troubled(x: Any) -> Any:
    """Raises, hangs, crashes its worker, or returns something that is not JSON."""
    if x == "raise":
        raise ValueError(f"bad input {x}")
    if x == "hang":
        time.sleep(60)
    if x == "crash":
        os._exit(3)
    if x == "object":
        return object()
    return x


def fail_odd(x: int) -> int:
    """Fails on odd numbers."""
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def flaky(x: int, flag: str) -> int:
    """Fails while the file ``flag`` exists, else returns x."""
    if os.path.exists(flag):
        raise RuntimeError(f"flag set for {x}")
    return x


def paced(x: int, delay: float) -> int:
    """Waits ``delay``; fails on numbers ending in 3, else returns x."""
    time.sleep(delay)
    if x % 10 == 3:
        raise ValueError(f"ends in 3: {x}")
    return x


def length(text: str) -> int:
    """The length of a string."""
    return len(text)


def mul(a: int, b: int) -> int:
    """a * b: needs two arguments (for the --star hint)."""
    return a * b


def padded(x: int) -> str:
    """A 500-character result (fills a small disk quickly)."""
    return f"{x:>500}"


def zero_waits(x: int, log: str) -> int:
    """Append ``x`` to the file ``log``; 0 waits a minute (holds a worker), others return x."""
    with open(log, "a") as f:
        f.write(f"{x}\n")
    if x == 0:
        time.sleep(60)
    return x
