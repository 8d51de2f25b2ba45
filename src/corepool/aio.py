"""asyncio faces: ``await corepool.amap(...)`` and ``async for r in corepool.aimap(...)``.

The tasks run on a pool as for :func:`corepool.map`; a helper thread waits for their
results and hands them to the event loop, so the loop never blocks (on the serial
backend the tasks themselves run in that thread). Cancelling the task that awaits
``amap`` (or iterates ``aimap``) drops the tasks that have not started and stops the
running ones: on the process backend their workers are stopped and replaced, within
the kill grace of half a second. The thread backend cannot stop a running thread, nor
Dask a running task: those finish in the background and their results are dropped (the
thread backend starts fresh threads in their place at once; on Dask the chunks still
queued on the cluster are cancelled there). Leaving an
``async for`` early (``break``) only drops what has not started, as leaving
:func:`corepool.imap` does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Any

from ._tasks.job import Piece, StreamJob
from ._tasks.styles import CallStyle
from .core import ON_ERROR_CHOICES, PoolCore
from .errors import CorepoolError

__all__ = ["aimap", "amap", "core_aimap", "core_amap"]

_AHEAD = 2  # pieces handed to the loop and not yet consumed (bounds aimap's memory)
_END = object()


class _Relay:
    """A thread that reads a job's pieces and passes them to the event loop."""

    def __init__(self, core: PoolCore, job: StreamJob, pieces: Iterator[Piece]) -> None:
        self.core = core
        self.job = job
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.gate = threading.Semaphore(_AHEAD)
        self.stopped = False
        self.thread = threading.Thread(
            target=self._pump, args=(pieces,), name="corepool-aio", daemon=True
        )
        self.thread.start()

    def _hand(self, item: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody waits any more
            return False
        return True

    def _pump(self, pieces: Iterator[Piece]) -> None:
        try:
            for piece in pieces:
                self.gate.acquire()
                if self.stopped or not self._hand(piece):
                    return
        except BaseException as exc:
            if not self.stopped:
                self._hand(exc)
            return
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        self._hand(_END)

    async def pieces(self) -> AsyncGenerator[Piece, None]:
        finished = False
        try:
            while True:
                item = await self.queue.get()
                self.gate.release()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        except asyncio.CancelledError:
            self.stop(running_too=True)
            raise
        finally:
            if not finished:
                self.stop(running_too=False)

    def stop(self, running_too: bool) -> None:
        """Nobody wants the results: drop what has not started (and stop what runs)."""
        if self.stopped:
            return
        self.stopped = True
        if running_too:
            self.core.backend.stop_job(self.job)
        else:
            self.job.cancel()
        # Wake the thread wherever it waits: for the next piece, or for room.
        self.job.fail(CorepoolError("the asyncio caller stopped waiting for these results"))
        self.gate.release()


def _start(
    core: PoolCore,
    fn: Callable[..., Any],
    iterable: Iterable[Any],
    keeps_all: bool,
    *,
    chunksize: int | None = None,
    ordered: bool = True,
    timeout: float | None = None,
    retries: int | None = None,
    on_error: str = "raise",
    progress: Any = False,
    retry_on: tuple[type[BaseException], ...] | None = None,
) -> _Relay:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}; got {on_error!r}")
    job = core.stream_job(
        fn,
        iterable,
        CallStyle.SINGLE,
        chunksize=chunksize,
        timeout=timeout,
        retries=retries,
        retry_on=retry_on,
    )
    pieces = core.pieces(
        job, ordered=ordered, progress=progress, iterable=iterable, keeps_all=keeps_all
    )
    return _Relay(core, job, pieces)


async def core_amap(
    core: PoolCore, fn: Callable[..., Any], iterable: Iterable[Any], **options: Any
) -> list[Any]:
    """:func:`amap` on a given pool's core (what ``Pool.amap`` calls); ``retries``
    and ``timeout`` left out are the pool's."""
    relay = _start(core, fn, iterable, True, **options)
    on_error = options.get("on_error", "raise")
    out: list[Any] = []
    pieces = relay.pieces()
    try:
        async for piece in pieces:
            out.extend(core.collect(iter([piece]), on_error))
    finally:
        await pieces.aclose()
    return out


async def core_aimap(
    core: PoolCore, fn: Callable[..., Any], iterable: Iterable[Any], **options: Any
) -> AsyncGenerator[Any, None]:
    """:func:`aimap` on a given pool's core (what ``Pool.aimap`` calls)."""
    relay = _start(core, fn, iterable, False, **options)
    on_error = options.get("on_error", "raise")
    pieces = relay.pieces()
    try:
        async for piece in pieces:
            for value in core.values(iter([piece]), on_error):
                yield value
    finally:
        await pieces.aclose()


def _on_default_pool(options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A lease on the default pool of ``corepool.map`` for a call's options (checked as
    api checks them), and the options that are the call's own; the public functions
    pass ``locals()``. The caller releases the lease when the call is over."""
    from .api import _lease
    from .options import check_on_error

    options = dict(options)
    pool = [options.pop(name) for name in ("workers", "backend", "address", "client")]
    check_on_error(options["on_error"])
    return _lease(*pool), options


async def amap(
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
    """``await``-able :func:`corepool.map`: the results, without blocking the event loop.

    Options as for :func:`corepool.map`. Cancelling the awaiting task drops the tasks not
    started and stops the running ones (their workers are replaced).

    Examples:
        >>> import asyncio, corepool
        >>> asyncio.run(corepool.amap(abs, [-1, 2, -3], workers=2))
        [1, 2, 3]
    """
    lease, options = _on_default_pool(locals())
    try:
        return await core_amap(lease.core, **options)
    finally:
        lease.release()


async def aimap(
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
) -> AsyncGenerator[Any, None]:
    """``async for`` over :func:`corepool.imap`'s results, read lazily, in bounded memory.

    Options as for :func:`amap`. Leaving the loop early drops the tasks not started;
    cancelling the iterating task also stops the running ones.

    Examples:
        >>> import asyncio, corepool
        >>> async def main():
        ...     return [r async for r in corepool.aimap(abs, [-1, -2], workers=2)]
        >>> asyncio.run(main())
        [1, 2]
    """
    lease, options = _on_default_pool(locals())
    results = core_aimap(lease.core, **options)
    try:
        async for value in results:
            yield value
    finally:
        try:
            await results.aclose()
        finally:
            lease.release()
