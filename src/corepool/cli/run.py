"""``corepool run MODULE:FUNC INPUT.jsonl``: a resumable batch over JSON Lines.

Data flow::

    INPUT ─▶ feeder thread: parse, hash, look up the journal ─▶ only unfinished tasks ─▶ pool
               │ every line, in order, into ``backlog``                                  │
               ▼                                                                         ▼
    main thread: takes the backlog in order; a task that ran takes the next result ◀── results
               ─▶ journal (batched transaction) ─▶ commit ─▶ output rows, in input order

A row is written only after the transaction holding its task is committed, so the
output never shows what the journal could lose. Re-running the same command reads the
journal and runs only what is missing; the output is rewritten whole each time.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import shlex
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .. import errors
from .._engine import protocol
from .journal import Journal, JournalError, KeyFinder
from .jsonl import (
    call_with_kwargs,
    canonical_digest,
    count_lines,
    error_row,
    ok_row,
    parse_line,
    read_lines,
    result_json,
)

__all__ = ["UsageError", "error_object", "load_function", "parse_max_failures", "run"]

DEFAULT_STDOUT_JOURNAL = "corepool-run.journal.db"
FLUSH_ROWS = 200
FLUSH_SECONDS = 0.2
PERCENT_MIN_FINISHED = 10  # a P% limit is checked once this many tasks have finished

RUN, CACHED, INPUT = 0, 1, 2


class UsageError(Exception):
    """Nothing can run: the message says what to fix (exit status 2)."""


class _Stop(Exception):
    """--max-failures was reached."""


# Loading MODULE:FUNC --------------------------------------------------------------------
def load_function(spec: str) -> tuple[Callable[..., Any], str]:
    """Import ``MODULE:FUNC`` (MODULE a dotted name or a ``.py`` path); returns the
    function and the target's identity for the journal (paths made absolute).

    A file is imported under its own stem with its directory put first on
    ``sys.path``, so worker processes can import it too and its functions pickle by
    reference, as those of any module do.
    """
    module_part, colon, func_part = spec.rpartition(":")
    if not colon or not module_part or not func_part:
        raise UsageError(
            f"expected MODULE:FUNC, e.g. mypackage.tasks:process or ./tasks.py:process; "
            f"got {spec!r}"
        )
    if module_part.endswith(".py") or os.sep in module_part:
        module, identity = _import_path(module_part), os.path.abspath(module_part)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as ``python -m`` does
        module, identity = _import_name(module_part), module_part
    fn: Any = module
    for attribute in func_part.split("."):
        try:
            fn = getattr(fn, attribute)
        except AttributeError:
            names = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_"))
            raise UsageError(
                f"{module_part} has no function {func_part!r}"
                + (f"; it has: {', '.join(names[:20])}" if names else "")
            ) from None
    if not callable(fn):
        raise UsageError(f"{spec} is a {type(fn).__name__}, not a function")
    return fn, f"{identity}:{func_part}"


def _import_name(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise UsageError(
                f"cannot import module {name!r} ({exc}): run from the directory that holds "
                "it, add that directory to PYTHONPATH, or give the path to its .py file"
            ) from None
        raise UsageError(_import_failed(name)) from None
    except Exception:
        raise UsageError(_import_failed(name)) from None


def _import_failed(name: str) -> str:
    return f"importing {name} failed:\n{traceback.format_exc().rstrip()}"


def _import_path(path: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(f"no such Python file: {path}")
    directory, filename = os.path.split(full)
    name = filename[:-3] if filename.endswith(".py") else filename
    if not name.isidentifier():
        raise UsageError(
            f"{path}: {name!r} is not a valid module name; rename the file "
            "(letters, digits and underscores) so worker processes can import it"
        )
    existing = sys.modules.get(name)
    if existing is not None and _same_file(getattr(existing, "__file__", None), full):
        return existing
    if existing is not None:
        raise UsageError(
            f"{path}: a module named {name!r} is already loaded from "
            f"{getattr(existing, '__file__', 'built-in')}; rename your file"
        )
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = _import_name(name)
    if not _same_file(getattr(module, "__file__", None), full):
        raise UsageError(
            f"{path}: importing {name!r} finds {getattr(module, '__file__', 'a built-in')} "
            "instead (the name is taken); rename your file"
        )
    return module


def _same_file(a: str | None, b: str) -> bool:
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False


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


@dataclass(slots=True)
class _Slot:
    """One input line on its way to the output."""

    index: int
    line: int
    action: int
    digest: bytes
    occurrence: int
    value: Any
    error: str | None


@dataclass
class _Counts:
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    executed: int = 0
    executed_failed: int = 0
    reused: int = 0

    def add(self, kind: str | None) -> None:
        if kind is None:
            self.ok += 1
        else:
            self.failed[kind] = self.failed.get(kind, 0) + 1

    @property
    def rows(self) -> int:
        return self.ok + sum(self.failed.values())


class _Sink:
    """Output rows in order; rows of fresh tasks wait for the journal commit."""

    def __init__(self, journal: Journal, out: IO[str], bar: Any) -> None:
        self.journal, self.out, self.bar = journal, out, bar
        self.rows: deque[str] = deque()
        self.since = 0.0

    def add(self, row: str) -> None:
        if not self.rows:
            self.since = time.monotonic()
        self.rows.append(row)
        if self.bar is not None:
            self.bar.update(1)
        if len(self.rows) >= FLUSH_ROWS:
            self.flush()

    def tick(self) -> None:
        if self.rows and time.monotonic() - self.since >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.journal.commit()  # first durable, then reported
        while self.rows:
            self.out.write(self.rows.popleft() + "\n")
        self.out.flush()


class _Batch:
    """One ``corepool run``: reads, runs, records and writes."""

    def __init__(self, args: argparse.Namespace, fn: Callable[..., Any], journal: Journal,
                 finder: KeyFinder, stream: IO[bytes], sink: _Sink, run_id: int) -> None:
        self.args, self.fn, self.journal, self.finder = args, fn, journal, finder
        self.stream, self.sink, self.run_id = stream, sink, run_id
        self.mode: str = args.mode
        self.backlog: deque[_Slot] = deque()
        self.counts = _Counts()
        self.limit, self.share = parse_max_failures(args.max_failures)
        self.read_all = False

    # Feeder thread --------------------------------------------------------------------
    def _slots(self) -> Iterator[_Slot]:
        for index, (line, raw) in enumerate(read_lines(self.stream)):
            parsed = parse_line(raw, line, self.mode)
            if parsed.error is not None:
                yield _Slot(index, line, INPUT, b"", 0, None, json.dumps(parsed.error))
                continue
            digest = canonical_digest(parsed.value)
            occurrence = self.finder.occurrence(digest)
            state = self.finder.done(digest, occurrence)
            fresh = state is None or (state is False and self.args.retry_failed)
            yield _Slot(index, line, RUN if fresh else CACHED, digest, occurrence,
                        parsed.value if fresh else None, None)

    def feed(self) -> Iterator[Any]:
        """The pool's input: every slot goes to the backlog, fresh tasks to the pool."""
        for slot in self._slots():
            value, slot.value = slot.value, None
            self.backlog.append(slot)
            if slot.action == RUN:
                yield tuple(value) if self.mode == "star" else value
        self.read_all = True

    # Main thread ----------------------------------------------------------------------
    def _emit_known(self, slot: _Slot) -> None:
        if slot.action == INPUT:
            assert slot.error is not None
            self.counts.add("input")
            self.sink.add(error_row(slot.index, slot.error))
            return
        found = self.journal.get(slot.digest, slot.occurrence)
        if found is None:  # cannot happen: journal rows are never deleted
            raise RuntimeError(f"journal lost the task of line {slot.line}")
        ok, payload = found
        self.counts.add(None if ok else json.loads(payload)["kind"])
        self.counts.reused += 1
        self.sink.add(ok_row(slot.index, payload) if ok else error_row(slot.index, payload))

    def drain_known(self) -> None:
        """Emit the rows at the head of the backlog that need no result."""
        while self.backlog and self.backlog[0].action != RUN:
            self._emit_known(self.backlog.popleft())

    def finish(self, value: Any, failure: BaseException | None) -> None:
        """The next fresh task in input order ended with ``value`` or ``failure``."""
        self.drain_known()
        slot = self.backlog.popleft()
        error: dict[str, Any] | None = None
        if failure is not None:
            error = error_object(failure)
        else:
            try:
                text = result_json(value)
            except TypeError as exc:  # not the task's fault: no worker traceback to show
                error = {"kind": "exception", "type": "TypeError", "message": str(exc),
                         "traceback": None}
        if error is None:
            kind = None
            self.journal.record(slot.digest, slot.occurrence, ok=True, kind=None, payload=text,
                                line=slot.line, run=self.run_id)
            self.sink.add(ok_row(slot.index, text))
        else:
            kind = error["kind"]
            payload = json.dumps(error, ensure_ascii=False)
            self.journal.record(slot.digest, slot.occurrence, ok=False, kind=kind,
                                payload=payload, line=slot.line, run=self.run_id)
            self.sink.add(error_row(slot.index, payload))
            self.counts.executed_failed += 1
        self.counts.add(kind)
        self.counts.executed += 1
        if kind is not None:
            self._check_limit()

    def _check_limit(self) -> None:
        failed, done = self.counts.executed_failed, self.counts.executed
        if self.limit is not None and failed >= self.limit:
            raise _Stop(f"{failed} tasks failed (--max-failures {self.args.max_failures})")
        if (self.share is not None and done >= PERCENT_MIN_FINISHED
                and failed * 100 >= self.share * done):
            raise _Stop(f"{failed} of {done} tasks failed (--max-failures "
                        f"{self.args.max_failures})")


