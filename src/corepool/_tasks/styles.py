"""How a task's input is applied to the job's function."""

from __future__ import annotations

import enum

__all__ = ["CallStyle"]


class CallStyle(enum.IntEnum):
    """The three ways a job calls its function on one input ``x``."""

    SINGLE = 0  # fn(x): map, imap, submit of one argument
    STAR = 1  # fn(*x): starmap
    CALL = 2  # fn(*args, **kwargs), with x == (args, kwargs): apply, submit
