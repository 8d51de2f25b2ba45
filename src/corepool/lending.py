"""Result segments reused: a worker lends the segment a large result was copied into,
and fills it again once the parent no longer maps it.

Filling a new shared-memory segment costs far more than the copy itself (the kernel
allocates and clears every page), which is why argument segments are reused
(:class:`~corepool.segments.SegmentPool`). Results travel the other way: the worker
fills a segment and the parent maps it, and the arrays built on that mapping are the
user's, for as long as the user keeps them. So the worker cannot know when it may
write there again; the parent tells it:

- the worker packs a result with a *tag* (:meth:`Lender.pack`), and after sending keeps
  that segment in its lent table instead of closing it;
- the parent watches the mapping of a tagged segment (:meth:`Returns.watch`); when the
  last array on it is gone, the mapping is collected and the tag goes back to the worker
  (the supervisor sends ``RESULTS_FREE``), which puts the segment in its pool;
- the next result of a similar size is copied into pages that exist already, through a
  mapping that exists already.

A worker keeps at most :data:`MAX_LENT` segments lent (past that the oldest is closed on
its side: the parent's mapping stays valid, and its tag, if it ever comes back, is
ignored) and at most ``max_bytes`` in its pool. A tag names one lending of one segment
by one worker process, so a tag from a worker that is gone never reaches another.
"""

from __future__ import annotations

import itertools
import mmap
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .segments import Segment, SegmentPool
from .sharedmem import Packed, pack

__all__ = ["MAX_LENT", "POOL_BYTES", "Lender", "Returns"]

MAX_LENT = 64  # segments a worker keeps lent to the parent, at most
POOL_BYTES = 256 << 20  # bytes of returned segments a worker keeps for reuse, at most


class Lender:
    """A worker's result segments: filled, lent to the parent, reused once returned."""

    def __init__(self, max_bytes: int = POOL_BYTES) -> None:
        self.pool = SegmentPool(max_segments=8, max_bytes=max_bytes)
        self._lent: OrderedDict[int, Segment] = OrderedDict()
        self._tags = itertools.count(1)

    def pack(self, obj: Any) -> bytes | Packed:
        """``obj`` packed for the parent, its large buffers in a tagged segment."""
        return pack(obj, self.pool, next(self._tags))

    def sent(self, packed: Packed) -> None:
        """``packed`` went to the parent: close the segment its buffers were copied
        into, or keep it until the parent returns it when it was lent. The other
        segments (a :func:`~corepool.sharedmem.zeros` array, a shared object) belong to
        objects this process still holds, which may be sent again."""
        copied, tag = packed.copied, packed.lend
        packed.pool = None  # dropping it must not put the segment back: the parent maps it
        if copied is None:
            return
        if tag is None:
            copied.close()
            return
        self._lent[tag] = copied
        while len(self._lent) > MAX_LENT:
            self._lent.popitem(last=False)[1].close()

    def returned(self, tags: list[int]) -> None:
        """The parent no longer maps these segments: they may be filled again."""
        for tag in tags:
            segment = self._lent.pop(tag, None)
            if segment is not None:
                self.pool.give(segment)

    @property
    def lent(self) -> int:
        """Segments lent and not returned yet."""
        return len(self._lent)


class Returns:
    """The parent's side: the tags of lent segments it no longer maps, by worker.

    ``wake`` (held weakly, so that arrays the user keeps do not keep the pool alive) is
    called, from whatever thread dropped the last array, when the first tag of a batch
    comes back; the supervisor then :meth:`take` s them and tells each worker.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = weakref.WeakMethod(wake)
        self._lock = threading.Lock()
        self._freed: list[tuple[int, int]] = []
        self._closed = False

    def watcher(self, pid: int) -> Callable[[int, mmap.mmap], None]:
        """What ``unpack(..., lent=)`` calls for a segment worker ``pid`` lent."""

        def watch(tag: int, mapping: mmap.mmap) -> None:
            weakref.finalize(mapping, self._freed_one, pid, tag).atexit = False

        return watch

    def _freed_one(self, pid: int, tag: int) -> None:
        with self._lock:
            if self._closed:
                return
            first = not self._freed
            self._freed.append((pid, tag))
        wake = self._wake() if first else None
        if wake is not None:
            wake()

    def take(self) -> dict[int, list[int]]:
        """The tags returned since the last call, by worker pid."""
        with self._lock:
            freed, self._freed = self._freed, []
        by_pid: dict[int, list[int]] = {}
        for pid, tag in freed:
            by_pid.setdefault(pid, []).append(tag)
        return by_pid

    def close(self) -> None:
        """The workers are gone: tags coming back later are dropped."""
        with self._lock:
            self._closed = True
            self._freed.clear()
