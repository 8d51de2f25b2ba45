"""Large buffers through shared memory: zero-copy numpy, and ``corepool.shared(obj)``.

Pickle protocol 5 lets an object hand its large buffers to the pickler *out of band*
instead of copying them into the pickle stream: numpy arrays, ``bytearray`` and
``pickle.PickleBuffer`` do. :func:`pack` pickles a payload that way; every buffer of
:data:`THRESHOLD` bytes or more is copied once into an anonymous shared-memory file
(``memfd_create``), whose file descriptor travels beside the message over the worker's
Unix socket (``SCM_RIGHTS``). :func:`unpack` maps that file and unpickles the payload
with the mapped buffers, so a numpy array arrives without a further copy. Smaller
buffers stay inline: below the threshold, a pipe is faster than a mapping.

Nothing here has a name in ``/dev/shm``. The memory lives as long as a descriptor or a
mapping of it does, and the kernel frees it when the last one goes, so a worker killed
mid-task, a timeout or a ``kill -9`` of the whole program cannot leak a segment.

An array made by :func:`zeros` lives in shared memory from the start, and is not
copied at all: its own segment travels, and the receiver maps the same pages.

``shared(obj)`` pickles an object once into such a file and returns a :class:`Shared`
handle. A task that receives the handle (as an argument, or anywhere inside one) gets
the object itself: each worker maps the file the first time it meets the handle and
keeps the object until the handle is released; a numpy array inside it is a
copy-on-write view of the shared pages, never copied: writable, so that a library that
would copy read-only input does not, while a task's writes stay in its own worker. The
thread and serial backends pass the object itself (:func:`resolve`).

Other backends (Dask, Ray) choose how a handle travels on their engine by pickling
their payloads inside :func:`reducing_shared_with`; outside any of these, a handle
pickles as its object, by value.

On Linux the segments are ``memfd_create`` files. The other transports make them
their own way (``_engine/transport/``): macOS's ``shm_open`` unlinked at once travels
as a descriptor too; the portable transport's named segments travel by name, in the
body (:data:`_NAMED` marks such a body), and the receiver opens them. Without shared
memory at all everything still works, with buffers inline and handles sent by value.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import mmap
import os
import pickle
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from ._engine.transport import memory
from .segments import AVAILABLE, Segment, SegmentPool, locate, map_views, zeros
from .serialize import PROTOCOL, cloudpickle_dumps, main_is_importable

__all__ = [
    "AVAILABLE",
    "THRESHOLD",
    "Packed",
    "Segment",
    "Shared",
    "code_with_segments",
    "descriptors_of",
    "load_code",
    "pack",
    "reducing_shared_with",
    "resolve",
    "shared",
    "unpack",
    "zeros",
]

#: The name of lent segments (results a worker fills again once returned), in /proc.
LENT_NAME = "corepool-result"
#: Buffers of this many bytes or more travel through shared memory.
THRESHOLD = 256 * 1024
# Segments one message may carry (the kernel passes at most 253 descriptors at once);
# past that, shared objects go by value and arrays are copied into the common segment.
_MAX_SEGMENTS = 200
# Segments travel by name in the body, not as descriptors (the portable transport).
_BY_NAME = AVAILABLE and memory.named()
# The start of a body whose segments travel by name (no pickle starts this way).
_NAMED = b"corepool-named:"

T = TypeVar("T")


# Packing payloads -------------------------------------------------------------------


class Packed:
    """A pickled payload whose large buffers and shared objects travel as descriptors.

    ``body`` goes through the channel; ``segments`` are sent beside it (their
    descriptors, in order). The object keeps the segments open for as long as it
    lives, so a payload can be sent again (a retry) without packing it again.

    A payload packed with a :class:`SegmentPool` gives its buffer segment back to the
    pool when it is dropped, if every receiver said it let go of its mapping
    (``sent`` back to 0 and not ``pinned``): a reader still holding an array must not
    see the next payload's bytes appear in it.
    """

    __slots__ = ("body", "copied", "lend", "nbytes", "pinned", "pool", "segments", "sent")

    def __init__(
        self,
        body: bytes,
        segments: list[Segment],
        pool: SegmentPool | None = None,
        copied: Segment | None = None,
        lend: int | None = None,
    ) -> None:
        self.body = body
        self.lend = lend  # the tag ``copied`` was lent under (see corepool.lending)
        self.segments = segments
        self.nbytes = len(body) + sum(s.size for s in segments)
        self.pool = pool if copied is not None else None
        self.copied = copied  # the segment pack() filled, which may go back to the pool
        self.sent = 0  # receivers that may still map it
        self.pinned = False  # a receiver kept a view: never reuse

    @property
    def fds(self) -> list[int]:
        """The descriptors to send with ``body`` (none where segments travel by name)."""
        return descriptors_of(self.segments)

    def __len__(self) -> int:
        return self.nbytes

    def __del__(self) -> None:
        reusable = self.sent == 0 and not self.pinned
        if self.pool is not None and self.copied is not None and reusable:
            self.pool.give(self.copied)


class _Packing(threading.local):
    """The shared handles met while pickling one payload in this thread."""

    segments: list[Segment] | None = None
    override: Callable[[Shared[Any]], Any] | None = None


_packing = _Packing()


class _OutOfBand:
    """Stands for a large ``bytes`` or ``bytearray`` (which pickle always copies inline),
    or for a memoryview (which pickle refuses)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        value = self.value
        if isinstance(value, (bytes, bytearray)):
            return type(value), (pickle.PickleBuffer(value),)
        data = value if value.c_contiguous else memoryview(value.tobytes())
        return _rebuild_memoryview, (
            pickle.PickleBuffer(data),
            value.format,
            value.shape,
            value.readonly,
        )


