"""``corepool.get_context()``: the multiprocessing context corepool's workers use."""

from __future__ import annotations

from multiprocessing.context import BaseContext

from ._engine.engine import resolve_context

__all__ = ["get_context"]


def get_context(start_method: str | None = None) -> BaseContext:
    """The multiprocessing context for Queue, Pipe, Lock, Value, Array and Manager objects
    handed to corepool's workers (through ``initargs`` or task arguments).

    Objects made from another context may not cross into the workers (a ``fork``
    Lock cannot be sent to a ``forkserver`` worker); objects from this one can.

    >>> import corepool
    >>> ctx = corepool.get_context()
    >>> counter = ctx.Value("i", 0)
    """
    return resolve_context(None, start_method)