# The command ----------------------------------------------------------------------------
def _open_input(path: str | None) -> IO[bytes]:
    if path is None or path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read the input file {path}: {exc.strerror}") from None


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
                        ("--max-failures", args.max_failures)):
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


def _progress_bar(args: argparse.Namespace) -> Any:
    if args.no_progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = None
    if args.input not in (None, "-") and os.path.isfile(args.input):
        total = count_lines(args.input)
    return tqdm(total=total, file=sys.stderr, unit="task", dynamic_ncols=True)


def _summary(counts: _Counts, elapsed: float, journal: str, stopped: str | None) -> str:
    failed = sum(counts.failed.values())
    parts = [f"{counts.rows} rows: {counts.ok} ok, {failed} failed"]
    if failed:
        parts[0] += " (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.failed.items())) + ")"
    rate = counts.executed / elapsed if elapsed > 0 else 0.0
    parts.append(f"ran {counts.executed} in {elapsed:.2f} s ({rate:.1f} tasks/s), "
                 f"{counts.reused} from the journal {journal}")
    text = "corepool run: " + "; ".join(parts)
    return f"{text}\ncorepool run: stopped early: {stopped}" if stopped else text


def run(args: argparse.Namespace) -> int:
    """``corepool run``: returns the exit status (0, 1, 2 or 130)."""
    try:
        return _run(args)
    except UsageError as exc:
        print(f"corepool run: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    parse_max_failures(args.max_failures)
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    fn, identity = load_function(args.target)
    stream = _open_input(args.input)
    path = _journal_path(args)
    try:
        journal = Journal(path)
        journal.claim(identity, args.mode, force=args.force)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    from ..backends import resolve_backend_name
    from ..pool import Pool

    try:
        pool = Pool(args.workers, backend=resolve_backend_name(args.backend))
    except (ValueError, ImportError, errors.CorepoolError) as exc:
        journal.close()
        raise UsageError(f"cannot start the workers: {exc}") from None
    out: IO[str] | None = None
    try:
        out = _open_output(args.output)
        return _execute(args, fn, pool, journal, stream, out, path, started)
    finally:
        pool.terminate()
        journal.close()
        for stream_used in (out, stream):
            if stream_used is not None and stream_used not in (sys.stdout, sys.stdin.buffer):
                stream_used.close()


def _open_output(path: str | None) -> IO[str]:
    if not path or path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def _execute(args: argparse.Namespace, fn: Callable[..., Any], pool: Any, journal: Journal,
             stream: IO[bytes], out: IO[str], path: str, started: float) -> int:
    bar = _progress_bar(args)
    finder = KeyFinder(path)
    run_id = journal.start_run(resume_command(args, path))
    batch = _Batch(args, fn, journal, finder, stream, _Sink(journal, out, bar), run_id)
    task: Callable[..., Any] = fn
    style = protocol.STAR if args.mode == "star" else protocol.SINGLE
    if args.mode == "kwargs":
        task = functools.partial(call_with_kwargs, fn)
    state, stopped, status = "finished", None, 0
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        core = pool._core
        try:
            job = core.stream_job(task, batch.feed(), style, chunksize=None,
                                  timeout=args.timeout, retries=args.retries)
        except errors.SerializationError as exc:
            raise UsageError(str(exc)) from None
        job.wait = FLUSH_SECONDS  # wake up to flush rows while slow tasks run
        pieces = core.pieces(job, ordered=True)
        try:
            for piece in pieces:
                for position, value in enumerate(piece.values):
                    batch.finish(value, piece.failures.get(position))
                batch.drain_known()
                batch.sink.tick()
        finally:
            pieces.close()
        batch.drain_known()
    except _Stop as exc:
        state, stopped, status = "stopped", str(exc), 1
    except UsageError:
        state = "failed"
        raise
    except (errors.CorepoolError, OSError) as exc:  # the pool or the input broke down
        state, stopped, status = "failed", f"{type(exc).__name__}: {exc}", 2
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break cleanup
        state, status = "interrupted", 130
    finally:
        pool.terminate()
        batch.sink.flush()
        if bar is not None:
            bar.close()
        pending = None if not batch.read_all else len(
            [s for s in batch.backlog if s.action == RUN])
        journal.end_run(run_id, state, executed=batch.counts.executed,
                        failed=batch.counts.executed_failed, pending=pending)
        finder.close()
        if state == "interrupted":
            signal.signal(signal.SIGINT, previous_sigint)
    elapsed = time.monotonic() - started
    print(_summary(batch.counts, elapsed, path, stopped), file=sys.stderr)
    if state != "finished":
        print(f"corepool run: {state}; the journal is consistent. To resume:\n  "
              f"{resume_command(args, path)}", file=sys.stderr)
        return status
    return 1 if batch.counts.failed else 0
