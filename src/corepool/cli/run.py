"""``corepool run MODULE:FUNC INPUT.jsonl``: a resumable batch over JSON Lines.

Data flow::

    INPUT ─▶ feeder thread: parse, hash, look up the journal ─▶ only unfinished tasks ─▶ pool
               │ every line, in order, into ``backlog`` (or to disk, see below)          │
               ▼                                                                         ▼
    main thread: takes the backlog in order; a task that ran takes the next result ◀── results
               ─▶ writer thread: journal (one transaction per batch) ─▶ commit ─▶ output

Only lines that need a run go to the pool, whose window bounds how many are in
flight. Lines that need none (finished before, not JSON) are held in the backlog up to
a limit, and spilled to a temporary table on disk in blocks past it, so
skipping a long run of finished lines costs no memory. A row is written only after
the transaction holding its task is committed, so the output never shows what the
journal could lose. Re-running the same command reads the journal and runs only what
is missing; the output is rewritten whole each time (see :mod:`~corepool.cli.output`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import signal
import sqlite3
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

from .. import errors
from .._engine import protocol
from ..options import check_timeout
from .journal import Journal, JournalError, KeyFinder, RunProgress, TaskRecord
from .jsonl import (
    call_kwargs,
    call_star,
    canonical_digest,
    count_lines,
    decode_value,
    error_row,
    ok_row,
    parse_line,
    result_json,
)
from .output import Committer, Output
from .report import Counts, Progress, summary
from .target import UsageError, load_function

__all__ = ["UsageError", "error_object", "load_function", "parse_max_failures", "run"]

DEFAULT_STDOUT_JOURNAL = "corepool-run.journal.db"
FLUSH_ROWS = 20_000  # rows held for one commit, at most
FLUSH_CHARS = 8 << 20  # characters of rows held for one commit, at most
FLUSH_SECONDS = 0.2  # how long a finished row may wait for its commit
BACKLOG_LIMIT = 20_000  # rows needing no run held in memory; more go to disk
SPILL_BLOCK = 2_000  # rows that need no run, spilled to disk together
PERCENT_MIN_FINISHED = 10  # a P% limit is checked once this many tasks have finished
CLUSTER_BACKENDS = ("dask", "ray")
_CALLERS: dict[str, Callable[..., Any]] = {"star": call_star, "kwargs": call_kwargs}

# A backlog entry: (index, line, digest, occurrence, known). ``known`` is None for a
# line that runs, else (ok, payload_json, kind, from_journal) of a row that needs no run.
_Known = tuple[bool, str, "str | None", bool]


class _Spilled:
    """A backlog entry for a block of rows that need no run, kept on disk."""

    __slots__ = ("first", "last")

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last


_Entry = tuple[int, int, bytes, int, "_Known | None"] | _Spilled


class _Stop(Exception):
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


# Options --------------------------------------------------------------------------------
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


class _Batch:
    """One ``corepool run``: reads, runs, records and writes."""

    def __init__(self, args: argparse.Namespace, finder: KeyFinder, stream: IO[bytes],
                 committer: Committer, progress: Progress, run_id: int) -> None:
        self.args, self.finder, self.stream = args, finder, stream
        self.committer, self.progress, self.run_id = committer, progress, run_id
        self.mode: str = args.mode
        self.backlog: deque[_Entry] = deque()
        self.counts = Counts()
        self.limit, self.share = parse_max_failures(args.max_failures)
        self.read_all = False
        # Rows needing no run put in the backlog (by the reader) and taken out (by the
        # main thread): each counter has one writer, so no lock is needed.
        self.known_added = self.known_taken = 0
        self.records: list[TaskRecord] = []
        self.rows: list[str] = []
        self.chars = 0
        self.since = time.monotonic()

    # Feeder thread --------------------------------------------------------------------
    def feed(self) -> Iterator[Any]:
        """The pool's input: the lines that need a run; every line goes to the backlog.

        Lines that need no run (finished before, or not JSON) are not limited by the
        pool's window, so while BACKLOG_LIMIT of them wait in memory, the next ones go
        to disk in blocks instead (see :class:`_Spilled`): skipping a long run of
        finished lines costs no memory.
        """
        retry_failed, mode = self.args.retry_failed, self.mode
        backlog, find, digest_of = self.backlog, self.finder.find, canonical_digest
        needs = {"star": list, "kwargs": dict}.get(mode)
        spill: list[tuple[bool, str | None, bool, str]] = []
        index = 0
        for line, raw in enumerate(self.stream, start=1):
            if not raw.strip():
                continue  # blank lines are not tasks (see jsonl)
            try:
                value = decode_value(raw)
                bad = needs is not None and value.__class__ is not needs
            except ValueError:  # not UTF-8, not JSON
                bad = True
            digest, occurrence = b"", 0
            if bad:
                error = parse_line(raw, line, mode).error
                known: _Known = (False, json.dumps(error), "input", False)
            else:
                digest = digest_of(value)
                occurrence, done = find(digest)
                if done is None or (retry_failed and not done[0]):
                    if spill:
                        self._spill(spill)
                    backlog.append((index, line, digest, occurrence, None))
                    index += 1
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
                backlog.append((index, line, digest, occurrence, known))
                self.known_added += 1
            index += 1
        if spill:
            self._spill(spill)
        self.read_all = True

    def _spill(self, rows: list[tuple[bool, str | None, bool, str]]) -> None:
        first, last = self.finder.spill(rows)
        self.backlog.append(_Spilled(first, last))
        rows.clear()

    # Main thread ----------------------------------------------------------------------
    def drain_known(self) -> None:
        """Emit the rows at the head of the backlog that need no result."""
        backlog, rows = self.backlog, self.rows
        while backlog:
            head = backlog[0]
            if isinstance(head, _Spilled):
                backlog.popleft()
                for ok, kind, reused, row in self.finder.unspill(head.first, head.last):
                    self._count_known(ok, kind, reused)
                    rows.append(row)
                    self.chars += len(row)
                continue
            known = head[4]
            if known is None:
                return
            backlog.popleft()
            self.known_taken += 1
            ok, payload, kind, reused = known
            self._count_known(ok, kind, reused)
            row = ok_row(head[0], payload) if ok else error_row(head[0], payload)
            rows.append(row)
            self.chars += len(row)

    def _count_known(self, ok: bool, kind: str | None, reused: bool) -> None:
        self.counts.reused += reused
        if ok:
            self.counts.ok += 1
        else:
            self.counts.add_failure(kind or "exception")

    def take(self, values: list[Any], failures: dict[int, BaseException]) -> None:
        """The next ``values`` of tasks that ran, in input order (with their failures)."""
        backlog, records, rows, counts = self.backlog, self.records, self.rows, self.counts
        run_id, result, chars = self.run_id, result_json, 0
        for position, value in enumerate(values):
            head = backlog[0]
            if isinstance(head, _Spilled) or head[4] is not None:
                self.drain_known()
            entry = backlog.popleft()
            assert not isinstance(entry, _Spilled)
            index, line, digest, occurrence, _ = entry
            counts.executed += 1
            failure = failures.get(position) if failures else None
            if failure is None:  # the common case: it ran and returned
                try:
                    payload = result(value)
                except TypeError:
                    pass
                else:
                    counts.ok += 1
                    records.append((digest, occurrence, True, None, payload, line, run_id))
                    row = ok_row(index, payload)
                    chars += len(row)
                    rows.append(row)
                    continue
            ok, payload, kind = self._outcome(value, failure)
            records.append((digest, occurrence, ok, kind, payload, line, run_id))
            assert kind is not None
            counts.add_failure(kind)
            row = error_row(index, payload)
            chars += len(row)
            rows.append(row)
            counts.executed_failed += 1
            self._check_limit()
        self.chars += chars
        if len(rows) >= FLUSH_ROWS or self.chars >= FLUSH_CHARS:
            self.flush()

    @staticmethod
    def _outcome(value: Any, failure: BaseException | None) -> tuple[bool, str, str | None]:
        if failure is None:
            try:
                return True, result_json(value), None
            except TypeError as exc:  # not the task's fault: no worker traceback to show
                error: dict[str, Any] = {"kind": "exception", "type": "TypeError",
                                         "message": str(exc), "traceback": None}
        else:
            error = error_object(failure)
        return False, json.dumps(error, ensure_ascii=False), error["kind"]

    def _check_limit(self) -> None:
        failed, done = self.counts.executed_failed, self.counts.executed
        if self.limit is not None and failed >= self.limit:
            raise _Stop(f"{failed} tasks failed (--max-failures {self.args.max_failures})")
        if (self.share is not None and done >= PERCENT_MIN_FINISHED
                and failed * 100 >= self.share * done):
            raise _Stop(f"{failed} of {done} tasks failed (--max-failures "
                        f"{self.args.max_failures})")

    def tick(self) -> None:
        """Emit what needs no result; flush rows that have waited long enough."""
        self.drain_known()
        if len(self.rows) >= FLUSH_ROWS or self.chars >= FLUSH_CHARS \
                or time.monotonic() - self.since >= FLUSH_SECONDS:
            self.flush()

    def run_progress(self, rate: float | None = None) -> RunProgress:
        """This run's counts so far, for the journal."""
        c = self.counts
        return RunProgress(c.rows, c.executed, c.executed_failed, rate)

    def flush(self) -> None:
        """Hand the rows so far to the committer (journal first, then the output)."""
        self.since = time.monotonic()
        if not self.rows:
            return
        rate = self.progress.update(self.counts.rows, self.counts.failures)
        records, self.records = self.records, []
        text = "\n".join(self.rows) + "\n"
        self.rows, self.chars = [], 0
        self.committer.put(records, text, self.run_progress(rate))


