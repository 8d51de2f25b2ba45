"""``corepool.get_context()``: the multiprocessing context corepool's workers use."""

from __future__ import annotations

from multiprocessing.context import BaseContext

from ._engine.engine import resolve_context

__all__ = ["get_context"]


def get_context(start_method: str | None = None) -> BaseContext:
    """The multiprocessing context corepool starts its workers with (``forkserver`` on
    Linux unless ``start_method`` says otherwise).

    Make a ``Manager`` from it: its proxies (``manager.Value``, ``manager.Lock``,
    ``manager.dict``, ``manager.Queue``...) can be handed to corepool's workers through
    a pool's ``initargs`` or as task arguments. ``Value``, ``Array``, ``Lock`` and
    ``Queue`` made directly from the context are shared-memory objects that can only be
    inherited when a process starts; corepool sends ``initargs`` to a worker after it
    has started, so it raises :class:`~corepool.errors.SerializationError` for them.

    Examples:
        >>> import corepool
        >>> ctx = corepool.get_context()
        >>> with ctx.Manager() as manager:
        ...     table = manager.dict()
        ...     _ = corepool.starmap(table.__setitem__, [("a", 1), ("b", 2)], workers=2)
        ...     sorted(table.items())
        [('a', 1), ('b', 2)]
    """
    return resolve_context(None, start_method)
