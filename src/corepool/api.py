"""``corepool.map / imap / starmap`` on a reusable default pool.

The first call starts a pool; later calls reuse it, so they pay no start-up. A call
that asks for another number of workers, another backend or another cluster
(``address`` / ``client``) starts a new default pool, and the old one is *retired*:
stopped at once if no call is using it, else when the last call using it finishes,
so that threads calling with different options never break each other's calls.
Every default pool is stopped when the program exits (the ``atexit`` hook, and the
fork hook that gives a forked child a registry of its own, are registered when a
pool starts, not at import).

A call made inside a corepool task is *nested* (:mod:`corepool.nesting` has the
rule): with no ``backend=`` it runs on threads or serially. One made from a task of
the thread or serial backend gets a pool of its own for the call, so it can never
wait behind the pool whose thread runs it.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._tasks.job import Piece
from ._tasks.styles import CallStyle
from .backends import resolve_backend_name
from .core import PoolCore
from .cpus import blas_thread_limit
from .nesting import default_workers, in_thread_task, inner_default
from .options import check_on_error, check_workers

__all__ = ["imap", "map", "shutdown_default_pool", "starmap"]


class _Lease:
    """A pool that one call uses; :meth:`release` once, when the call is over."""

    __slots__ = ("_entry", "core")

    def __init__(self, entry: _Entry) -> None:
        self._entry: _Entry | None = entry
        self.core = entry.core

    def release(self) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            entry.release()


class _Entry:
    """A default pool, the calls using it, and whether a newer one has replaced it."""

    __slots__ = ("core", "key", "retired", "users")

    def __init__(self, key: tuple[Any, ...], core: PoolCore, retired: bool = False) -> None:
        self.key = key
        self.core = core
        self.retired = retired  # stopped when its last user is done
        self.users = 0

    def release(self) -> None:
        with _lock:
            self.users -= 1
            stop = self.retired and self.users == 0
            if stop:
                _retired.discard(self)
        if stop:
            self.core.terminate()


# Reentrant: a dropped imap gives its lease back from a garbage-collector callback,
# which may run in a thread that holds the lock already.
_lock = threading.RLock()
_current: _Entry | None = None
_retired: set[_Entry] = set()  # replaced while calls still use them
_hooks_registered = False


def _reset_after_fork() -> None:
    """A forked child owns none of its parent's pools (a worker forked while this
    module's lock was held would otherwise wait for it forever)."""
    global _lock, _current
    _lock = threading.RLock()
    _current = None
    _retired.clear()


def _lease(
    workers: int | None, backend: str | None, address: str | None = None, client: Any = None
) -> _Lease:
    """The pool for a call with these options, held until the lease is released."""
    global _current, _hooks_registered
    workers = check_workers(workers)
    private = in_thread_task()
    nested = inner_default(workers) if backend is None else None
    if nested is not None:
        backend, workers = nested
    # The client by identity: another Client object is another cluster connection.
    key = (workers or default_workers(), resolve_backend_name(backend), address, id(client), client)
    if private:  # this call's own pool, stopped when it ends
        own = _Entry(key, _start(key), retired=True)
        own.users = 1
        return _Lease(own)
    stale: _Entry | None = None
    with _lock:
        if not _hooks_registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_reset_after_fork)  # before the first fork
            _hooks_registered = True
        entry = _current
        if entry is None or entry.key[:4] != key[:4] or entry.core.closed:
            stale = _current
            entry = _current = _Entry(key, _start(key))
            # Exit handlers run last-registered first: ours must stop the pool before
            # the handlers its backend registered (Dask's) tear the cluster down.
            atexit.unregister(_stop_all)
            atexit.register(_stop_all)
            if stale is not None:
                stale.retired = True
                if stale.users:
                    _retired.add(stale)
                    stale = None
        entry.users += 1
    if stale is not None:
        stale.core.terminate()
    return _Lease(entry)


def _start(key: tuple[Any, ...]) -> PoolCore:
    workers, backend, address, _, client = key
    return PoolCore(
        workers,
        backend,
        address=address,
        client=client,
        thread_limit=blas_thread_limit("auto", workers),  # as a Pool's default
    )


def _default_pool(
    workers: int | None, backend: str | None, address: str | None = None, client: Any = None
) -> PoolCore:
    """The default pool that a call with these options would use now."""
    lease = _lease(workers, backend, address, client)
    lease.release()
    return lease.core


def shutdown_default_pool() -> None:
    """Stop the default pool behind ``corepool.map`` (it restarts on the next call).

    A call still using it keeps it until that call finishes.

    Examples:
        >>> import corepool
        >>> from corepool.api import shutdown_default_pool
        >>> shutdown_default_pool()
        >>> corepool.map(abs, [-1], workers=2)  # starts a new default pool
        [1]
    """
    global _current
    with _lock:
        entry, _current = _current, None
        if entry is not None:
            entry.retired = True
            if entry.users:
                _retired.add(entry)
                entry = None
    if entry is not None:
        entry.core.terminate()


def _stop_all() -> None:
    """At exit: every default pool, in use or not."""
    global _current
    with _lock:
        entries = _retired.copy()
        if _current is not None:
            entries.add(_current)
        _current = None
        _retired.clear()
    for entry in entries:
        entry.core.terminate()


def _run(
    style: CallStyle,
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
) -> tuple[_Lease, Iterator[Piece]]:
    """Start ``fn`` over ``iterable`` on a default pool, leased for the call; the public
    functions pass their own arguments through (``**locals()``), so their signatures
    stay explicit."""
    check_on_error(on_error)
    lease = _lease(workers, backend, address, client)
    try:
        core = lease.core
        job = core.stream_job(
            fn,
            iterable,
            style,
            chunksize=chunksize,
            timeout=timeout,
            retries=retries,
            retry_on=retry_on,
        )
    except BaseException:
        lease.release()
        raise
    pieces = core.pieces(
        job, ordered=ordered, progress=progress, iterable=iterable, keeps_all=keeps_all
    )
    return lease, pieces


def _collect(started: tuple[_Lease, Iterator[Piece]], on_error: str) -> list[Any]:
    lease, pieces = started
    try:
        return lease.core.collect(pieces, on_error)
    finally:
        lease.release()


def _iterate(started: tuple[_Lease, Iterator[Piece]], on_error: str) -> Iterator[Any]:
    lease, pieces = started
    values = _values(lease, lease.core.values(pieces, on_error))
    # An iterator dropped before its first value never runs its ``finally``.
    weakref.finalize(values, lease.release)
    return values


def _values(lease: _Lease, values: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from values
    finally:
        lease.release()


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
    return _collect(_run(CallStyle.SINGLE, **locals()), on_error)


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
    return _collect(_run(CallStyle.STAR, **locals()), on_error)


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
    return _iterate(_run(CallStyle.SINGLE, keeps_all=False, **locals()), on_error)
