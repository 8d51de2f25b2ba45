"""The messages between the parent and one worker, and how they are framed.

Each worker has one socket pair of its own. A frame is a 17-byte header (``!BIQI``:
message kind, meta length, body length, number of file descriptors), the message's
fields pickled as a plain tuple (*meta*), then an opaque *body* (pickled task inputs or
results), sent with one scatter-gather ``sendmsg`` so the body is never copied to be
framed. A frame whose payload has large buffers in shared memory carries their
descriptors as ``SCM_RIGHTS`` ancillary data on its first byte (see
:mod:`corepool.sharedmem`); the receiver queues descriptors as they arrive and hands
each frame the number its header announces. The parent side is non-blocking and parsed
by :class:`FrameReader`; the worker side blocks. Where descriptors do not travel
(:data:`PLAIN`, set by the portable transport), frames go with plain ``send``/``recv``
and carry none.

Every message is a :class:`~typing.NamedTuple` of its own type, and both ends dispatch
on that type. The kind travels in the header, not as a pickled class: pickling a named
tuple by class costs about five times a plain tuple's pickling, on every chunk.

Parent to worker: :class:`Run` (body: packed inputs), :class:`Quit`,
:class:`DropShared`, :class:`Levels`, :class:`ResultsFree`. Worker to parent:
:class:`Ready`, :class:`InitFailed`, :class:`Part`, :class:`Logged`, :class:`Done`,
:class:`Unreadable`, :class:`Record`, :class:`Output`; each class says what its fields
and body are.

``failures`` (in a DONE or PART body) maps a position in the chunk to a
:class:`~corepool.serialize.FailureInfo`, to ``(RESULT_UNPICKLABLE, FailureInfo)`` for a
result that could not be pickled, or to ``(MEMORY_LIMIT, limit_bytes, FailureInfo)``
for a MemoryError under a memory limit. The *acknowledgement* that a task started is
not a message: the worker writes the chunk and position it is running, and when it
started, into its shared :class:`Slot`.
"""

from __future__ import annotations

import array
import itertools
import os
import pickle
import socket
import struct
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..serialize import FailureInfo

RESULT_UNPICKLABLE = "result_unpicklable"
MEMORY_LIMIT = "memory_limit"


# Parent -> worker ---------------------------------------------------------------------
class Run(NamedTuple):
    """Run chunk ``seq`` (body: its packed inputs). ``fn_bytes`` is None when the worker
    has the function of ``fn_key`` already (-1: do not keep it); ``track``: report each
    task's start in the slot and log its result (:data:`TRACKED`: the job has a
    timeout), or send each result as it ends (:data:`SEND_EACH`: a batch of single
    calls); ``forget``: job keys whose functions it may drop; ``fn_fds``: how many of
    the frame's descriptors, the first ones, belong to the function (the segments of
    shared handles inside it), the rest to the body."""

    seq: int
    fn_key: int
    fn_bytes: bytes | None
    style: int
    track: int  # 0: no; TRACKED; SEND_EACH: tracked, and each result sent as it ends
    forget: tuple[int, ...]
    fn_fds: int = 0


TRACKED = 1
SEND_EACH = 2


class Quit(NamedTuple):
    """Exit once the chunks before this message are done."""


class DropShared(NamedTuple):
    """Shared handles released in the parent: unmap their objects now."""

    tokens: list[tuple[int, int]]


# Worker -> parent ---------------------------------------------------------------------
class Ready(NamedTuple):
    """The initializer ran; the worker takes chunks."""

    pid: int


class InitFailed(NamedTuple):
    """The initializer raised; the worker exits."""

    info: FailureInfo


class Part(NamedTuple):
    """Body: packed ``([value], failures)`` of task ``position`` of tracked chunk ``seq``,
    whose result did not fit the result log, sent as the task ended."""

    seq: int
    position: int


class Logged(NamedTuple):
    """Body: a full result log's entries, for chunk ``seq``."""

    seq: int


class Done(NamedTuple):
    """Chunk ``seq`` ended. Body: packed ``(values, failures)``, None at the positions
    ``sent`` as :class:`Part`. ``retiring``: past its memory limit, it exits;
    ``released``: it unmapped the inputs' memory (the parent may reuse it)."""

    seq: int
    busy: float
    retiring: bool
    released: bool
    sent: tuple[int, ...]


class Unreadable(NamedTuple):
    """Chunk ``seq``'s function or inputs (``what``) did not unpickle."""

    seq: int
    what: str
    info: FailureInfo


class Levels(NamedTuple):
    """The caller's logging levels changed (see ``outputs.py``): apply them before the
    next chunk."""

    levels: Any


class ResultsFree(NamedTuple):
    """Lent result segments (``tags``) the parent no longer maps: fill them again (see
    ``corepool.lending``)."""

    tags: Any