def _rebuild_memoryview(
    buffer: Any, fmt: str, shape: tuple[int, ...], readonly: bool
) -> memoryview:
    view = memoryview(buffer)
    if view.readonly and not readonly:
        view = memoryview(bytearray(view))
    flat = view.cast("B")
    if fmt == "B" and len(shape) == 1:
        return flat
    return flat.cast(fmt, shape)  # type: ignore[call-overload,no-any-return]


def _replace_inside(obj: Any, leaf: Callable[[Any], Any], depth: int = 4) -> Any:
    """``obj`` with ``leaf(x)`` for every ``x`` in it, looking inside lists, tuples and
    dict values ``depth`` levels deep; containers are rebuilt only where something changed."""
    replaced = leaf(obj)
    if replaced is not obj or depth == 0:
        return replaced
    if type(obj) in (list, tuple):
        new = [_replace_inside(x, leaf, depth - 1) for x in obj]
        if all(a is b for a, b in zip(new, obj, strict=True)):
            return obj
        return new if type(obj) is list else tuple(new)
    if type(obj) is dict:
        changed = {k: _replace_inside(v, leaf, depth - 1) for k, v in obj.items()}
        return obj if all(changed[k] is v for k, v in obj.items()) else changed
    return obj


def _out_of_band(obj: Any) -> Any:
    if isinstance(obj, memoryview) or (type(obj) in (bytes, bytearray) and len(obj) >= THRESHOLD):
        return _OutOfBand(obj)
    return obj


def _substitute(obj: Any) -> Any:
    """``obj`` with large bytes and every memoryview inside containers made picklable."""
    return _replace_inside(obj, _out_of_band)


def _pickle(obj: Any, buffers: list[pickle.PickleBuffer], *, cloud: bool = True) -> bytes:
    """Pickle at protocol 5, large buffers out of band into ``buffers``; with ``cloud``,
    cloudpickle gets a second try (code inside data, classes of a bare ``__main__``)."""

    def keep_inline(buffer: pickle.PickleBuffer) -> bool:
        with buffer.raw() as raw:
            if raw.nbytes < THRESHOLD:
                return True
        buffers.append(buffer)
        return False

    callback = keep_inline if AVAILABLE else None
    try:
        data = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=callback)
    except Exception:
        if not cloud:
            raise
        buffers.clear()
        return cloudpickle_dumps(obj, buffer_callback=callback)
    if b"__main__" in data and not main_is_importable():
        buffers.clear()
        return cloudpickle_dumps(obj, buffer_callback=callback)
    return data