# The command ----------------------------------------------------------------------------
def _open_input(path: str | None) -> tuple[IO[bytes], int | None]:
    """The input stream and its row count (known for a file, not for stdin)."""
    if path is None or path == "-":
        return sys.stdin.buffer, None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by _run
        total = count_lines(path) if os.path.isfile(path) else None
    except OSError as exc:
        raise UsageError(f"cannot read the input file {path}: {exc.strerror}") from None
    return stream, total


def _journal_path(args: argparse.Namespace) -> str:
    if args.journal:
        return str(args.journal)
    if args.output and args.output != "-":
        return f"{args.output}.journal.db"
    return DEFAULT_STDOUT_JOURNAL


def resume_command(args: argparse.Namespace, journal: str) -> str:
    """The command that continues this batch (the journal made explicit)."""
    parts = ["corepool", "run", args.target]
    if args.input is not None:
        parts.append(args.input)
    if args.output:
        parts += ["-o", args.output]
    parts += ["--journal", journal]
    for flag, value in (("--workers", args.workers), ("--timeout", args.timeout),
                        ("--retries", args.retries or None), ("--backend", args.backend),
                        ("--address", args.address), ("--max-failures", args.max_failures)):
        if value is not None:
            parts += [flag, str(value)]
    if args.mode != "single":
        parts.append(f"--{args.mode}")
    if args.retry_failed:
        parts.append("--retry-failed")
    if args.no_progress:
        parts.append("--no-progress")
    command = shlex.join(parts)
    if args.input in (None, "-"):
        command += "   (with the same input on stdin)"
    return command


