"""What the supervisor's ``select()`` waits on besides the workers' channels: a wake-up
from another thread (a command was queued), and the end of each worker process.

Two ways, one interface:

- :class:`PipeWakeups` (POSIX): a pipe for wake-ups, and each worker's *sentinel* (a
  descriptor that becomes readable when the process ends) registered in the selector
  itself. Nothing else runs.
- :class:`WatcherWakeups` (where ``select`` takes sockets only: Windows, whose sentinels
  are process handles): a socket pair for wake-ups, and one small thread that waits on
  every sentinel with :func:`multiprocessing.connection.wait` (which takes handles) and
  hands each ended worker to the supervisor as a queued command. The portable transport
  uses it on every system, so that its logic runs in this project's tests on Linux.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

WAKE = ("wake", -1)  # the selector key data of the wake-up end


class PipeWakeups:
    """Wake-ups through a pipe; sentinels in the selector."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        selector.register(self._read, selectors.EVENT_READ, WAKE)

    def wake(self) -> None:
        """Make the next (or current) ``select()`` return (caller: any thread)."""
        try:
            os.write(self._write, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: a wake-up is pending anyway

    def drain(self) -> None:
        """Take the pending wake-ups (the supervisor, before it runs the commands)."""
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def watch(self, wid: int, sentinel: Any) -> None:
        """Tell the supervisor when worker ``wid``'s process ends (its ``sentinel``)."""
        self._selector.register(sentinel, selectors.EVENT_READ, ("sentinel", wid))

    def unwatch(self, sentinel: Any) -> None:
        """Stop watching ``sentinel`` (its end was handled)."""
        try:
            self._selector.unregister(sentinel)
        except (KeyError, ValueError):
            pass

    def descriptors(self) -> tuple[int, ...]:
        """This object's descriptors (a worker forked from the pool's process closes them)."""
        return (self._read, self._write)

    def close(self) -> None:
        """Close both ends (once nobody calls :meth:`wake` any more)."""
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


class WatcherWakeups:
    """Wake-ups through a socket pair; sentinels waited on by a thread of their own,
    which reports an ended worker by ``ended(wid)`` (queued as a supervisor command)."""

    def __init__(self, selector: selectors.BaseSelector, ended: Callable[[int], None]) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        selector.register(self._read, selectors.EVENT_READ, WAKE)
        self._ended = ended
        self._lock = threading.Lock()
        self._watched: dict[Any, int] = {}  # sentinel -> worker id
        self._closing = False
        # Pokes the watcher out of its wait when the set of sentinels changes.
        self._poke_read, self._poke_write = socket.socketpair()
        self._poke_read.setblocking(False)
        self._thread = threading.Thread(
            target=self._run, name="corepool-sentinels", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        _send_byte(self._write)

    def drain(self) -> None:
        _drain_socket(self._read)

    def watch(self, wid: int, sentinel: Any) -> None:
        with self._lock:
            self._watched[sentinel] = wid
        self._poke()

    def unwatch(self, sentinel: Any) -> None:
        with self._lock:
            self._watched.pop(sentinel, None)
        self._poke()

    def descriptors(self) -> tuple[int, ...]:
        return tuple(s.fileno() for s in (self._read, self._write, self._poke_read,
                                          self._poke_write))

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self._poke()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for sock in (self._read, self._write, self._poke_read, self._poke_write):
            sock.close()

    def _poke(self) -> None:
        _send_byte(self._poke_write)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                watched = dict(self._watched)
            ready = wait([self._poke_read, *watched])
            for obj in ready:
                if obj is self._poke_read:
                    _drain_socket(self._poke_read)
                    continue
                with self._lock:
                    wid = self._watched.pop(obj, None)
                if wid is not None:
                    self._ended(wid)


def _send_byte(sock: socket.socket) -> None:
    try:
        sock.send(b"x")
    except (BlockingIOError, OSError):
        pass  # full: a byte is waiting anyway (or closed: nobody listens any more)


def _drain_socket(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, OSError):
        pass


def watcher_needed(transport_name: str) -> bool:
    """Whether sentinels need the watcher thread: on Windows, and with the portable
    transport everywhere (its logic then runs in the tests on Linux)."""
    return sys.platform == "win32" or transport_name == "portable"
