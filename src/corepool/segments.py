"""Shared-memory files ("segments"), and a pool that reuses them.

On Linux a segment is a ``memfd_create`` file: it has no name anywhere, and the kernel
frees its memory when the last descriptor and the last mapping of it are gone, so
nothing can leak past a crash. Other transports make them their own way (see
``_engine/transport/memory.py``); a named segment travels by its name.

Filling a new segment costs far more than the copy itself (the kernel allocates and
clears every page on the way), so a :class:`SegmentPool` keeps segments whose readers
are done with them, and the next payload of a similar size is copied into pages that
already exist, through a mapping that already exists.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import weakref
from typing import Any

from ._engine.transport import memory

__all__ = ["AVAILABLE", "Segment", "SegmentPool", "locate", "map_views", "zeros"]

#: Whether this platform has shared-memory segments (see the transport's memory).
AVAILABLE = memory.available()
# Pre-faulting a shared mapping (Linux only; elsewhere pages fault in as they are used).
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)

_ALIGN = 64  # numpy's preferred alignment for each buffer inside a segment


def _layout(parts: list[memoryview]) -> tuple[list[tuple[int, int]], int]:
    layout: list[tuple[int, int]] = []
    offset = 0
    for part in parts:
        layout.append((offset, part.nbytes))
        offset += -(-part.nbytes // _ALIGN) * _ALIGN
    return layout, offset


def _bytes_of(part: memoryview) -> memoryview:
    return part if part.ndim == 1 and part.format == "B" else part.cast("B")


class Segment:
    """A shared-memory file of ``size`` bytes; this object owns its descriptor (and,
    for a named segment not handed off, its name)."""

    __slots__ = ("__weakref__", "_writer", "fd", "hand_off", "name", "size")

    def __init__(self, size: int, name: str = "corepool") -> None:
        self.size = size
        self._writer: mmap.mmap | None = None  # this process's mapping, once reused
        self.fd, self.name, self.hand_off = -1, None, False  # (close() if create fails)
        self.fd, self.name = memory.create(size, name)

    def send_ref(self) -> tuple[str, bool]:
        """What a frame carries for a named segment: its name, and whether the
        receiver removes it (then the name is the receiver's from now on, who may have
        removed it already: :attr:`hand_off` says so, and the segment no longer travels
        by name)."""
        assert self.name is not None
        if not self.hand_off:
            self.hand_off = memory.hand_off(self.name)
        return self.name, self.hand_off
    @classmethod
    def write(
        cls, parts: list[memoryview], pool: SegmentPool | None = None, name: str = "corepool"
    ) -> tuple[Segment, list[tuple[int, int]]]:
        """A segment holding ``parts`` one after another (from ``pool`` if it has one
        that fits), and each part's (offset, size) in it."""
        layout, size = _layout(parts)
        segment = pool.take(size) if pool is not None else None
        if segment is None:
            segment = cls(size, name)
            writing = segment._pwrite if memory.pwrite_works() else segment._copy
        else:
            writing = segment._copy
        try:
            for part, (start, _) in zip(parts, layout, strict=True):
                writing(_bytes_of(part), start)
        except BaseException:
            segment.close()
            raise
        if pool is None and segment._writer is not None:
            segment._writer.close()  # not to be reused: its mapping holds a descriptor
            segment._writer = None
        return segment, layout

    def _pwrite(self, data: memoryview, start: int) -> None:
        # A new file: pwrite allocates its pages; mapping it first would add a page
        # fault per 4 KiB on top.
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], start + done)

    def _copy(self, data: memoryview, start: int) -> None:
        # A reused file: its pages exist, and a mapping kept from the last time makes
        # the copy a plain memcpy.
        if self._writer is None:
            self._writer = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED | _POPULATE)
        self._writer[start : start + len(data)] = data

    def close(self) -> None:
        """Close the descriptor and this process's mapping (readers' mappings stay valid)."""
        fd, self.fd = self.fd, -1
        name, self.name = self.name, None
        if name is not None:
            memory.release(name, self.hand_off)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self.close()


