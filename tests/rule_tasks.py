"""Task functions for the behaviour table (test_task_rules.py): module-level, so that
every backend's workers import them. Each counts its attempts in a file, one line per
run, so that a test can tell how often a task ran whatever process ran it."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import corepool


def _attempt(path: str) -> int:
    """Count this run in ``path``; its number (1 for the first run)."""
    with open(path, "a+") as f:
        f.seek(0)
        count = len(f.read().split())
        f.write(f"{os.getpid()}\n")
    return count + 1


def attempts(path: str) -> int:
    """How many times the task that counts in ``path`` ran."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.read().split())


def slow_first(path: str, seconds: float) -> int:
    """Overrun on the first run (sleep ``seconds``), return at once on the next ones."""
    attempt = _attempt(path)
    if attempt == 1:
        time.sleep(seconds)
    return attempt


def crash_twice(path: str, x: int, bad: int) -> int:
    """Kill the process running it, on the first two runs of input ``bad``."""
    if x == bad and _attempt(path) <= 2:
        os._exit(9)
    return x


def raise_serialization_error(path: str) -> int:
    _attempt(path)
    raise corepool.SerializationError("this input can never be read")


def unpicklable_result(path: str) -> Any:
    _attempt(path)
    return threading.Lock()


class Box:
    """An object holding a value in an attribute (pickled with its ``__dict__``)."""

    def __init__(self, inside: Any) -> None:
        self.inside = inside


def dig(box: Box) -> Any:
    """The value at the bottom of ``Box([[...[value]...]])``: what the task received."""
    found = box.inside
    while isinstance(found, list):
        found = found[0]
    return found