def run(args: argparse.Namespace) -> int:
    """``corepool run``: returns the exit status (0, 1, 2 or 130)."""
    try:
        return _run(args)
    except UsageError as exc:
        print(f"corepool run: {exc}", file=sys.stderr)
        return 2


def _backend(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The backend name and its options; ``--address`` only with a cluster backend."""
    from ..backends import resolve_backend_name

    try:
        name = resolve_backend_name(args.backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.address is None:
        return name, {}
    if name not in CLUSTER_BACKENDS:
        raise UsageError(
            f"--address {args.address} is where a cluster's scheduler listens: it needs "
            f"--backend dask or ray (the {name} backend runs on this machine)"
        )
    return name, {"address": args.address}


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    parse_max_failures(args.max_failures)
    try:
        check_timeout(args.timeout, "--timeout")  # the library's rule: inf is no limit
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {args.workers}")
    backend, options = _backend(args)
    fn, identity = load_function(args.target)
    stream, total = _open_input(args.input)
    path = _journal_path(args)
    try:
        journal = Journal(path)
        journal.claim(identity, args.mode, force=args.force)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    from ..core import PoolCore
    from ..cpus import cpu_count

    out: Output | None = None
    try:
        try:
            core = PoolCore(args.workers or cpu_count(), backend, **options)
        except (ValueError, TypeError, ImportError, errors.CorepoolError) as exc:
            raise UsageError(f"cannot start the workers: {exc}") from None
        try:
            out = Output(args.output)
            return _execute(args, fn, core, journal, stream, out, path, total, started)
        finally:
            core.terminate()
    finally:
        journal.close()
        if out is not None:
            out.close()
        if stream is not sys.stdin.buffer:
            stream.close()


def _execute(args: argparse.Namespace, fn: Callable[..., Any], core: Any, journal: Journal,
             stream: IO[bytes], out: Output, path: str, total: int | None,
             started: float) -> int:
    progress = Progress(total, enabled=not args.no_progress)
    finder = KeyFinder(path, lookups=not journal.is_empty())
    run_id = journal.start_run(resume_command(args, path), total)
    committer = Committer(journal, run_id, out)
    batch = _Batch(args, finder, stream, committer, progress, run_id)
    caller = _CALLERS.get(args.mode)
    task = fn if caller is None else functools.partial(caller, fn)
    state, stopped, status = "finished", None, 0
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        try:
            try:
                job = core.stream_job(task, batch.feed(), protocol.SINGLE, chunksize=None,
                                      timeout=args.timeout, retries=args.retries)
            except errors.SerializationError as exc:
                raise UsageError(str(exc)) from None
            job.wait = FLUSH_SECONDS  # wake up to flush rows while slow tasks run
            pieces = core.pieces(job, ordered=True)
            try:
                for piece in pieces:
                    if piece.values:
                        batch.take(piece.values, piece.failures)
                    batch.tick()
            finally:
                pieces.close()
            batch.drain_known()
        except KeyboardInterrupt:
            # A second Ctrl-C must not break the cleanup below.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            state, status = "interrupted", 130
        finally:
            core.terminate()
            finder.close()
            try:
                batch.flush()
            finally:
                progress.close()
                committer.close()  # every batch handed over is committed and written
    except _Stop as exc:
        state, stopped, status = "stopped", str(exc), 1
    except UsageError:
        state = "failed"
        raise
    except (errors.CorepoolError, OSError, sqlite3.Error) as exc:  # pool, input or disk
        state, stopped, status = "failed", f"{type(exc).__name__}: {exc}", 2
    finally:
        pending = None
        if batch.read_all:
            pending = sum(1 for e in batch.backlog if not isinstance(e, _Spilled) and e[4] is None)
        try:
            journal.end_run(run_id, state, batch.run_progress(), pending)
            if state == "finished":
                out.complete()
        except (OSError, sqlite3.Error) as exc:  # the disk broke down: say so
            state, stopped = "failed", f"{type(exc).__name__}: {exc}"
            status = status if status == 130 else 2
        finally:
            if status == 130:
                signal.signal(signal.SIGINT, previous_sigint)
    print(summary(batch.counts, time.monotonic() - started, path, stopped), file=sys.stderr)
    if state != "finished":
        kept = f" The rows so far are in {out.partial}." if out.partial else ""
        print(f"corepool run: {state}; the journal is consistent.{kept} To resume:\n  "
              f"{resume_command(args, path)}", file=sys.stderr)
        return status
    return 1 if batch.counts.failures else 0