class SegmentPool:
    """Segments that no reader maps any more, kept for reuse (bounded, thread-safe)."""

    def __init__(self, max_segments: int = 16, max_bytes: int = 1 << 30) -> None:
        self._free: list[Segment] = []
        self._lock = threading.Lock()
        self._max_segments = max_segments
        self._max_bytes = max_bytes
        self._closed = False

    def take(self, size: int) -> Segment | None:
        """A free segment of at least ``size`` bytes and at most twice that, or None."""
        with self._lock:
            fitting = [s for s in self._free if size <= s.size <= 2 * size]
            if not fitting:
                return None
            best = min(fitting, key=lambda s: s.size)
            self._free.remove(best)
            return best

    def give(self, segment: Segment) -> None:
        """Keep ``segment`` for reuse (or close it, if the pool is full or closed)."""
        with self._lock:
            keep = not self._closed and segment.fd >= 0
            if keep:
                self._free.append(segment)
                while len(self._free) > self._max_segments or self.nbytes > self._max_bytes:
                    self._free.pop(0).close()
                return
        segment.close()

    @property
    def nbytes(self) -> int:
        """Bytes held by free segments."""
        return sum(s.size for s in self._free)

    def close(self) -> None:
        """Free every kept segment; later ones given back are closed at once."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        for segment in free:
            segment.close()


def map_views(
    fd: int, layout: list[tuple[int, int]], *, writable: bool, private: bool = False
) -> tuple[mmap.mmap | None, list[memoryview]]:
    """Map the segment behind ``fd``: the mapping, and a view of each (offset, size).

    The views keep the mapping alive; the descriptor may be closed afterwards.
    ``private`` makes writes copy-on-write, invisible to the segment's other users.
    """
    if not layout:
        return None, []
    end = max(start + size for start, size in layout)
    # Populating a private writable mapping would copy every page up front (the kernel
    # pre-faults it for writing); private pages are faulted in as they are read instead.
    flags = mmap.MAP_PRIVATE if private else mmap.MAP_SHARED | _POPULATE
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    mm = mmap.mmap(fd, max(end, 1), flags=flags, prot=prot)
    whole = memoryview(mm)
    return mm, [whole[start : start + size] for start, size in layout]


# Arrays allocated in segments by zeros(), by start address: (end address, segment).
_allocated: dict[int, tuple[int, Segment]] = {}
_allocated_lock = threading.Lock()


def zeros(shape: int | tuple[int, ...], dtype: Any = float) -> Any:
    """A new numpy array of zeros that lives in shared memory from the start.

    Sent to a worker as an argument, or returned by a task as a result, it is not
    copied at all: the receiver maps the very same memory. (Other arrays are copied
    once into shared memory on the way.) The memory is freed when the last array or
    view of it is gone, in every process.
    """
    import numpy

    dtype = numpy.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = math.prod(dims)
    nbytes = max(1, count * dtype.itemsize)
    segment = Segment(nbytes)
    mm = mmap.mmap(segment.fd, nbytes, flags=mmap.MAP_SHARED)
    array = numpy.frombuffer(mm, dtype=dtype, count=count).reshape(dims)
    start = int(array.__array_interface__["data"][0])
    with _allocated_lock:
        _allocated[start] = (start + nbytes, segment)
    weakref.finalize(mm, _forget_allocation, start)
    return array


def _forget_allocation(start: int) -> None:
    with _allocated_lock:
        _allocated.pop(start, None)


def locate(buffer: memoryview) -> tuple[Segment, int] | None:
    """The segment that ``buffer`` lies in (made by :func:`zeros`), and its offset there."""
    if not _allocated:
        return None
    import numpy

    address = int(numpy.frombuffer(buffer, dtype=numpy.uint8).__array_interface__["data"][0])
    with _allocated_lock:
        for start, (end, segment) in _allocated.items():
            if start <= address and address + buffer.nbytes <= end:
                return segment, address - start
    return None
