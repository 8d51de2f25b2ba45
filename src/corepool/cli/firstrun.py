"""A batch on a journal that holds no task yet: the workers read the lines.

Nothing can be skipped on a first run, so no line needs its key before it runs. The
reader then only numbers the non-blank lines and sends them raw; each worker decodes
its line, keys it, calls the function and writes the result as JSON
(:func:`~corepool.cli.jsonl.call_line`), and the runner's own process, which every
line and result passes through, does no per-line JSON work. What it still does per
task: number the content's occurrence as the result comes, record it for the journal,
write its row in input order.

Occurrences are numbered in the order results come, not in input order: two equal
lines are one task each, whichever finished first taking number 1. Equal inputs are
interchangeable, so a resumed run (which numbers them in input order, see
:class:`~corepool.cli.batch.Batch`) gives each of them one of the recorded results,
and runs only as many as are missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from .batch import AHEAD_LIMIT, Batch
from .jsonl import BadInput, canonical_digest, decode_value, error_row, ok_row, parse_line

__all__ = ["FirstRun"]


class FirstRun(Batch):
    """:class:`Batch` when the journal held no task at the start: tasks are raw lines.

    ``inflight`` maps a task's position (which is also its output index: every line
    is a task) to ``(raw, line)`` until its result comes.
    """

    def feed(self) -> Iterator[Any]:
        """Every non-blank line, raw, as it comes."""
        inflight = self.inflight
        position = 0
        for line, raw in enumerate(self.stream, start=1):
            if not raw.strip():
                continue  # blank lines are not tasks (see jsonl)
            if position - self.next_position >= AHEAD_LIMIT and not self._wait_room(
                    position):
                return  # the batch is over
            inflight[position] = (raw, line)
            position += 1
            yield raw
        self.read_all = True

    def take(self, returned: list[tuple[int, Any]]) -> None:
        """``(digest, payload, micros)`` of tasks, in whatever order they finished:
        numbered and recorded for the journal at once."""
        inflight, done, records = self.inflight, self.done, self.records
        counts, find, memory_keys = self.finder.counts, self.finder.find, self.finder.MEMORY_KEYS
        append = records.append
        now = time.time_ns() // 1_000_000
        chars = taken = 0
        others: list[tuple[int, Any, Any]] = []
        try:
            for position, (digest, payload, micros) in returned:
                if payload.__class__ is not str:
                    others.append((position, digest, payload))  # BadInput, NotJSON
                    continue
                line = inflight.pop(position)[1]
                if counts is None:
                    occurrence = find(digest)[0]
                else:  # as find would do it, without a call per task
                    occurrence = counts.get(digest, 0) + 1
                    counts[digest] = occurrence
                    if occurrence == 1 and len(counts) >= memory_keys:
                        self.finder.spill_counts()
                        counts = None
                append((digest, occurrence, payload, line, now, micros))
                done[position] = (True, payload, None)
                chars += len(payload)
                taken += 1
        finally:
            self._took(returned, taken, chars)
        unwritable: list[tuple[int, Any, BaseException | None]] = []
        for position, digest, payload in others:
            if payload.__class__ is BadInput:
                self._bad_line(position, payload)
            else:
                self._key(position, digest)
                unwritable.append((position, payload, None))
        self._record_failures(unwritable)

    def take_failed(self, failed: list[tuple[int, BaseException]]) -> None:
        """Tasks that failed: keyed here, from their line (the worker's key did not come
        back)."""
        tasks: list[tuple[int, Any, BaseException | None]] = []
        for position, error in failed:
            raw = self.inflight[position][0]
            try:
                digest = canonical_digest(decode_value(raw))
            except ValueError:  # the worker never said: say it here
                self._bad_line(position, None)
                continue
            self._key(position, digest)
            tasks.append((position, None, error))
        self._record_failures(tasks)

    def _key(self, position: int, digest: bytes) -> None:
        """Give the task at ``position`` its journal key, as :class:`Batch` keeps it."""
        line = self.inflight[position][1]
        self.inflight[position] = (digest, self.finder.find(digest)[0], line)

    def _bad_line(self, position: int, problem: BadInput | None) -> None:
        """The line at ``position`` is no task: an ``input`` row, and no record."""
        raw, line = self.inflight.pop(position)
        error = (parse_line(raw, line, self.mode).error if problem is None
                 else problem.error(line))
        payload = json.dumps(error)
        self.bad.append((line, payload))
        self.done[position] = (False, payload, "input")
        self.chars += len(payload)

    def drain(self) -> None:
        """Write the rows whose outcome is known, in order (every position is a row)."""
        done, rows, counts = self.done, self.rows, self.counts
        take_done, append = done.pop, rows.append
        first = position = self.next_position
        ok_rows = chars = 0
        try:
            while (outcome := take_done(position, None)) is not None:
                ok, payload, kind = outcome
                if ok:
                    ok_rows += 1
                    row = ok_row(position, payload)
                else:
                    counts.add_failure(kind or "exception")
                    row = error_row(position, payload)
                position += 1
                append(row)
                chars += len(row)
        finally:
            self.next_position = position
            counts.ok += ok_rows
            self.chars += chars
        self._room_made(position != first)

    def pending(self) -> int | None:
        """Tasks of the input not finished (None before the whole input was read)."""
        return len(self.inflight) if self.read_all else None
