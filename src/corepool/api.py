"""``corepool.map / imap / starmap`` on a reusable default pool.

The first call starts a pool; later calls reuse it, so they pay no start-up. It is
restarted only when a call asks for another number of workers, another backend or
another cluster (``address`` / ``client``),
and it is shut down when the program exits (the ``atexit`` hook is registered when
the first pool starts, not at import).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._engine import protocol as p
from .backends import resolve_backend_name
from .core import ON_ERROR_CHOICES, PoolCore
from .cpus import cpu_count
from .pool import Pool

__all__ = ["imap", "map", "shutdown_default_pool", "starmap"]

_lock = threading.Lock()
_default: tuple[tuple[Any, ...], Pool] | None = None
_atexit_registered = False


def _default_pool(
    workers: int | None, backend: str | None, address: str | None = None, client: Any = None
) -> Pool:
    global _default, _atexit_registered
    # The client by identity: another Client object is another cluster connection.
    key = (workers or cpu_count(), resolve_backend_name(backend), address, id(client), client)
    with _lock:
        if _default is not None:
            old_key, pool = _default
            if old_key[:4] == key[:4] and not pool._core.closed:
                return pool
            pool.terminate()
            _default = None
        pool = Pool(key[0], backend=key[1], address=address, client=client)
        _default = (key, pool)
        if not _atexit_registered:
            atexit.register(shutdown_default_pool)
            _atexit_registered = True
        return pool


def shutdown_default_pool() -> None:
    """Stop the default pool behind ``corepool.map`` (it restarts on the next call).

    Examples:
        >>> import corepool
        >>> from corepool.api import shutdown_default_pool
        >>> shutdown_default_pool()
        >>> corepool.map(abs, [-1], workers=2)  # starts a new default pool
        [1]
    """
    global _default
    with _lock:
        if _default is not None:
            _default[1].terminate()
            _default = None


def _check(on_error: str, workers: int | None) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}; got {on_error!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")


def _run(
    style: int,
    *,
    fn: Callable[..., Any],
    iterable: Iterable[Any],
    workers: int | None,
    chunksize: int | None,
    ordered: bool,
    timeout: float | None,
    retries: int,
    on_error: str,
    progress: Any,
    backend: str | None,
    retry_on: tuple[type[BaseException], ...] | None,
    address: str | None = None,
    client: Any = None,
    keeps_all: bool = True,
) -> tuple[PoolCore, Iterator[Any]]:
    """Start ``fn`` over ``iterable`` on the default pool; the public functions pass their
    own arguments through (``**locals()``), so their signatures stay explicit."""
    _check(on_error, workers)
    core = _default_pool(workers, backend, address, client)._core
    job = core.stream_job(
        fn,
        iterable,
        style,
        chunksize=chunksize,
        timeout=timeout,
        retries=retries,
        retry_on=retry_on,
    )
    return core, core.pieces(
        job, ordered=ordered, progress=progress, iterable=iterable, keeps_all=keeps_all
    )


def map(
    fn: Callable[..., Any],
    iterable: Iterable[Any],
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    timeout: float | None = None,
    retries: int = 0,
    on_error: str = "raise",
    progress: Any = False,
    backend: str | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    address: str | None = None,
    client: Any = None,
) -> list[Any]:
    """``[fn(x) for x in iterable]`` on every core; see the guide for each option.

    ``on_error``: ``"raise"`` the first failure in input order, ``"return"`` exception
    objects in place of results, or ``"skip"`` them. ``timeout`` stops a task (and its
    worker) after that many seconds; ``retries`` re-runs failed tasks.
    ``address`` (a scheduler address) or ``client`` (a ``distributed.Client``) says
    which cluster ``backend="dask"`` runs on, ``address`` which Ray ``backend="ray"``
    joins; with another backend they are a ValueError.

    Examples:
        >>> import corepool
        >>> corepool.map(abs, [-1, 2, -3], workers=2)
        [1, 2, 3]
        >>> corepool.map(lambda x: 10 // x, [5, 0, 2], workers=2, on_error="return")
        [2, ZeroDivisionError('integer division or modulo by zero'), 5]
    """
    core, pieces = _run(p.SINGLE, **locals())
    return core.collect(pieces, on_error)


def starmap(
    fn: Callable[..., Any],
    iterable: Iterable[Iterable[Any]],
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    timeout: float | None = None,
    retries: int = 0,
    on_error: str = "raise",
    progress: Any = False,
    backend: str | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    address: str | None = None,
    client: Any = None,
) -> list[Any]:
    """``[fn(*args) for args in iterable]`` on every core; options as for :func:`map`.

    Examples:
        >>> import corepool
        >>> corepool.starmap(pow, [(2, 3), (3, 2)], workers=2)
        [8, 9]
    """
    core, pieces = _run(p.STAR, **locals())
    return core.collect(pieces, on_error)


def imap(
    fn: Callable[..., Any],
    iterable: Iterable[Any],
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    ordered: bool = True,
    timeout: float | None = None,
    retries: int = 0,
    on_error: str = "raise",
    progress: Any = False,
    backend: str | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    address: str | None = None,
    client: Any = None,
) -> Iterator[Any]:
    """Lazy :func:`map`: reads the input as results are consumed, in bounded memory.

    Works on endless generators; the first result arrives after the first task.
    Options as for :func:`map` (``address`` / ``client`` for the cluster backends).

    Examples:
        >>> import corepool, itertools
        >>> results = corepool.imap(abs, itertools.count(-3), workers=2)
        >>> [next(results) for _ in range(4)]
        [3, 2, 1, 0]
    """
    # Lazy: results wait for the consumer, and the window bounds how many.
    core, pieces = _run(p.SINGLE, keeps_all=False, **locals())
    return core.values(pieces, on_error)
