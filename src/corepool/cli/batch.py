"""One ``corepool run`` batch: reads the input, records every finished task, writes rows.

Data flow::

    INPUT ─▶ feeder thread: parse, hash, look up the journal ─▶ only unfinished tasks ─▶ pool
               │ every line, in order, into ``backlog`` (or to disk, see below)          │
               ▼                                                                         ▼
    main thread: each result as it comes ─▶ ``records`` (for the journal) and ``done`` ◀─┘
               ─▶ the backlog's head, in order, into ``rows`` (for the output)
               ─▶ writer thread: journal (one transaction per batch) ─▶ commit ─▶ output

Results come from the pool in the order they finish, and each is recorded in the
journal at the next flush, whatever its position: a slow or hung task does not hold
back the tasks after it, so a kill loses only what was running. Output rows wait in
``done`` until every row before them is written (OUTPUT stays in input order); the
feeder stops reading AHEAD_LIMIT tasks past the oldest one still running, which bounds
that wait's memory.

Lines that need no run (finished before, not JSON) are held in the backlog up to
BACKLOG_LIMIT, and spilled to a temporary table on disk in blocks past it, so skipping
a long run of finished lines costs no memory. A row is written only after the
transaction holding its task is committed, so the output never shows what the journal
could lose.
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

from .. import errors
from . import tasklog
from .journal import KeyFinder, LoggedLines, OkRecord, RunProgress, TaskRecord
from .jsonl import canonical_digest, decode_value, error_row, ok_row, parse_line, scan_value
from .output import Committer
from .report import Counts, Progress
from .target import UsageError

__all__ = ["AHEAD_LIMIT", "BACKLOG_LIMIT", "Batch", "Spilled", "Stop", "error_object",
           "parse_max_failures"]

FLUSH_ROWS = 20_000  # rows (or records) held for one commit, at most
FLUSH_CHARS = 8 << 20  # characters of rows held for one commit, at most
FLUSH_SECONDS = 0.2  # how long a finished row may wait for its commit
BACKLOG_LIMIT = 20_000  # rows needing no run held in memory; more go to disk
SPILL_BLOCK = 2_000  # rows that need no run, spilled to disk together
AHEAD_LIMIT = 50_000  # tasks sent to the pool past the oldest one not finished
PERCENT_MIN_FINISHED = 10  # a P% limit is checked once this many tasks have finished

# A backlog entry: (index, known). ``known`` is None for a line that runs, else
# (ok, payload_json, kind, from_journal) of a row that needs no run.
_Known = tuple[bool, str, "str | None", bool]


class Spilled:
    """A backlog entry for a block of rows that need no run, kept on disk."""

    __slots__ = ("first", "last")

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last


_Entry = tuple[int, "_Known | None"] | Spilled


class Stop(Exception):
    """--max-failures was reached."""


# Errors as JSON -------------------------------------------------------------------------
def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_object(exc: BaseException) -> dict[str, Any]:
    """A task's failure as the output's ``error`` object (kind, type, message, ...)."""
    if isinstance(exc, errors.TaskTimeout):
        return {"kind": "timeout", "type": "TaskTimeout", "message": exc.message,
                "traceback": None, "timeout": exc.timeout}
    if isinstance(exc, errors.WorkerCrashed):
        code = exc.exitcode
        signame = None
        if code is not None and code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = f"signal {-code}"
        return {"kind": "crash", "type": "WorkerCrashed", "message": exc.message,
                "traceback": None, "exitcode": code, "signal": signame, "reason": exc.reason}
    cause = exc.__cause__
    if isinstance(cause, errors.RemoteTraceback):
        text = cause.traceback_text
    elif isinstance(exc, errors.TaskError) and exc.traceback_text:
        text = exc.traceback_text
    else:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    type_name = exc.type_name if type(exc) is errors.TaskError else _type_name(exc)
    message = exc.message if isinstance(exc, errors.TaskError) else str(exc)
    return {"kind": "exception", "type": type_name, "message": message, "traceback": text}


def parse_max_failures(text: str | None) -> tuple[int | None, float | None]:
    """``"N"`` -> (N, None); ``"P%"`` -> (None, P); None -> (None, None)."""
    if text is None:
        return None, None
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return None, share
        count = int(text)
        if count < 1:
            raise ValueError
        return count, None
    except ValueError:
        raise UsageError(
            f"--max-failures takes a count (>= 1) or a share such as 5%, got {text!r}"
        ) from None


class Batch:
    """One ``corepool run``: reads, runs, records and writes."""

    def __init__(self, args: argparse.Namespace, finder: KeyFinder, stream: IO[bytes],
                 committer: Committer, progress: Progress, run_id: int,
                 retried: Callable[[], int] | None = None) -> None:
        self.args, self.finder, self.stream = args, finder, stream
        self.retried = retried  # the pool's count of attempts run again, read at each flush
        self.committer, self.progress, self.run_id = committer, progress, run_id
        self.mode: str = args.mode
        self.backlog: deque[_Entry] = deque()
        self.counts = Counts()
        self.limit, self.share = parse_max_failures(args.max_failures)
        # A timed-out task's duration in the journal: its timeout (none for inf, 1e9+).
        limit = args.timeout
        self.timeout_micros = (int(limit * 1e6) if limit is not None and limit < 1e9
                               else None)
        self.read_all = False
        # Rows needing no run put in the backlog (by the reader) and taken out (by the
        # main thread): each counter has one writer, so no lock is needed.
        self.known_added = self.known_taken = 0
        # Tasks sent to the pool, by position: (digest, occurrence, line) until the
        # result comes (FirstRun: (raw, line) until then), then (ok, payload, kind) in
        # ``done`` until its row is written.
        self.inflight: dict[int, tuple[Any, ...]] = {}
        self.done: dict[int, tuple[bool, str, str | None]] = {}
        self.next_position = 0  # the position of the next task whose row is written
        self._room = threading.Condition()
        self._feeder_waits = False
        self.stopping = False
        self.records: list[OkRecord] = []  # tasks that succeeded, for the journal
        self.failures: list[TaskRecord] = []  # and those that failed
        self.logged: list[LoggedLines] = []  # lines of failed tasks, with their records
        self.logs = tasklog.current()  # the lines tasks log, kept for those that fail
        # Input lines found unusable (line, payload): added by the feeder, taken by flush.
        self.bad: deque[tuple[int, str]] = deque()
        self.rows: list[str] = []
        self.chars = 0
        self.since = time.monotonic()

    # Feeder thread --------------------------------------------------------------------
    def feed(self) -> Iterator[Any]:
        """The pool's input: the lines that need a run; every line goes to the backlog.

        Lines that need no run (finished before, or not JSON) are not limited by the
        pool's window, so while BACKLOG_LIMIT of them wait in memory, the next ones go
        to disk in blocks instead (see :class:`Spilled`): skipping a long run of
        finished lines costs no memory.
        """
        retry_failed, mode = self.args.retry_failed, self.mode
        backlog, find, digest_of = self.backlog, self.finder.find, canonical_digest
        inflight, decode, scan = self.inflight, decode_value, scan_value
        needs = {"star": list, "kwargs": dict}.get(mode)
        spill: list[tuple[bool, str | None, bool, str]] = []
        index = position = 0
        # The loop runs once per input line: it calls no function it can do without.
        for line, raw in enumerate(self.stream, start=1):
            stripped = raw.strip()
            if not stripped:
                continue  # blank lines are not tasks (see jsonl)
            try:
                if len(raw) - len(stripped) == 1:  # no space around the value
                    text = stripped.decode()
                    try:
                        value, end = scan(text, 0)
                    except StopIteration:  # not JSON: decode_value says why
                        end = -1
                    if end != len(text):
                        value = decode(raw)
                else:
                    value = decode(raw)
                bad = needs is not None and value.__class__ is not needs
            except ValueError:  # not UTF-8, not JSON
                bad = True
            if bad:
                error = parse_line(raw, line, mode).error
                known: _Known = (False, json.dumps(error), "input", False)
                self.bad.append((line, known[1]))
            else:
                digest = digest_of(value)
                occurrence, done = find(digest)
                if done is None or (retry_failed and not done[0]):
                    if spill:
                        self._spill(spill)
                    if position - self.next_position >= AHEAD_LIMIT and not self._wait_room(
                            position):
                        return  # the batch is over
                    inflight[position] = (digest, occurrence, line)
                    backlog.append((index, None))
                    index += 1
                    position += 1
                    yield value
                    continue
                ok, payload = done
                kind = None if ok else str(json.loads(payload).get("kind", "exception"))
                known = (ok, payload, kind, True)
            if spill or self.known_added - self.known_taken >= BACKLOG_LIMIT:
                ok, payload, kind, reused = known
                spill.append((ok, kind, reused,
                               ok_row(index, payload) if ok else error_row(index, payload)))
                if len(spill) >= SPILL_BLOCK:
                    self._spill(spill)
            else:
                backlog.append((index, known))
                self.known_added += 1
            index += 1
        if spill:
            self._spill(spill)
        self.read_all = True

    def _wait_room(self, position: int) -> bool:
        """Wait until the oldest unfinished task is less than AHEAD_LIMIT behind
        ``position``; False when the batch is stopping instead."""
        if threading.current_thread() is threading.main_thread():
            return True  # the serial backend reads in the consumer's thread: no one to wait for
        with self._room:
            self._feeder_waits = True
            while position - self.next_position >= AHEAD_LIMIT and not self.stopping:
                self._room.wait()
            self._feeder_waits = False
        return not self.stopping

    def stop_feeding(self) -> None:
        """Let a feeder waiting for room end (the batch is over)."""
        with self._room:
            self.stopping = True
            self._room.notify_all()

    def _spill(self, rows: list[tuple[bool, str | None, bool, str]]) -> None:
        first, last = self.finder.spill(rows)
        self.backlog.append(Spilled(first, last))
        rows.clear()

    # Main thread ----------------------------------------------------------------------
    def drain(self) -> None:
        """Write the rows at the head of the backlog whose outcome is known, in order.

        Once per result piece over every row: counts are kept in locals and stored
        back at the end (also when Ctrl-C interrupts), a function call per row costs.
        """
        backlog, rows, done, counts = self.backlog, self.rows, self.done, self.counts
        popleft, take_done, append = backlog.popleft, done.pop, rows.append
        first = position = self.next_position
        ok_rows = reused = known_taken = chars = 0
        try:
            while backlog:
                head = backlog[0]
                if head.__class__ is Spilled:
                    assert isinstance(head, Spilled)
                    popleft()
                    for ok, kind, was_reused, row in self.finder.unspill(head.first,
                                                                          head.last):
                        reused += was_reused
                        if ok:
                            ok_rows += 1
                        else:
                            counts.add_failure(kind or "exception")
                        append(row)
                        chars += len(row)
                    continue
                index, known = head  # type: ignore[misc]
                if known is None:
                    outcome = take_done(position, None)
                    if outcome is None:
                        break
                    position += 1
                    ok, payload, kind = outcome
                else:
                    known_taken += 1
                    ok, payload, kind, was_reused = known
                    reused += was_reused
                popleft()
                if ok:
                    ok_rows += 1
                    row = ok_row(index, payload)
                else:
                    counts.add_failure(kind or "exception")
                    row = error_row(index, payload)
                append(row)
                chars += len(row)
        finally:
            self.next_position = position
            self.known_taken += known_taken
            counts.ok += ok_rows
            counts.reused += reused
            self.chars += chars
        self._room_made(position != first)

    def _room_made(self, moved: bool) -> None:
        """Rows were written (``moved``): wake a reader waiting for the ahead limit."""
        if moved and self._feeder_waits:
            with self._room:
                self._room.notify_all()

    def take(self, returned: list[tuple[int, Any]]) -> None:
        """The tasks at these positions returned ``(payload, micros)`` (see
        ``call_to_json``), in whatever order they finished: recorded for the journal at
        once."""
        inflight, done, records = self.inflight, self.done, self.records
        append = records.append
        now = time.time_ns() // 1_000_000
        chars = taken = 0
        unwritable: list[tuple[int, Any]] = []
        try:
            for position, (payload, micros) in returned:
                if payload.__class__ is not str:
                    unwritable.append((position, payload))  # NotJSON: an error row
                    continue
                digest, occurrence, line = inflight.pop(position)
                append((digest, occurrence, payload, line, now, micros))
                done[position] = (True, payload, None)
                chars += len(payload)
                taken += 1
        finally:
            self._took(returned, taken, chars)
        self._record_failures([(position, value, None) for position, value in unwritable])

    def _took(self, returned: list[tuple[int, Any]], taken: int, chars: int) -> None:
        """What :meth:`take` recorded (``taken`` tasks, ``chars`` of payload), counted
        also when it was interrupted; the lines that tasks which returned logged are
        not kept."""
        self.counts.executed += taken
        self.chars += chars
        if self.logs is not None and self.logs.tails:
            for position, _ in returned:
                self.logs.pop(position)

    def take_failed(self, failed: list[tuple[int, BaseException]]) -> None:
        """The tasks at these positions failed (in whatever order they finished)."""
        self._record_failures([(position, None, error) for position, error in failed])

    def _record_failures(self, failed: list[tuple[int, Any, BaseException | None]]) -> None:
        now, timeout = time.time_ns() // 1_000_000, self.timeout_micros
        for position, value, failure in failed:
            digest, occurrence, line = self.inflight.pop(position)
            micros = timeout if isinstance(failure, errors.TaskTimeout) else None
            ok, payload, kind = self._outcome(value, failure)
            logged = None if self.logs is None else self.logs.pop(position)
            self.failures.append((digest, occurrence, ok, kind, payload, line, self.run_id,
                                 now, micros))
            if logged:
                self.logged.append((logged, digest, occurrence))
            self.done[position] = (ok, payload, kind)
            self.chars += len(payload)
            self.counts.executed += 1
            self.counts.executed_failed += 1
        self.drain()
        if failed:
            self._check_limit()  # after the whole batch is recorded
        if len(self.rows) >= FLUSH_ROWS or len(self.records) >= FLUSH_ROWS \
                or self.chars >= FLUSH_CHARS:
            self.flush()

    @staticmethod
    def _outcome(value: Any, failure: BaseException | None) -> tuple[bool, str, str | None]:
        if failure is None:  # a result JSON cannot hold (NotJSON): no traceback to show
            error: dict[str, Any] = {"kind": "exception", "type": "TypeError",
                                     "message": value.message, "traceback": None}
        else:
            error = error_object(failure)
        return False, json.dumps(error, ensure_ascii=False), error["kind"]

    def _check_limit(self) -> None:
        failed, done = self.counts.executed_failed, self.counts.executed
        if self.limit is not None and failed >= self.limit:
            raise Stop(f"{failed} tasks failed (--max-failures {self.args.max_failures})")
        if (self.share is not None and done >= PERCENT_MIN_FINISHED
                and failed * 100 >= self.share * done):
            raise Stop(f"{failed} of {done} tasks failed (--max-failures "
                       f"{self.args.max_failures})")

    def tick(self) -> None:
        """Write what is known; flush rows and records that have waited long enough."""
        self.drain()
        if len(self.rows) >= FLUSH_ROWS or len(self.records) >= FLUSH_ROWS \
                or self.chars >= FLUSH_CHARS or time.monotonic() - self.since >= FLUSH_SECONDS:
            self.flush()

    def pending(self) -> int | None:
        """Tasks of the input not finished (None before the whole input was read)."""
        if not self.read_all:
            return None
        waiting = sum(1 for e in self.backlog if not isinstance(e, Spilled) and e[1] is None)
        return waiting - len(self.done)

    def flush(self) -> None:
        """Hand the records and rows so far to the committer (journal, then output)."""
        self.since = time.monotonic()
        if not self.rows and not self.records and not self.failures and not self.bad:
            return
        rate = self.progress.update(self.counts.rows, self.counts.failures)
        records, self.records = self.records, []
        failures, self.failures = self.failures, []
        logged, self.logged = self.logged, []
        bad = [self.bad.popleft() for _ in range(len(self.bad))]
        text = "\n".join(self.rows) + "\n" if self.rows else ""  # records alone: no row
        self.rows, self.chars = [], 0
        c = self.counts
        if self.retried is not None:
            c.retried = self.retried()
        progress = RunProgress(c.rows, c.executed, c.executed_failed, rate, c.retried)
        self.committer.put(records, failures, text, progress, copy.deepcopy(c), bad, logged)