def pack(obj: Any, pool: SegmentPool | None = None, lend: int | None = None) -> bytes | Packed:
    """Pickle ``obj`` for another process: plain bytes, or a :class:`Packed` with segments.

    Large buffers go into a segment from ``pool`` when it has one that fits. ``lend``
    tags the segment the buffers were copied into, so that the receiver can say when it
    no longer maps it (see :mod:`corepool.lending`). Raises whatever pickling raises when
    ``obj`` cannot be pickled at all.
    """
    outer = _packing.segments
    segments: list[Segment] = []
    _packing.segments = segments
    buffers: list[pickle.PickleBuffer] = []
    try:
        try:
            data = _pickle(obj, buffers, cloud=False)
            redo = AVAILABLE and len(data) >= THRESHOLD and _holds_large_bytes(data)
        except Exception:
            redo = True  # a memoryview, say, or code for cloudpickle
        if redo:
            buffers.clear()
            segments.clear()
            data = _pickle(_substitute(obj), buffers)
    finally:
        _packing.segments = outer
    if not buffers and not segments:
        return data
    raws = [b.raw() for b in buffers]
    try:
        layout, copied = _place(raws, segments, pool, "corepool" if lend is None else LENT_NAME)
    finally:
        for raw in raws:
            raw.release()
    # A named segment's name is removed once received: it cannot be lent and refilled.
    lent = None if lend is None or copied is None or _BY_NAME else (lend, len(segments) - 1)
    if _BY_NAME:
        refs = [s.send_ref() for s in segments]
        body = _NAMED + pickle.dumps((data, layout, lent, refs), protocol=PROTOCOL)
    else:
        body = pickle.dumps((data, layout, lent), protocol=PROTOCOL)
    return Packed(body, segments, pool, copied, None if lent is None else lend)


_BINBYTES = b"B"  # pickle's opcode for bytes, then their length in 4 bytes (little endian)
_MOST_CHECKS = 10_000


def _holds_large_bytes(data: bytes) -> bool:
    """Whether pickle ``data`` may hold a ``bytes`` object of :data:`THRESHOLD` bytes or
    more (pickle always copies those inline; :func:`pack` then pickles again to send
    them out of band). False only when it surely does not: every such object starts
    with the BINBYTES opcode and its length. Re-pickling is costly for a payload of
    many small objects (it walks them all), and scanning for the opcode is not."""
    find, size, end = data.find, len(data), len(data) - 5
    pos = find(_BINBYTES)
    checks = 0
    while 0 <= pos <= end:
        length = int.from_bytes(data[pos + 1 : pos + 5], "little")
        if THRESHOLD <= length <= size - pos - 5:
            return True
        checks += 1
        if checks > _MOST_CHECKS:
            return True  # binary data full of the opcode's byte: do not scan it all
        pos = find(_BINBYTES, pos + 1)
    return False


def _place(
    raws: list[memoryview], segments: list[Segment], pool: SegmentPool | None, name: str
) -> tuple[list[tuple[int, int, int]], Segment | None]:
    """Where each buffer travels: (index of its segment in ``segments``, offset, size).

    A buffer that already lives in a segment (an array from :func:`zeros`) is sent as
    it is; the others are copied together into one segment, from ``pool`` if it can.
    """
    layout: list[tuple[int, int, int]] = []
    to_copy: list[memoryview] = []
    for raw in raws:
        found = locate(raw)
        if found is not None and found[0].hand_off:
            found = None  # sent by name once already: its receiver may have removed it
        if found is not None and len(segments) >= _MAX_SEGMENTS:
            found = None if all(s is not found[0] for s in segments) else found
        if found is None:
            layout.append((-1, len(to_copy), raw.nbytes))  # offset filled in below
            to_copy.append(raw)
            continue
        segment, offset = found
        index = next((i for i, s in enumerate(segments) if s is segment), len(segments))
        if index == len(segments):
            segments.append(segment)
        layout.append((index, offset, raw.nbytes))
    if not to_copy:
        return layout, None
    copied, places = Segment.write(to_copy, pool, name)
    segments.append(copied)
    copied_index = len(segments) - 1
    for k, (index, position, size) in enumerate(layout):
        if index < 0:
            layout[k] = (copied_index, places[position][0], size)
    return layout, copied