class Record(NamedTuple):
    """Task ``position`` of chunk ``seq`` logged a record (``fields``: see
    ``forwarding.record_fields``). Not :class:`Logged`, which is the result log."""

    seq: int
    position: int
    fields: dict[str, Any]


class Output(NamedTuple):
    """Chunk ``seq``'s task printed whole lines ``text`` on ``stream`` (1: stdout, 2:
    stderr)."""

    seq: int
    stream: int
    text: str


Message = (
    Run
    | Quit
    | DropShared
    | Ready
    | InitFailed
    | Part
    | Logged
    | Done
    | Unreadable
    | Levels
    | Record
    | Output
    | ResultsFree
)

# The kind number in a frame's header is the position here (append new kinds at the end).
KINDS: tuple[type[Any], ...] = (
    Run,
    Quit,
    DropShared,
    Ready,
    InitFailed,
    Part,
    Logged,
    Done,
    Unreadable,
    Levels,
    Record,
    Output,
    ResultsFree,
)
_KIND_OF: dict[type[Any], int] = {cls: kind for kind, cls in enumerate(KINDS)}

_HEADER = struct.Struct("!BIQI")
_SMALL = 64 * 1024
MAX_FDS = 250  # per frame; the kernel takes at most 253 in one message
# Frames go with plain send/recv and carry no descriptors (the portable transport).
PLAIN = False
_ANCILLARY_SPACE = (
    socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize) if hasattr(socket, "CMSG_SPACE") else 0
)
# A task's own threads may log or print while the worker sends: one frame at a time.
_SEND_LOCK = threading.Lock()

Frame = tuple[Message, bytearray, list[int]]  # a message, its body, its descriptors


def encode(
    message: Message, body: bytes | memoryview = b"", nfds: int = 0
) -> list[bytes | memoryview]:
    """The buffers of one frame, to be sent in order."""
    meta_bytes = pickle.dumps(tuple(message), protocol=5)
    header = _HEADER.pack(_KIND_OF[type(message)], len(meta_bytes), len(body), nfds)
    if len(body) < _SMALL:
        return [header + meta_bytes + bytes(body)]
    return [header + meta_bytes, body]


def _decode(kind: int, meta: bytes | bytearray | memoryview) -> Message:
    try:
        cls = KINDS[kind]
    except IndexError:
        raise EOFError(f"a frame of unknown kind {kind}: the channel is out of step") from None
    # As _make does, without its length check: the fields were a message's own.
    message: Message = tuple.__new__(cls, pickle.loads(meta))
    return message


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
    sock: socket.socket, message: Message, body: bytes = b"", fds: Sequence[int] = ()
) -> None:
    """Send one frame on a blocking socket (the worker side)."""
    parts = encode(message, body, len(fds))
    if PLAIN or not fds:  # no descriptors: plain sends (one, for a small frame)
        with _SEND_LOCK:
            for part in parts:
                sock.sendall(part)
        return
    buffers = [memoryview(b) for b in parts]
    ancillary = _rights(fds)
    with _SEND_LOCK:
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


def recv_blocking(sock: socket.socket) -> Frame:
    """Receive one frame on a blocking socket: the message, its body and the descriptors
    it carried.

    EOFError when the peer is gone. The caller owns (and must close) the descriptors.
    """
    received: deque[int] = deque()
    header = _recv_exactly(sock, _HEADER.size, received)  # descriptors come with byte 0
    kind, meta_len, body_len, nfds = _HEADER.unpack(header)
    message = _decode(kind, _recv_exactly(sock, meta_len))
    body = _recv_exactly(sock, body_len) if body_len else bytearray()
    fds = [received.popleft() for _ in range(min(nfds, len(received)))]
    for extra in received:
        close_quietly(extra)
    return message, body, fds


class FrameReader:
    """Reassembles frames from a non-blocking socket, whatever sizes reads return."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._body: bytearray | None = None  # a large body being filled in place
        self._body_got = 0
        self._message: Message | None = None
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
                        assert self._message is not None
                        frames.append((self._message, self._body, self._pop_fds(self._nfds)))
                        self._body = self._message = None
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
            kind, meta_len, body_len, nfds = _HEADER.unpack_from(buf, start)
            head_end = start + _HEADER.size + meta_len
            if len(buf) < head_end:
                break
            message = _decode(kind, buf[start + _HEADER.size : head_end])
            available = len(buf) - head_end
            if available >= body_len:
                frames.append((message, buf[head_end : head_end + body_len], self._pop_fds(nfds)))
                start = head_end + body_len
                continue
            # A large body: allocate it once and receive the rest straight into it.
            body = bytearray(body_len)
            body[:available] = buf[head_end:]
            self._body, self._body_got, self._message, self._nfds = body, available, message, nfds
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
        self, message: Message, body: bytes | memoryview = b"", fds: Sequence[int] = ()
    ) -> None:
        """Queue one frame (call :meth:`flush` to write)."""
        buffers = encode(message, body, len(fds))
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
