"""The messages between the parent and one worker, and how they are framed.

Each worker has one socket pair of its own. A frame is a 16-byte header (``!IQI``:
meta length, body length, number of file descriptors), a small pickled *meta* tuple,
then an opaque *body* (pickled task inputs or results), sent with one scatter-gather
``sendmsg`` so the body is never copied to be framed. A frame whose payload has large
buffers in shared memory carries their descriptors as ``SCM_RIGHTS`` ancillary data on
its first byte (see :mod:`corepool.sharedmem`); the receiver queues descriptors as
they arrive and hands each frame the number its header announces. The parent side is
non-blocking and parsed by :class:`FrameReader`; the worker side blocks. Where
descriptors do not travel (:data:`PLAIN`, set by the portable transport), frames go
with plain ``send``/``recv`` and carry none.

Parent → worker::

    (RUN, chunk_seq, fn_key, fn_bytes | None, style, track, forget, drop_shared)
                                                   body: packed inputs; forget: job keys,
                                                   drop_shared: released shared handles
    (QUIT,)
    (DROP_SHARED, tokens)                          handles released: unmap their objects

Worker → parent::

    (READY, pid)                                   after the initializer ran
    (INIT_FAILED, FailureInfo)                     the initializer raised; the worker exits
    (PART, chunk_seq, position)                    body: packed ([value], failures) of one
                                                   task of a tracked chunk whose result
                                                   did not fit its result log, sent as it ends
    (LOGGED, chunk_seq)                            body: a full result log's entries
    (DONE, chunk_seq, busy_seconds, retiring, released, sent)
                                                   body: packed (values, failures), None
                                                   at the positions ``sent`` as PART;
                                                   retiring: past its memory limit, it exits;
                                                   released: it unmapped the inputs' memory
    (UNREADABLE, chunk_seq, what, FailureInfo)     the function or the inputs did not unpickle

``failures`` maps a position in the chunk to a :class:`~corepool.serialize.FailureInfo`,
to ``(RESULT_UNPICKLABLE, FailureInfo)`` for a result that could not be pickled, or to
``(MEMORY_LIMIT, limit_bytes, FailureInfo)`` for a MemoryError under a memory limit.
The *acknowledgement* that a task started is not a message: the worker writes the
chunk and position it is running, and when it started, into its shared :class:`Slot`.
"""

from __future__ import annotations

import array
import itertools
import os
import pickle
import socket
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any

RUN = "run"
QUIT = "quit"
DROP_SHARED = "drop_shared"
READY = "ready"
INIT_FAILED = "init_failed"
DONE = "done"
PART = "part"
LOGGED = "logged"
UNREADABLE = "unreadable"
RESULT_UNPICKLABLE = "result_unpicklable"
MEMORY_LIMIT = "memory_limit"

# How a chunk's inputs are applied to the function.
SINGLE = 0  # fn(x)
STAR = 1  # fn(*x)
CALL = 2  # fn(*args, **kwargs) with x == (args, kwargs)

_HEADER = struct.Struct("!IQI")
_SMALL = 64 * 1024
MAX_FDS = 250  # per frame; the kernel takes at most 253 in one message
# Frames go with plain send/recv and carry no descriptors (the portable transport).
PLAIN = False
_ANCILLARY_SPACE = (
    socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize) if hasattr(socket, "CMSG_SPACE") else 0
)


def encode(
    meta: tuple[Any, ...], body: bytes | memoryview = b"", nfds: int = 0
) -> list[bytes | memoryview]:
    """The buffers of one frame, to be sent in order."""
    meta_bytes = pickle.dumps(meta, protocol=5)
    header = _HEADER.pack(len(meta_bytes), len(body), nfds)
    if len(body) < _SMALL:
        return [header + meta_bytes + bytes(body)]
    return [header + meta_bytes, body]


def _rights(fds: Sequence[int]) -> list[tuple[int, int, bytes]]:
    if not fds:
        return []
    if len(fds) > MAX_FDS:
        raise ValueError(f"a frame can carry at most {MAX_FDS} file descriptors")
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def _take_rights(ancillary: list[tuple[int, int, bytes]], into: deque[int]) -> None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            into.extend(fds)


def send_blocking(
    sock: socket.socket, meta: tuple[Any, ...], body: bytes = b"", fds: Sequence[int] = ()
) -> None:
    """Send one frame on a blocking socket (the worker side)."""
    buffers = [memoryview(b) for b in encode(meta, body, len(fds))]
    if PLAIN:
        for buffer in buffers:
            sock.sendall(buffer)
        return
    ancillary = _rights(fds)
    while buffers:
        sent = sock.sendmsg(buffers, ancillary)
        ancillary = []  # descriptors travel with the first byte only
        while sent and buffers:
            head = buffers[0]
            if sent >= len(head):
                sent -= len(head)
                buffers.pop(0)
            else:
                buffers[0] = head[sent:]
                sent = 0


def _recv_exactly(sock: socket.socket, size: int, fds: deque[int] | None = None) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        if fds is None or PLAIN:
            n = sock.recv_into(view[got:])
        else:
            n, ancillary, _, _ = sock.recvmsg_into([view[got:]], _ANCILLARY_SPACE)
            _take_rights(ancillary, fds)
        if n == 0:
            raise EOFError("the other end closed the channel")
        got += n
    return buf