def unpack(
    body: bytes | bytearray,
    fds: list[int],
    *,
    private: bool = False,
    mappings: list[mmap.mmap] | None = None,
    lent: Callable[[int, mmap.mmap], None] | None = None,
) -> Any:
    """The object :func:`pack` made; closes ``fds`` (the mappings outlive them).

    ``private``: the receiver's writes to its buffers stay its own (copy-on-write),
    for payloads the sender may send again. ``mappings`` receives the mapping of the
    payload's buffers, for :func:`let_go`. ``lent(tag, mapping)`` is called for a
    segment the sender lent (see ``pack``'s ``lend``).
    """
    if not fds:
        if not body.startswith(_NAMED):
            return pickle.loads(body)
        data, layout, lend, refs = pickle.loads(memoryview(body)[len(_NAMED) :])
        fds = _open_named(refs)
        body = b""
    try:
        if body:
            data, layout, lend = pickle.loads(body)
        views: list[memoryview] = [memoryview(b"")] * len(layout)
        for index in sorted({i for i, _, _ in layout}):
            mine = [(k, offset, size) for k, (i, offset, size) in enumerate(layout) if i == index]
            mm, some = map_views(
                fds[index], [(o, n) for _, o, n in mine], writable=True, private=private
            )
            for (k, _, _), view in zip(mine, some, strict=True):
                views[k] = view
            if mm is not None and mappings is not None:
                mappings.append(mm)
            if mm is not None and lent is not None and lend is not None and lend[1] == index:
                lent(lend[0], mm)
            del mm
        outer = _received.fds
        _received.fds = fds
        try:
            return pickle.loads(data, buffers=views)
        finally:
            _received.fds = outer
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _open_named(refs: list[tuple[str, bool]]) -> list[int]:
    """Descriptors of the named segments a body lists (handed-off names removed)."""
    fds: list[int] = []
    try:
        for name, hand_off in refs:
            fds.append(memory.open_ref(name, hand_off))
    except BaseException:
        for fd in fds:
            os.close(fd)
        for name, hand_off in refs[len(fds) + 1 :]:
            if hand_off:  # the receiver removes them, even those it never opens
                memory.open_ref_failed(name)
        raise
    return fds


def code_with_segments(dumps: Callable[[], bytes]) -> tuple[bytes, list[Segment]]:
    """Run ``dumps`` (which pickles a function for the workers) so that a shared handle
    inside the function (``functools.partial(task, handle)``, a closure over one) travels
    as its segment, as in an argument, not by value: the bytes, and the segments to send
    beside them (none where segments travel by name: the bytes then carry the names)."""
    if not AVAILABLE:
        return dumps(), []
    outer = _packing.segments
    segments: list[Segment] = []
    _packing.segments = segments
    try:
        data = dumps()
    finally:
        _packing.segments = outer
    if segments and _BY_NAME:
        refs = [s.send_ref() for s in segments]
        return _NAMED + pickle.dumps((data, refs), protocol=PROTOCOL), segments
    return data, segments


def descriptors_of(segments: list[Segment]) -> list[int]:
    """The descriptors to send beside a frame for ``segments`` (none where segments
    travel by name)."""
    return [] if _BY_NAME else [s.fd for s in segments]


def load_code(data: bytes, fds: list[int], loads: Callable[[bytes], Any]) -> Any:
    """The function :func:`code_with_segments` pickled, with the descriptors ``fds`` of
    its segments (closed here; the mappings outlive them)."""
    if data.startswith(_NAMED):
        data, refs = pickle.loads(memoryview(data)[len(_NAMED) :])
        fds = _open_named(refs)
    outer = _received.fds
    _received.fds = fds
    try:
        return loads(data)
    finally:
        _received.fds = outer
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class _Received(threading.local):
    fds: list[int] | None = None


_received = _Received()


# Shared objects ---------------------------------------------------------------------

_tokens = itertools.count()
_released_lock = threading.Lock()
_live = 0  # handles alive in this process; the thread and serial backends look


