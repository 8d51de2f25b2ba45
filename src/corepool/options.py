"""The one place where the options shared by every face and backend are checked.

``map`` / ``imap`` / ``starmap``, :class:`~corepool.Pool`, :class:`~corepool.Executor`
and the batch runner all pass ``workers``, ``timeout`` and ``retries`` through here
(through :class:`~corepool.core.PoolCore`), so a bad value fails the same way, before
anything starts, with a message that says what to write instead.

The rules (also in docs/guide/map.md):

- ``workers``: a whole number, 1 or more (``True`` and ``2.5`` are refused). On the
  process backend, more than :data:`PROCESSES_PER_CPU` times the usable CPUs gives a
  :class:`RuntimeWarning`: every worker is a process with its own memory.
- ``timeout`` / ``task_timeout``: ``None`` or a number of seconds above 0 (an int or a
  float, not ``nan``). ``float("inf")``, and anything of :data:`NO_LIMIT` seconds or
  more, means no limit and is the same as ``None``.
- ``retries``: a whole number, 0 or more.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from typing import Any

__all__ = [
    "NO_LIMIT",
    "ON_ERROR_CHOICES",
    "PROCESSES_PER_CPU",
    "check_on_error",
    "check_retries",
    "check_timeout",
    "check_workers",
    "warn_many_processes",
]

ON_ERROR_CHOICES = ("raise", "return", "skip")

#: A timeout of this many seconds (about 31 years) or more is no timeout at all.
NO_LIMIT = 1e9

_NO_LIMIT_HINT = "for no limit leave it out (None) or give inf"

#: Process workers beyond this many per usable CPU draw a RuntimeWarning.
PROCESSES_PER_CPU = 4


class _DefaultBackend(str):
    """A face's ``backend="process"`` default, told apart from an explicit "process"."""

    __slots__ = ()


#: The default of the faces' ``backend=``: equal to "process", but not the user's own
#: "process", so the default alone gives way to nesting and ``$COREPOOL_BACKEND``.
DEFAULT_BACKEND = _DefaultBackend("process")


def explicit_backend(backend: str | None) -> str | None:
    """None for the faces' default backend (the default rules then apply), else the
    backend given, "process" included, which then wins over ``$COREPOOL_BACKEND``."""
    return None if backend is DEFAULT_BACKEND else backend


def _check_type(value: Any, kind: type, name: str, what: str) -> None:
    """TypeError unless ``value`` is a ``kind`` (never a bool, though bools are ints)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")


def check_timeout(value: Any, name: str = "timeout") -> float | None:
    """``value`` as a timeout in seconds, None for no limit; TypeError / ValueError
    saying what to write when it is not one.

    Examples:
        >>> check_timeout(2), check_timeout(float("inf")), check_timeout(None)
        (2.0, None, None)
    """
    if value is None:
        return None
    _check_type(value, numbers.Real, name, "a number of seconds (an int or a float) or None")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got nan; {_NO_LIMIT_HINT}")
    if seconds <= 0:
        raise ValueError(f"{name} must be more than 0 seconds, got {value!r}; {_NO_LIMIT_HINT}")
    return None if seconds >= NO_LIMIT else seconds


def check_workers(value: Any, name: str = "workers", too_few: str | None = None) -> int | None:
    """``value`` as a worker count (None stays None: the default); TypeError /
    ValueError saying what to write when it is not one (``too_few``: the ValueError's
    message, where the stdlib's own must be kept).

    Examples:
        >>> check_workers(4), check_workers(None)
        (4, None)
    """
    if value is None:
        return None
    _check_type(value, numbers.Integral, name, "a whole number of workers (an int) or None")
    if value < 1:
        raise ValueError(too_few or f"{name} must be at least 1, got {value!r}")
    return int(value)


def warn_many_processes(workers: int, cpus: int) -> None:
    """A RuntimeWarning when ``workers`` processes are far more than ``cpus`` can run."""
    if workers > PROCESSES_PER_CPU * cpus:
        warnings.warn(
            f"{workers} worker processes on {cpus} usable CPUs: each is a process with its "
            f"own memory, and more than {PROCESSES_PER_CPU} per CPU only adds start-up "
            "time and memory; use fewer workers, or backend='thread' for I/O-bound tasks",
            RuntimeWarning,
            stacklevel=_user_stacklevel(),
        )


def _user_stacklevel() -> int:
    """The stacklevel of the first frame outside corepool: the user's line."""
    package = os.path.dirname(__file__)
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def check_retries(value: Any) -> int:
    """``value`` as a retry count; TypeError / ValueError when it is not one."""
    _check_type(value, numbers.Integral, "retries", "a whole number (an int)")
    if value < 0:
        raise ValueError(f"retries must be 0 or more, got {value!r}")
    return int(value)


def check_on_error(value: Any) -> str:
    """``value`` if it is one of :data:`ON_ERROR_CHOICES`, else ValueError."""
    if value not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}; got {value!r}")
    return str(value)
