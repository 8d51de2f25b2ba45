"""``corepool.get_context()``: the multiprocessing context corepool's workers use."""

from __future__ import annotations

from multiprocessing.context import BaseContext

from .backends.process import resolve_context

__all__ = ["get_context"]


def get_context(start_method: str | None = None) -> BaseContext:
    """The multiprocessing context corepool starts its workers with (``forkserver`` on
    Linux unless ``start_method`` says otherwise).

    ``Value``, ``Array``, ``Lock``, ``Queue`` and ``Event`` made from it can be handed
    to corepool's workers through a pool's ``initargs``, as with
    ``multiprocessing.Pool``: they are shared-memory objects that a process can only
    inherit when it starts, so, as there, not as task arguments. A ``Manager`` made
    from it gives proxies (``manager.Value``, ``manager.Lock``, ``manager.dict``,
    ``manager.Queue``...) that can go anywhere, initargs and task arguments alike.

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