class Shared(Generic[T]):
    """A handle to an object placed once in shared memory; see :func:`shared`.

    In the program that made it, :attr:`value` is the object. Sent to a worker
    process, it arrives as the object itself.
    """

    def __init__(self, value: T) -> None:
        global _live
        self.value = value
        self.token = (os.getpid(), next(_tokens))
        self.nbytes = 0
        self._segment: Segment | None = None
        self._layout: list[tuple[int, int]] = []
        if AVAILABLE:
            buffers: list[pickle.PickleBuffer] = []

            def out_of_band(buffer: pickle.PickleBuffer) -> bool:
                buffers.append(buffer)
                return False

            try:
                data = pickle.dumps(value, protocol=PROTOCOL, buffer_callback=out_of_band)
            except Exception:
                buffers.clear()
                data = cloudpickle_dumps(value, buffer_callback=out_of_band)
            raws = [memoryview(data)] + [b.raw() for b in buffers]
            try:
                self._segment, self._layout = Segment.write(raws)
            finally:
                for raw in raws[1:]:
                    raw.release()
            self.nbytes = self._segment.size
        else:
            pickle.dumps(value, protocol=PROTOCOL)  # fail now, not in every task
        with _released_lock:
            _live += 1
        self._finalizer = weakref.finalize(self, _release, self.token, self._segment)

    def release(self) -> None:
        """Free the shared copy now (it is also freed when the handle is collected)."""
        self._finalizer()

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran or the handle was collected."""
        return not self._finalizer.alive

    def __reduce__(self) -> tuple[Any, ...]:
        override = _packing.override
        if override is not None:
            reduced: tuple[Any, ...] = override(self)
            return reduced
        segments = _packing.segments
        if segments is None or self._segment is None or self.released:
            return _identity, (self.value,)
        index = next((i for i, s in enumerate(segments) if s is self._segment), len(segments))
        if index == len(segments):
            if len(segments) >= _MAX_SEGMENTS:
                return _identity, (self.value,)
            segments.append(self._segment)
        return _shared_from_message, (self.token, index, self._layout)

    def __repr__(self) -> str:
        state = "released" if self.released else f"{self.nbytes} bytes shared"
        return f"<corepool.Shared {type(self.value).__name__} ({state})>"


def shared(obj: T) -> Shared[T]:
    """Place a large read-only object once where every worker can read it.

    Pass the handle to any number of tasks, instead of the object: each worker process
    maps it once, and a task gets the object itself (a numpy array as a copy-on-write
    view of the shared memory, with no copy: a task's writes are seen by no other
    process, but by that worker's later tasks, as with any object a worker keeps). The
    memory is freed when the handle is garbage-collected or :meth:`Shared.release` is
    called; workers drop their view before their next task after that.

    >>> import corepool
    >>> table = corepool.shared(list(range(1000)))
    >>> corepool.map(len, [table, table], workers=1)
    [1000, 1000]
    """
    return Shared(obj)


def _identity(value: T) -> T:
    return value


# Pools to tell when a handle is released, so that idle workers drop their view too.
_listeners: weakref.WeakSet[Any] = weakref.WeakSet()


def on_release(listener: Any) -> None:
    """Call ``listener.shared_released(token)`` whenever a handle is released (held
    weakly). Nothing is kept for later: a pool that starts a worker afterwards has
    nothing to tell it, since the worker never saw the handle."""
    _listeners.add(listener)


def off_release(listener: Any) -> None:
    """Stop calling ``listener`` (a pool that ended)."""
    _listeners.discard(listener)


def _release(token: tuple[int, int], segment: Segment | None) -> None:
    global _live
    if segment is not None:
        segment.close()
    with _released_lock:
        _live -= 1
    for listener in list(_listeners):
        listener.shared_released(token)


# The worker's side: objects of the handles it has met, by token.
_cache: OrderedDict[tuple[int, int], Any] = OrderedDict()
_CACHE_LIMIT = 64


def _shared_from_message(token: tuple[int, int], index: int, layout: list[tuple[int, int]]) -> Any:
    if token in _cache:
        _cache.move_to_end(token)
        return _cache[token]
    fds = _received.fds
    if fds is None:
        raise RuntimeError("a corepool.shared handle can only be unpickled by a corepool worker")
    # Copy-on-write: a writable array, so that a library that copies read-only input
    # (scipy.signal.convolve2d does) reads the shared pages instead; a task's writes stay
    # in this worker. Not populated: that would copy every page up front.
    _, views = map_views(fds[index], layout, writable=True, private=True)
    value = pickle.loads(views[0], buffers=views[1:])
    _cache[token] = value
    if len(_cache) > _CACHE_LIMIT:
        _cache.popitem(last=False)
    return value


def let_go(mappings: list[mmap.mmap]) -> bool:
    """Unmap ``mappings`` if nothing uses them any more; True if all were unmapped.

    A worker calls it after a chunk: False means a task kept a view of its arguments
    (in a global, say), and the sender must not reuse that memory.
    """
    free = True
    for mm in mappings:
        try:
            mm.close()
        except BufferError:  # still exported: an array or view of it is alive
            free = False
    mappings.clear()
    return free


def forget_shared(tokens: list[tuple[int, int]]) -> None:
    """Drop this process's view of released handles (the worker, before a task)."""
    for token in tokens:
        _cache.pop(token, None)


def resolve(value: Any) -> Any:
    """``value`` with :class:`Shared` handles replaced by their objects, at any depth:
    inside lists, tuples, dicts, sets and the attributes of objects, what pickling it
    to a worker process gives. For the backends that do not pickle (threads, serial):
    a container or object is copied only when a handle is found in it, the rest is
    passed as it is."""
    return _resolve_in(value, {})


_PLAIN = (str, bytes, bytearray, int, float, complex, bool, type(None), memoryview)


def _resolve_in(obj: Any, seen: dict[int, Any]) -> Any:
    if isinstance(obj, Shared):
        return obj.value
    if isinstance(obj, (*_PLAIN, type)):
        return obj
    key = id(obj)
    if key in seen:  # met before (or a cycle back to a container being walked)
        return seen[key]
    seen[key] = obj
    new = _resolve_children(obj, seen)
    seen[key] = new
    return new


def _resolve_children(obj: Any, seen: dict[int, Any]) -> Any:
    kind = type(obj)
    if kind in (list, tuple, set, frozenset) or (
        isinstance(obj, tuple) and hasattr(obj, "_fields")
    ):
        items = [_resolve_in(x, seen) for x in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        if kind in (list, tuple, set, frozenset):
            return kind(items)
        return kind._make(items)  # a named tuple
    if isinstance(obj, dict):
        values = {k: _resolve_in(v, seen) for k, v in obj.items()}
        if all(values[k] is v for k, v in obj.items()):
            return obj
        if kind is dict:
            return values
        try:
            clone = copy.copy(obj)  # an OrderedDict, a defaultdict...
            clone.update(values)
        except Exception:
            return obj
        return clone
    attributes = getattr(obj, "__dict__", None)
    if type(attributes) is not dict or callable(obj):
        return obj  # functions, modules, objects without a plain __dict__: as they are
    changed = {}
    for name, attribute in attributes.items():
        resolved = _resolve_in(attribute, seen)
        if resolved is not attribute:
            changed[name] = resolved
    if not changed:
        return obj
    try:
        clone = copy.copy(obj)
        clone.__dict__.update(changed)
    except Exception:
        return obj  # an object that cannot be copied keeps its handles
    return clone


def live_handles() -> int:
    """How many :class:`Shared` handles are alive in this process."""
    return _live


@contextlib.contextmanager
def reducing_shared_with(reduce: Callable[[Shared[Any]], Any]) -> Iterator[None]:
    """While active in this thread, pickling a :class:`Shared` handle returns ``reduce(handle)``.

    A backend that ships payloads itself uses it to send handles its own way, e.g. a
    Dask backend as a key of data scattered to every worker. ``reduce`` returns a
    ``__reduce__`` tuple.
    """
    outer = _packing.override
    _packing.override = reduce
    try:
        yield
    finally:
        _packing.override = outer