def recv_blocking(sock: socket.socket) -> tuple[tuple[Any, ...], bytearray, list[int]]:
    """Receive one frame on a blocking socket: meta, body and the descriptors it carried.

    EOFError when the peer is gone. The caller owns (and must close) the descriptors.
    """
    received: deque[int] = deque()
    header = _recv_exactly(sock, _HEADER.size, received)  # descriptors come with byte 0
    meta_len, body_len, nfds = _HEADER.unpack(header)
    meta = pickle.loads(_recv_exactly(sock, meta_len))
    body = _recv_exactly(sock, body_len) if body_len else bytearray()
    fds = [received.popleft() for _ in range(min(nfds, len(received)))]
    for extra in received:
        close_quietly(extra)
    return meta, body, fds


Frame = tuple[tuple[Any, ...], bytearray, list[int]]  # meta, body, descriptors


class FrameReader:
    """Reassembles frames from a non-blocking socket, whatever sizes reads return."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._body: bytearray | None = None  # a large body being filled in place
        self._body_got = 0
        self._meta: tuple[Any, ...] | None = None
        self._nfds = 0
        self._fds: deque[int] = deque()  # received, not yet handed to a frame
        self.eof = False

    def read(self) -> list[Frame]:
        """Read what is available now; return the frames it completes.

        The caller owns the descriptors of the frames returned.
        """
        frames: list[Frame] = []
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
                        frames.append((self._meta, self._body, self._pop_fds(self._nfds)))
                        self._body = self._meta = None
                    continue
                if PLAIN:
                    chunk, ancillary = self._sock.recv(_SMALL * 4), []  # type: ignore[var-annotated]
                else:
                    chunk, ancillary, _, _ = self._sock.recvmsg(_SMALL * 4, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.eof = True
                break
            _take_rights(ancillary, self._fds)
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            self._parse(frames)
        return frames

    def _pop_fds(self, count: int) -> list[int]:
        return [self._fds.popleft() for _ in range(min(count, len(self._fds)))]

    def _parse(self, frames: list[Frame]) -> None:
        buf = self._buf
        start = 0
        while len(buf) - start >= _HEADER.size:
            meta_len, body_len, nfds = _HEADER.unpack_from(buf, start)
            head_end = start + _HEADER.size + meta_len
            if len(buf) < head_end:
                break
            meta = pickle.loads(buf[start + _HEADER.size : head_end])
            available = len(buf) - head_end
            if available >= body_len:
                frames.append((meta, buf[head_end : head_end + body_len], self._pop_fds(nfds)))
                start = head_end + body_len
                continue
            # A large body: allocate it once and receive the rest straight into it.
            body = bytearray(body_len)
            body[:available] = buf[head_end:]
            self._body, self._body_got, self._meta, self._nfds = body, available, meta, nfds
            start = len(buf)
            break
        del buf[:start]

    def close(self) -> None:
        """Close descriptors received for frames that never completed."""
        while self._fds:
            close_quietly(self._fds.popleft())


class FrameWriter:
    """Queues frames for a non-blocking socket and writes as much as it accepts.

    The writer does not own the descriptors it sends: whoever queued a frame keeps
    them open until it has been written (or dropped).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        # Each entry: a buffer, and the descriptors to send with its first byte.
        self._pending: deque[tuple[memoryview, Sequence[int]]] = deque()

    @property
    def pending(self) -> bool:
        """True while queued bytes wait for the socket to accept them."""
        return bool(self._pending)

    def push(
        self, meta: tuple[Any, ...], body: bytes | memoryview = b"", fds: Sequence[int] = ()
    ) -> None:
        """Queue one frame (call :meth:`flush` to write)."""
        buffers = encode(meta, body, len(fds))
        self._pending.append((memoryview(buffers[0]), fds))
        self._pending.extend((memoryview(b), ()) for b in buffers[1:])

    def flush(self) -> None:
        """Write until the socket would block; raises OSError if the peer is gone."""
        pending = self._pending
        while pending:
            # One sendmsg per frame that carries descriptors, so they attach to its start.
            batch = [pending[0][0]]
            for view, fds in itertools.islice(pending, 1, 64):
                if fds:
                    break
                batch.append(view)
            try:
                if PLAIN:  # one send for the small frames queued together
                    small = len(batch) > 1 and sum(len(v) for v in batch) <= _SMALL * 4
                    sent = self._sock.send(b"".join(batch) if small else batch[0])
                else:
                    sent = self._sock.sendmsg(batch, _rights(pending[0][1]))
            except (BlockingIOError, InterruptedError):
                return
            while sent:
                head, fds = pending[0]
                if sent >= len(head):
                    sent -= len(head)
                    pending.popleft()
                else:
                    pending[0] = (head[sent:], ())
                    sent = 0

    def clear(self) -> None:
        """Drop everything queued (the worker is gone)."""
        self._pending.clear()


def new_channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair: the parent's end (non-blocking) and the worker's end."""
    # The default family: AF_UNIX where it exists, a loopback TCP pair on Windows.
    parent, child = socket.socketpair()
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
