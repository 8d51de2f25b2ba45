"""A worker's log of finished results, in memory it shares with the parent.

A tracked chunk (its job has a timeout) must not lose the results of its finished
tasks when a later task kills the worker or is stopped for overrunning. Sending each
result on the channel as it ends costs a system call and a parent wake-up per task
(twenty times slower for tiny tasks). Instead the worker appends each small result,
pickled, to this log: a shared array written with plain stores, and a committed length
in the worker's slot, written after the entry. The parent reads the log only when the
worker is gone or stopped; a chunk that finishes sends its results in ``DONE`` as
usual, and the log starts over with the next chunk.

A result that does not fit (large, or with out-of-band buffers such as a NumPy array)
goes to the parent at once in a ``PART`` frame instead; a full log is sent whole in a
``LOGGED`` frame (the same entries) and starts over.

Entry layout: position (int32), length (uint32), kind (byte), then the data: for kind
``MARSHAL``, ``marshal.dumps(value)`` (plain built-in values, three times cheaper to
write than a pickle), for kind ``PICKLE``, ``pickle.dumps((value, failure))``.
"""

from __future__ import annotations

import marshal
import pickle
import struct
from typing import Any

LOG_BYTES = 1 << 20  # per worker; pages cost memory only once written
ENTRY_MAX = 16 * 1024  # larger results travel in a PART frame
_HEADER = struct.Struct("<iIB")
MARSHAL, PICKLE = 0, 1
# Exact types marshal writes and reads back as they were (containers are tried, and
# pickled if they hold anything else).
_MARSHAL_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex, tuple, list, dict})


class LogWriter:
    """The worker's side: append entries, and publish the length in the slot."""

    __slots__ = ("_buf", "_end", "_out_of_band", "_slot", "_slot_index", "_used", "on_full")

    def __init__(self, log: Any, slot: Any, slot_index: int) -> None:
        # Called with the log's entries when it is full, before it starts over.
        self.on_full: Any = None
        self._buf = memoryview(log).cast("B")
        self._end = len(self._buf)
        self._slot = slot
        self._slot_index = slot_index
        self._used = 0
        self._out_of_band: list[Any] = []

    def reset(self) -> None:
        """Start over (a new chunk): the parent sees an empty log."""
        self._used = 0
        self._slot[self._slot_index] = 0

    def add(self, pos: int, value: Any, failure: Any) -> bool:
        """Log task ``pos``'s outcome; False if it must be sent another way."""
        data = None
        if failure is None and type(value) in _MARSHAL_TYPES:
            try:
                data = marshal.dumps(value)
                kind = MARSHAL
            except ValueError:
                data = None
        if data is None:
            out_of_band = self._out_of_band
            try:
                data = pickle.dumps((value, failure), 5, buffer_callback=out_of_band.append)
            except Exception:
                return False
            if out_of_band:
                out_of_band.clear()
                return False
            kind = PICKLE
        if len(data) > ENTRY_MAX:
            return False
        start = self._used
        body = start + _HEADER.size
        stop = body + len(data)
        if stop > self._end:
            if self.on_full is None or start == 0:
                return False
            self.on_full(self._buf[:start])
            self.reset()
            start, body, stop = 0, _HEADER.size, _HEADER.size + len(data)
        buf = self._buf
        _HEADER.pack_into(buf, start, pos, len(data), kind)
        buf[body:stop] = data
        self._used = stop
        self._slot[self._slot_index] = stop  # after the entry: the parent reads up to here
        return True


def read_log(log: Any, used: int) -> dict[int, tuple[Any, Any]]:
    """The parent's side: ``{position: (value, failure)}`` of the first ``used`` bytes.

    An entry that does not unpickle is left out (its task runs again).
    """
    buf = memoryview(log).cast("B")
    used = max(0, min(used, len(buf)))
    entries: dict[int, tuple[Any, Any]] = {}
    offset = 0
    while offset + _HEADER.size <= used:
        pos, length, kind = _HEADER.unpack_from(buf, offset)
        start = offset + _HEADER.size
        if start + length > used:
            break
        data = buf[start : start + length]
        try:
            if kind == MARSHAL:
                value, failure = marshal.loads(data), None
            else:
                value, failure = pickle.loads(data)
        except Exception:
            pass
        else:
            entries[pos] = (value, failure)
        offset = start + length
    return entries
