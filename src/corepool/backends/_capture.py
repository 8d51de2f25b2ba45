"""Log records and printed output of tasks on a cluster worker (``dask``, ``ray``),
kept with the chunk's results and replayed in the caller when the chunk comes back.

A cluster worker is a process that corepool did not start and shares: Dask runs
several chunks at once in threads, and the worker has its own logging. So nothing
there is configured for good except two dispatchers installed once per worker process:
a root handler, and ``sys.stdout`` / ``sys.stderr`` wrappers; each keeps what a thread
running a chunk produces (a record only at or above the caller's level for its
logger's name) and passes everything else on as before. The root's level is lowered to
the caller's lowest one so that those records are made at all.

Replayed rather than streamed: the chunk's answer is the one thing that reliably comes
back from either engine, in order, and a side channel to the caller would need a
connection from every worker. The cost: a task's lines appear when its chunk ends.

If the worker is the calling process itself (a Dask cluster of threads), nothing is
captured: the records reach the caller's handlers directly, and its tasks run as the
thread backend's do (``_inline.py``: the task attributes, whole lines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..forwarding import (
    STDERR,
    STDOUT,
    Forward,
    LineWriter,
    Place,
    forward_settings,
    handle_record,
    record_fields,
    write_output,
)

__all__ = ["CallerForward", "Capture", "adopt", "capturing", "current", "in_caller", "replay"]

RECORD, OUTPUT = "record", "output"
CallerForward = tuple[Forward, str, int]  # what to forward, and the caller's host and pid


def caller_forward() -> CallerForward:
    """Taken when a job starts: the caller's levels and where it runs."""
    return forward_settings(), socket.gethostname(), os.getpid()


def in_caller(caller: CallerForward) -> bool:
    """True if this worker is the calling process itself (a Dask cluster of threads)."""
    return caller[2] == os.getpid() and caller[1] == socket.gethostname()


class Capture:
    """What one chunk's tasks logged and printed, in order."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self.place = Place()
        self.kept: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self.writers = {
            stream: LineWriter(self._keeper(stream), None, "") for stream in (STDOUT, STDERR)
        }

    def _keeper(self, stream: int) -> Callable[[str], None]:
        return lambda text: self._keep((OUTPUT, stream, text))

    def _keep(self, entry: tuple[Any, ...]) -> None:
        with self._lock:
            self.kept.append(entry)

    def record(self, record: logging.LogRecord) -> None:
        levels = self.forward.levels
        if levels is not None and record.levelno >= levels.threshold(record.name):
            self._keep((RECORD, self.place.now(), record_fields(record)))

    def taken(self) -> list[tuple[Any, ...]]:
        """Everything kept, the rest of unfinished lines included."""
        for writer in self.writers.values():
            writer.end_task()
        with self._lock:
            return list(self.kept)


_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def current() -> Capture | None:
    """The capture of the chunk this thread runs, if any."""
    return getattr(_local, "capture", None)


def adopt(capture: Capture | None) -> None:
    """This (helper) thread runs a task of ``capture``'s chunk."""
    _local.capture = capture


class _Dispatch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        capture = current()
        if capture is not None:
            capture.record(record)


class _Switch:
    """``sys.stdout`` / ``sys.stderr`` of a cluster worker: a capturing thread's text
    goes to its chunk, every other thread's to the stream that was there before."""

    def __init__(self, original: Any, stream: int) -> None:
        self._original = original
        self._stream = stream

    def write(self, text: str) -> int:
        capture = current()
        if capture is not None and capture.forward.output:
            return capture.writers[self._stream].write(text)
        self._original.write(text)  # some (Ray's) return None, not a count
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        capture = current()
        if capture is None or not capture.forward.output:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _install(forward: Forward) -> None:
    global _installed
    with _install_lock:
        if not _installed:
            logging.root.addHandler(_Dispatch())
            for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr")):
                original = getattr(sys, name)
                if original is not None:
                    setattr(sys, name, _Switch(original, stream))
            _installed = True
    if forward.levels is not None:  # each job's: the caller's may have come down
        lowest = forward.levels.lowest()
        if lowest < logging.root.getEffectiveLevel():
            logging.root.setLevel(lowest)


@contextlib.contextmanager
def capturing(caller: CallerForward | None) -> Iterator[Capture | None]:
    """Keep what this thread's tasks log and print while the block runs."""
    if caller is None:
        yield None
        return
    forward = caller[0]
    if not forward.anything or in_caller(caller):
        yield None
        return
    _install(forward)
    capture = Capture(forward)
    outer = current()
    adopt(capture)
    try:
        yield capture
    finally:
        adopt(outer)


def replay(kept: list[tuple[Any, ...]], chunk: Any) -> None:
    """In the caller: hand the records to its handlers, write the text to its streams."""
    job, items = chunk.job, chunk.items
    for entry in kept:
        if entry[0] == RECORD:
            _, pos, fields = entry
            if 0 <= pos < len(items):
                handle_record(fields, chunk.start + pos, job.describe_value(items[pos]))
            else:
                handle_record(fields)
        else:
            write_output(entry[1], entry[2])
