"""Log records and printed lines on the process backend's channel.

Worker side: :func:`install` (when the worker starts, before its initializer) sets the
worker's loggers to the caller's levels with one root handler, and replaces
``sys.stdout`` / ``sys.stderr`` with line writers; both send frames on the worker's
channel at once, from whatever thread logs or prints::

    Record(seq, position, fields)      a record, as forwarding.record_fields
    Output(seq, stream, text)          whole lines (1: stdout, 2: stderr)

They travel on the channel the results use, so a task's records and lines reach the
caller before the chunk's ``Done`` does. The run loop says which chunk runs
(:func:`chunk_started`), how to find the running task (:func:`place`, or the slot),
and when the chunk ends (:func:`chunk_ended`: the rest of an unfinished line goes).

Caller side: :func:`receive`, on the supervisor thread, rebuilds a record with the
task's index and input summary (from the chunk the worker is running) and hands it to
the caller's handlers, or writes the text to the caller's current stream. A worker
starts with the caller's levels of the pool's start; :class:`LevelsWatch` reads them
again when a new map-like job starts (in the caller's thread), and if they changed, each worker
gets ``Levels(levels)`` before its next ``Run`` (:func:`set_levels` applies them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from ..forwarding import (
    STDERR,
    STDOUT,
    Forward,
    Levels,
    LineWriter,
    Place,
    RecordSender,
    handle_record,
    write_output,
)
from . import protocol as p


class _Worker:
    """This worker's forwarding, once installed."""

    def __init__(self) -> None:
        self.active = False
        self.seq = -1
        self.place = Place()
        self.locate: Callable[[], int] | None = None
        self.writers: list[LineWriter] = []

    def position(self) -> int:
        return self.locate() if self.locate is not None else self.place.now()


_worker = _Worker()


def install(sock: Any, forward: Forward | None) -> None:
    """Forward this worker's records and output on ``sock`` as ``forward`` says.

    Not forwarding output means the raw descriptors: a forked worker's copy of a stream
    the caller had put in place of ``sys.stdout`` would swallow what it printed.
    """
    if forward is None or not forward.output:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if forward is None or not forward.anything:
        return
    state = _worker
    state.active = True
    if forward.levels is not None:
        forward.levels.apply()

        def send_record(fields: dict[str, Any]) -> None:
            p.send_blocking(sock, p.Record(state.seq, state.position(), fields))

        logging.root.addHandler(RecordSender(send_record))
    if forward.output:
        for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr")):
            original = getattr(sys, name)
            if original is not None:
                try:
                    original.flush()
                except Exception:
                    pass

            def send_text(text: str, stream: int = stream) -> None:
                p.send_blocking(sock, p.Output(state.seq, stream, text))

            writer = LineWriter(send_text, original, f"<{name}>")
            state.writers.append(writer)
            setattr(sys, name, writer)


def set_levels(levels: Levels) -> None:
    """The caller's levels changed: set this worker's loggers to the new ones."""
    if _worker.active:
        levels.set_levels()


def chunk_started(seq: int, locate: Callable[[], int] | None = None) -> None:
    """Chunk ``seq`` starts; ``locate()``: the running position, if the loop keeps it."""
    state = _worker
    if state.active:
        state.seq = seq
        state.locate = locate
        state.place.reset()


def place() -> Place | None:
    """Where the run loop keeps the running task's position; None when nothing is
    forwarded (the fast path then pays nothing)."""
    return _worker.place if _worker.active else None


def chunk_ended() -> None:
    """The chunk's tasks are over: send the rest of any unfinished line."""
    state = _worker
    if state.active:
        for writer in state.writers:
            if writer.pending:
                writer.end_task()
        state.place.reset()
        state.locate = None


class LevelsWatch:
    """The caller's levels as the workers should have them, and which worker has which.

    Read again, in the caller's thread, when a map-like job starts (:meth:`note`; a
    job that names one call, ``submit`` / ``apply_async``, does not pay for it), and
    taken on the supervisor thread when that job's first chunk goes out.
    """

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self._version = 0
        self._newest_job = -1
        self._given: dict[int, int] = {}  # worker id -> the version it has

    def starting(self, wid: int) -> Forward:
        """What worker ``wid``, starting now, is given."""
        self._given[wid] = self._version
        return self.forward

    def note(self, job: Any) -> None:
        """The caller's thread: ``job`` (a stream) starts; keep the levels it starts with."""
        if self.forward.levels is not None:
            job.caller_levels = Levels.of_caller()

    def before_run(self, wid: int, job: Any) -> Levels | None:
        """The levels to send worker ``wid`` before a chunk of ``job``, if it lacks them."""
        levels = self.forward.levels
        if levels is None:
            return None
        if job.id > self._newest_job and job.caller_levels is not None:
            self._newest_job = job.id
            now = job.caller_levels
            if now != levels:
                self.forward = Forward(now, self.forward.output)
                self._version += 1
        if self._given.get(wid, self._version) == self._version:
            return None
        self._given[wid] = self._version
        return self.forward.levels


def _running_task(state: Any, wid: int, seq: int, pos: int) -> tuple[int | None, str | None]:
    """The index and input summary of task ``pos`` of chunk ``seq`` on worker ``wid``."""
    worker = state.workers.get(wid)
    if worker is None or not worker.queue or pos < 0:
        return None, None
    chunk = worker.queue[0]
    if chunk.seq != seq or pos >= chunk.count:
        return None, None
    shown = None
    if chunk.items is not None and pos < len(chunk.items):
        shown = chunk.job.describe_value(chunk.items[pos])
    return chunk.start + pos, shown


def receive(message: p.Record | p.Output, state: Any, wid: int) -> None:
    """A :class:`~.protocol.Record` or :class:`~.protocol.Output` from worker ``wid``
    (``state``: the PoolState)."""
    if isinstance(message, p.Record):
        handle_record(message.fields, *_running_task(state, wid, message.seq, message.position))
    else:
        write_output(message.stream, message.text)
