"""The messages between the parent and one worker, and how they are framed.

Each worker has one socket pair of its own. A frame is a 12-byte header (``!IQ``:
meta length, body length), a small pickled *meta* tuple, then an opaque *body*
(pickled task inputs or results), sent with one scatter-gather ``sendmsg`` so the body
is never copied to be framed. The parent side is non-blocking and parsed by
:class:`FrameReader`; the worker side blocks.

Parent → worker::

    (RUN, chunk_seq, fn_key, fn_bytes | None, style, track, forget)   body: pickled inputs
    (QUIT,)

Worker → parent::

    (READY, pid)                                   after the initializer ran
    (INIT_FAILED, FailureInfo)                     the initializer raised; the worker exits
    (DONE, chunk_seq, busy_seconds, retiring)      body: pickled (values, failures);
                                                   retiring: past its memory limit, it exits
    (UNREADABLE, chunk_seq, what, FailureInfo)     the function or the inputs did not unpickle

``failures`` maps a position in the chunk to a :class:`~corepool.serialize.FailureInfo`,
to ``(RESULT_UNPICKLABLE, FailureInfo)`` for a result that could not be pickled, or to
``(MEMORY_LIMIT, limit_bytes, FailureInfo)`` for a MemoryError under a memory limit.
The *acknowledgement* that a task started is not a message: the worker writes the
chunk and position it is running, and when it started, into its shared :class:`Slot`.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from collections import deque
from typing import Any

RUN = "run"
QUIT = "quit"
READY = "ready"
INIT_FAILED = "init_failed"
DONE = "done"
UNREADABLE = "unreadable"
RESULT_UNPICKLABLE = "result_unpicklable"
MEMORY_LIMIT = "memory_limit"

# How a chunk's inputs are applied to the function.
SINGLE = 0  # fn(x)
STAR = 1  # fn(*x)
CALL = 2  # fn(*args, **kwargs) with x == (args, kwargs)

_HEADER = struct.Struct("!IQ")
_SMALL = 64 * 1024


def encode(meta: tuple[Any, ...], body: bytes | memoryview = b"") -> list[bytes | memoryview]:
    """The buffers of one frame, to be sent in order."""
    meta_bytes = pickle.dumps(meta, protocol=5)
    header = _HEADER.pack(len(meta_bytes), len(body))
    if len(body) < _SMALL:
        return [header + meta_bytes + bytes(body)]
    return [header + meta_bytes, body]


def send_blocking(sock: socket.socket, meta: tuple[Any, ...], body: bytes = b"") -> None:
    """Send one frame on a blocking socket (the worker side)."""
    buffers = [memoryview(b) for b in encode(meta, body)]
    while buffers:
        sent = sock.sendmsg(buffers)
        while sent and buffers:
            head = buffers[0]
            if sent >= len(head):
                sent -= len(head)
                buffers.pop(0)
            else:
                buffers[0] = head[sent:]
                sent = 0


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the other end closed the channel")
        got += n
    return buf


def recv_blocking(sock: socket.socket) -> tuple[tuple[Any, ...], bytearray]:
    """Receive one frame on a blocking socket; EOFError when the peer is gone."""
    meta_len, body_len = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    meta = pickle.loads(_recv_exactly(sock, meta_len))
    body = _recv_exactly(sock, body_len) if body_len else bytearray()
    return meta, body


class FrameReader:
    """Reassembles frames from a non-blocking socket, whatever sizes reads return."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._body: bytearray | None = None  # a large body being filled in place
        self._body_got = 0
        self._meta: tuple[Any, ...] | None = None
        self.eof = False

    def read(self) -> list[tuple[tuple[Any, ...], bytearray]]:
        """Read what is available now; return the frames it completes."""
        frames: list[tuple[tuple[Any, ...], bytearray]] = []
        while not self.eof:
            try:
                if self._body is not None:
                    n = self._sock.recv_into(memoryview(self._body)[self._body_got :])
                    if n == 0:
                        self.eof = True
                        break
                    self._body_got += n
                    if self._body_got == len(self._body):
                        assert self._meta is not None
                        frames.append((self._meta, self._body))
                        self._body = self._meta = None
                    continue
                chunk = self._sock.recv(_SMALL * 4)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            self._parse(frames)
        return frames

    def _parse(self, frames: list[tuple[tuple[Any, ...], bytearray]]) -> None:
        buf = self._buf
        start = 0
        while len(buf) - start >= _HEADER.size:
            meta_len, body_len = _HEADER.unpack_from(buf, start)
            head_end = start + _HEADER.size + meta_len
            if len(buf) < head_end:
                break
            meta = pickle.loads(buf[start + _HEADER.size : head_end])
            available = len(buf) - head_end
            if available >= body_len:
                frames.append((meta, buf[head_end : head_end + body_len]))
                start = head_end + body_len
                continue
            # A large body: allocate it once and receive the rest straight into it.
            body = bytearray(body_len)
            body[:available] = buf[head_end:]
            self._body, self._body_got, self._meta = body, available, meta
            start = len(buf)
            break
        del buf[:start]


class FrameWriter:
    """Queues frames for a non-blocking socket and writes as much as it accepts."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending: deque[memoryview] = deque()

    @property
    def pending(self) -> bool:
        """True while queued bytes wait for the socket to accept them."""
        return bool(self._pending)

    def push(self, meta: tuple[Any, ...], body: bytes | memoryview = b"") -> None:
        """Queue one frame (call :meth:`flush` to write)."""
        self._pending.extend(memoryview(b) for b in encode(meta, body))

    def flush(self) -> None:
        """Write until the socket would block; raises OSError if the peer is gone."""
        pending = self._pending
        while pending:
            try:
                sent = self._sock.sendmsg(list(pending)[:64])
            except (BlockingIOError, InterruptedError):
                return
            while sent:
                head = pending[0]
                if sent >= len(head):
                    sent -= len(head)
                    pending.popleft()
                else:
                    pending[0] = head[sent:]
                    sent = 0

    def clear(self) -> None:
        """Drop everything queued (the worker is gone)."""
        self._pending.clear()


def new_channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair: the parent's end (non-blocking) and the worker's end."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent.setblocking(False)
    for s in (parent, child):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return parent, child


def close_quietly(fd_owner: socket.socket | int) -> None:
    """Close a socket or fd, ignoring errors from one already closed."""
    try:
        if isinstance(fd_owner, int):
            os.close(fd_owner)
        else:
            fd_owner.close()
    except OSError:
        pass
